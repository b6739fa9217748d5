"""The driver framework: what a driver family declares and what a driver yields.

A family is one sub-package of ``drivers`` (or an entry point in the group
``kotahub.drivers``) that exposes a module-level ``FAMILY: DriverFamily``. The agent finds
families by walking the package, so adding a family touches no central list.

Drivers know nothing of MQTT, InfluxDB or the registry: they get a ``DeviceSpec`` (plain
data), validate its config with pydantic at start-up without touching the network, and
turn the device into ``Reading``s.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import pkgutil
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers.contract import (
    INT_MAX,
    INT_MIN,
    METRIC_NAME,
    MetricKind,
    MetricType,
    MetricValue,
    epoch_ms,
    is_metric_name,
    kind_of_type,
    readings_payload,
)

__all__ = ["METRIC_NAME", "MetricType", "MetricValue"]  # re-exported for the families
ENTRY_POINT_GROUP = "kotahub.drivers"


class DriverError(Exception):
    """A device could not be read; carries the device and the cause."""

    def __init__(self, device_id: str, cause: str | BaseException) -> None:
        self.device_id = device_id
        self.cause = cause
        super().__init__(f"{device_id}: {cause}")


class DriverConfigError(DriverError):
    """A device's driver config is invalid; the message names the field and the reason."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """One metric a family can report: a row of the family's metric table."""

    key: str
    unit: str
    type: MetricType
    description: str

    def __post_init__(self) -> None:
        if not is_metric_name(self.key):
            raise ValueError(f"metric key {self.key!r} breaks the contract's naming rule")

    @property
    def kind(self) -> MetricKind:
        """The schema kind (``number``, ``integer``, ``boolean``, ``string``) of ``type``."""
        return kind_of_type(self.type)


AreaAggregate = Literal["sum", "max", "increase"]
# What each aggregate may total: a sum counts booleans as 0/1; a max or an increase needs a number.
AREA_KINDS: Mapping[AreaAggregate, frozenset[MetricKind]] = MappingProxyType(
    {
        "sum": frozenset({"number", "integer", "boolean"}),
        "max": frozenset({"number", "integer"}),
        "increase": frozenset({"number", "integer"}),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class AreaMetric:
    """A metric the hub totals per kecamatan each minute (``area_totals``, docs/ingest.md).

    ``sum``: each device's last value summed over the devices that reported it recently,
    with their count (a mean is the sum over the count); ``max``: the largest reading
    since the hub's last point; ``increase``: how much a counter grew since then, over
    its devices (a counter that went back, a restart, adds nothing).
    """

    key: str
    aggregate: AreaAggregate


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceTypeSpec:
    """A device type (model) a family declares: the registry's type is seeded from it.

    ``metrics`` are keys of the family's metric table: the type's schema is that table's
    rows, so the registry's types and the drivers cannot drift apart. A type whose points
    go to a measurement of their own (a controller's detectors, read through its poll)
    names it in ``measurement`` (the registry type's family), brings that measurement's
    rows in ``metric_table`` and the device tags its points carry in ``influx_tag_keys``.
    """

    name: str
    protocol: str
    expected_interval_s: float
    metrics: tuple[str, ...]
    description: str = ""
    measurement: str | None = None  # None: the family's name
    metric_table: tuple[Metric, ...] = ()  # empty: the family's table
    influx_tag_keys: tuple[str, ...] = ()
    # Its devices are read by their parent's poll: the agent starts no poll of their own.
    read_by_parent: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """What a driver yields: one device's metrics at one time, as telemetry or an event.

    ``kind="event"`` (a tamper alarm, a button press, an SNMP trap) goes to the device's
    ``event`` topic and the ``<family>_event`` measurement; its metric names are rows of
    the family's metric table like any reading's.
    """

    device_id: str
    ts: datetime
    metrics: Mapping[str, MetricValue]
    seq: int | None = None
    kind: Literal["telemetry", "event"] = "telemetry"

    def __post_init__(self) -> None:
        if self.ts.tzinfo is None:
            raise ValueError("Reading.ts must be timezone-aware")
        for key, value in self.metrics.items():
            if not is_metric_name(key):
                raise ValueError(f"{self.device_id}: metric name {key!r} is not allowed")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{self.device_id}: metric {key} is not finite")
            if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
                raise ValueError(f"{self.device_id}: metric {key} does not fit int64")

    def payload(self) -> bytes:
        """The contract's telemetry payload as published, ``ts`` in epoch milliseconds."""
        return readings_payload(self.metrics, ts_ms=epoch_ms(self.ts), seq=self.seq)


def rfc3339_ms(ts: datetime) -> str:
    """RFC 3339 UTC time with millisecond precision, as the contract writes it."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def utc_now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    """What a driver needs to know about a device: plain data, no registry types."""

    device_id: str
    device_type: str
    protocol: str
    address: str | None = None
    driver_config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    parent_id: str | None = None  # the registry's parent link (a camera's NVR)


class DriverConfig(BaseModel):
    """Base of every family's config: unknown keys are typos, so they are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    poll_interval_s: float | None = Field(
        default=None, gt=0, description="Unset: the registry's expected interval."
    )
    timeout_s: float = Field(default=5.0, gt=0, le=300, description="Whole poll, all requests.")


@runtime_checkable
class PolledDriver(Protocol):
    """A driver the agent polls: one device, one ``poll`` per interval."""

    device_id: str

    async def poll(self) -> list[Reading]:
        """Read the device once; raise DriverError when it cannot be read."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """What a device says it is (ONVIF GetDeviceInformation): for its registry record."""

    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None


@runtime_checkable
class DescribesDevice(Protocol):
    """A polled driver that learns what its device is; the agent reports changes to the registry."""

    def device_info(self) -> DeviceInfo | None:
        """What the last poll learnt, or None (not answered yet)."""
        ...


@runtime_checkable
class StreamDriver(Protocol):
    """A driver that listens (a BLE scanner): yields readings as devices send them."""

    def stream(self) -> AsyncIterator[Reading]:
        """Readings as they arrive, until cancelled."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverFamily:
    """A family of devices: its protocols, models, config schema, metrics and factory."""

    name: str
    description: str
    protocols: tuple[str, ...]
    metrics: tuple[Metric, ...]
    config_model: type[DriverConfig]
    models: tuple[str, ...] = ()
    device_types: tuple[DeviceTypeSpec, ...] = ()
    create_poller: Callable[[DeviceSpec, DriverConfig], PolledDriver] | None = None
    create_stream: Callable[[Sequence[tuple[DeviceSpec, DriverConfig]]], StreamDriver] | None = None
    check: Callable[[DeviceSpec, DriverConfig], None] | None = None
    # Called on an event loop once no agent there runs devices any more: releases what the
    # family's drivers share on that loop (the SNMP families' engine and its timer task).
    close: Callable[[], None] | None = None
    # The metrics the rollup policies keep for long time ranges (boards, reports); None:
    # every row of the table. Each rolled-up field costs its aggregates over every series
    # in every continuous query run, so a family with many devices and many diagnostic
    # rows (cameras) names the rows worth a year; the rest stay raw for 30 days.
    rollup_metrics: tuple[str, ...] | None = None
    # The metrics the hub totals per (family, kecamatan) each minute for the boards
    # (``area_totals``): a board over a city's thousands of devices reads a few series per
    # kecamatan instead of one per device, whose cost in InfluxDB grows with the series.
    area_metrics: tuple[AreaMetric, ...] = ()

    def __post_init__(self) -> None:
        keys = {m.key for m in self.metrics}
        if len(keys) != len(self.metrics):
            raise ValueError(f"family {self.name}: a metric key appears twice in its table")
        kinds = {m.key: m.kind for m in self.metrics}
        for area in self.area_metrics:
            kind = kinds.get(area.key)
            if kind not in AREA_KINDS[area.aggregate]:
                raise ValueError(
                    f"family {self.name}: area_metrics {area.aggregate} of {area.key!r} needs "
                    f"a metric of kind {' or '.join(sorted(AREA_KINDS[area.aggregate]))} "
                    f"in the family's table, not {kind or 'none'}"
                )
        if len({(a.key, a.aggregate) for a in self.area_metrics}) != len(self.area_metrics):
            raise ValueError(f"family {self.name}: area_metrics names a metric twice")
        unknown = sorted(set(self.rollup_metrics or ()) - keys)
        if unknown:
            raise ValueError(
                f"family {self.name}: rollup_metrics names {unknown}, "
                "which the family's metric table lacks"
            )
        for spec in self.device_types:
            missing = sorted(set(spec.metrics) - {m.key for m in self.type_table(spec)})
            if missing:
                raise ValueError(
                    f"family {self.name}: device type {spec.name} declares {missing}, "
                    "which the family's metric table lacks"
                )

    def metric_schema(self, keys: Sequence[str] | None = None) -> dict[str, MetricKind]:
        """Metric name -> schema kind, for ``keys`` (all the table's metrics when None)."""
        wanted = None if keys is None else set(keys)
        return {m.key: m.kind for m in self.metrics if wanted is None or m.key in wanted}

    def type_table(self, spec: DeviceTypeSpec) -> tuple[Metric, ...]:
        """The metric table of a declared type's measurement: its own, or the family's."""
        return spec.metric_table or self.metrics

    def measurement(self, spec: DeviceTypeSpec) -> str:
        """The measurement (registry family) a declared type's points go to."""
        return spec.measurement or self.name

    def device_type(self, name: str) -> DeviceTypeSpec:
        """The declared device type ``name``; KeyError when the family declares none."""
        for spec in self.device_types:
            if spec.name == name:
                return spec
        raise KeyError(f"{self.name} declares no device type {name!r}")

    def metric(self, key: str) -> Metric:
        """The metric with this key; KeyError when the family has none."""
        for metric in self.metrics:
            if metric.key == key:
                return metric
        raise KeyError(f"{self.name} has no metric {key!r}")

    def validate(self, spec: DeviceSpec) -> DriverConfig:
        """Validate a device's driver config without touching the network."""
        if self.models and spec.device_type not in self.models:
            raise DriverConfigError(
                spec.device_id,
                f"device_type {spec.device_type!r} is not a {self.name} model "
                f"(known: {', '.join(self.models)})",
            )
        try:
            config = self.config_model.model_validate(
                {**dict(spec.driver_config), **_address_fields(self.config_model, spec)}
            )
        except ValidationError as err:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}"
                for e in err.errors()
            )
            raise DriverConfigError(spec.device_id, f"invalid driver_config: {reasons}") from err
        if self.check is not None:
            try:
                self.check(spec, config)
            except DriverError as err:
                raise DriverConfigError(spec.device_id, err.cause) from err
        return config


def _address_fields(model: type[DriverConfig], spec: DeviceSpec) -> dict[str, Any]:
    """The registry's ``address`` fills the config's ``address`` field unless the config sets it."""
    if spec.address and "address" in model.model_fields and "address" not in spec.driver_config:
        return {"address": spec.address}
    return {}


def discover_families() -> dict[str, DriverFamily]:
    """Every family: sub-packages of ``drivers`` with ``FAMILY`` plus entry points; by name."""
    import drivers

    found: dict[str, DriverFamily] = {}
    for module_info in pkgutil.iter_modules(drivers.__path__):
        if not module_info.ispkg:
            continue
        module = importlib.import_module(f"drivers.{module_info.name}")
        family = getattr(module, "FAMILY", None)
        if isinstance(family, DriverFamily):
            found[family.name] = family
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        family = entry.load()
        if isinstance(family, DriverFamily):
            found.setdefault(family.name, family)
    return found


def families_by_protocol(families: Mapping[str, DriverFamily]) -> dict[str, DriverFamily]:
    """Index families by the protocols they claim; a protocol claimed twice is an error."""
    out: dict[str, DriverFamily] = {}
    for family in families.values():
        for protocol in family.protocols:
            if protocol in out:
                raise ValueError(
                    f"protocol {protocol!r} claimed by {out[protocol].name} and {family.name}"
                )
            out[protocol] = family
    return out
