"""The registry's read interface: what the hub and the agent need to know about a device.

The hub asks, for every message, "is this device known and active, which gateway owns
it, what tags enrich its points, how often should it report?". The answer must come
from memory, so every implementation keeps a snapshot and refreshes it on change.

Two implementations share this interface: ``FileDeviceDirectory`` (a JSON file, for a
small install, tests and the demo) and the database-backed directory of the registry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

from drivers.contract import METRIC_KINDS, MetricKind, is_metric_name

DeviceState = Literal["planned", "active", "maintenance", "retired"]
DEVICE_STATES: tuple[DeviceState, ...] = ("planned", "active", "maintenance", "retired")
# Tags that the hub copies onto every point (DESIGN.md, InfluxDB schema), in this order.
ENRICHMENT_TAGS: tuple[str, ...] = ("site", "kecamatan", "kelurahan", "team", "model")
# A device's own tags (``--tag river=Garang``) reach InfluxDB only where its type lists the
# key in ``influx_tag_keys``: every distinct value is a new series, so the type bounds them.


class DirectoryError(Exception):
    """A device list cannot be read; the message names the file, entry and reason."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    """One device as the runtime sees it."""

    device_id: str
    family: str
    device_type: str
    state: DeviceState = "active"
    gateway_id: str | None = None
    expected_interval_s: float = 300.0
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    protocol: str | None = None
    address: str | None = None
    driver_config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # The device type's metric schema: name -> kind (number, integer, boolean, string).
    # The hub refuses a metric that is not in it (ingest.unknown_metrics = "reject").
    metrics: Mapping[str, MetricKind] = field(default_factory=lambda: MappingProxyType({}))
    # The device type's allow-list: which of ``tags`` also become InfluxDB tags.
    influx_tag_keys: tuple[str, ...] = ()
    # The registry's parent link (a camera's NVR): a dead parent is its children's cause.
    parent_id: str | None = None

    @property
    def accepts_data(self) -> bool:
        """Planned, active and maintenance devices report; retired ones are refused."""
        return self.state != "retired"

    def influx_tags(self) -> dict[str, str]:
        """Tags for InfluxDB points: device_id, family, the enrichment tags, the type's keys.

        Only the keys the device type allows (``influx_tag_keys``) are added from the
        device's own tags; the fixed tags are never overridden by them.
        """
        out = {"device_id": self.device_id, "family": self.family}
        for key in ENRICHMENT_TAGS:
            value = self.tags.get(key)
            if value:
                out[key] = value
        for key in self.influx_tag_keys:
            value = self.tags.get(key)
            if value and key not in out:
                out[key] = value
        return out


@runtime_checkable
class DeviceDirectory(Protocol):
    """Read-only, in-memory view of the registry, refreshed on change."""

    def get(self, device_id: str) -> DeviceRecord | None:
        """The device, or None when unknown."""
        ...

    def devices_for_gateway(self, gateway_id: str) -> list[DeviceRecord]:
        """Devices that the registry assigns to a gateway (or agent)."""
        ...

    def refresh(self) -> bool:
        """Reload if the source changed; return True when the snapshot changed.

        Cheap when nothing changed; the hub calls it about once a second.
        """
        ...

    @property
    def generation(self) -> int:
        """Counts snapshots: changes whenever the contents change."""
        ...


class SnapshotDirectory:
    """A directory over an in-memory snapshot; subclasses decide how to reload it."""

    def __init__(self, records: Iterable[DeviceRecord] = ()) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._by_id: dict[str, DeviceRecord] = {}
        self._by_gateway: dict[str, list[DeviceRecord]] = {}
        self.replace(records)

    def replace(self, records: Iterable[DeviceRecord]) -> None:
        """Swap in a new snapshot atomically."""
        by_id = {r.device_id: r for r in records}
        by_gateway: dict[str, list[DeviceRecord]] = {}
        for record in by_id.values():
            if record.gateway_id:
                by_gateway.setdefault(record.gateway_id, []).append(record)
        with self._lock:
            self._by_id, self._by_gateway = by_id, by_gateway
            self._generation += 1

    def get(self, device_id: str) -> DeviceRecord | None:
        """The device, or None when unknown."""
        return self._by_id.get(device_id)

    def devices_for_gateway(self, gateway_id: str) -> list[DeviceRecord]:
        """Devices assigned to a gateway."""
        return list(self._by_gateway.get(gateway_id, ()))

    def all(self) -> list[DeviceRecord]:
        """Every device in the snapshot."""
        return list(self._by_id.values())

    def refresh(self) -> bool:
        """A plain snapshot never changes by itself."""
        return False

    @property
    def generation(self) -> int:
        """Counts snapshots."""
        return self._generation


class FileDeviceDirectory(SnapshotDirectory):
    """Devices from a JSON file (a list of objects), reloaded when the file changes.

    Each object has the fields of ``DeviceRecord``; ``tags`` and ``driver_config`` are
    objects, ``metrics`` (the device type's schema, optional: none declared when absent)
    an object of metric name -> ``number``, ``integer``, ``boolean`` or ``string``. A bad
    file keeps the last good snapshot and raises ``DirectoryError`` from ``refresh`` (and
    from the constructor, where there is none yet).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        super().__init__()
        self.refresh()

    def refresh(self) -> bool:
        """Reload when the file's size or modification time changed."""
        try:
            stat = self.path.stat()
        except OSError as err:
            raise DirectoryError(f"{self.path}: cannot read device list: {err.strerror}") from err
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        self.replace(load_device_file(self.path))
        self._stamp = stamp
        return True


def record_from_mapping(data: Mapping[str, Any], *, where: str) -> DeviceRecord:
    """Build a DeviceRecord from a JSON object, with errors naming the entry and field."""
    known = set(DeviceRecord.__dataclass_fields__)
    unknown = set(data) - known
    if unknown:
        raise DirectoryError(f"{where}: unknown field(s) {sorted(unknown)}")
    for required in ("device_id", "family", "device_type"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise DirectoryError(f"{where}: field '{required}' must be a non-empty string")
    state = data.get("state", "active")
    if state not in DEVICE_STATES:
        raise DirectoryError(f"{where}: field 'state' must be one of {DEVICE_STATES}")
    interval = data.get("expected_interval_s", 300.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise DirectoryError(f"{where}: field 'expected_interval_s' must be a positive number")
    tags = data.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise DirectoryError(f"{where}: field 'tags' must be an object of strings")
    driver_config = data.get("driver_config", {})
    if not isinstance(driver_config, dict):
        raise DirectoryError(f"{where}: field 'driver_config' must be an object")
    metrics = data.get("metrics", {})
    if not isinstance(metrics, dict):
        raise DirectoryError(f"{where}: field 'metrics' must be an object of name -> kind")
    for name, kind in metrics.items():
        if not is_metric_name(name):
            raise DirectoryError(f"{where}: metrics: {name!r} is not an allowed metric name")
        if kind not in METRIC_KINDS:
            raise DirectoryError(
                f"{where}: metrics.{name}: kind must be one of {', '.join(METRIC_KINDS)}"
            )
    influx_tag_keys = data.get("influx_tag_keys", [])
    if not isinstance(influx_tag_keys, list) or not all(
        isinstance(k, str) and is_metric_name(k) for k in influx_tag_keys
    ):
        raise DirectoryError(
            f"{where}: field 'influx_tag_keys' must be a list of names like metric names "
            "(not device_id, family or an enrichment tag)"
        )
    return DeviceRecord(
        device_id=data["device_id"],
        family=data["family"],
        device_type=data["device_type"],
        state=state,
        gateway_id=data.get("gateway_id"),
        expected_interval_s=float(interval),
        tags=MappingProxyType(dict(tags)),
        protocol=data.get("protocol"),
        address=data.get("address"),
        driver_config=MappingProxyType(dict(driver_config)),
        metrics=MappingProxyType(dict(metrics)),
        influx_tag_keys=tuple(influx_tag_keys),
        parent_id=_parent_id(data, where),
    )


def _parent_id(data: Mapping[str, Any], where: str) -> str | None:
    parent = data.get("parent_id")
    if parent is not None and (not isinstance(parent, str) or not parent):
        raise DirectoryError(f"{where}: field 'parent_id' must be a non-empty string or null")
    return parent


def load_device_file(path: Path) -> list[DeviceRecord]:
    """Parse a JSON device list; raise DirectoryError naming the entry at fault."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DirectoryError(f"{path}: not a readable JSON device list: {err}") from err
    if not isinstance(data, list):
        raise DirectoryError(f"{path}: expected a JSON list of devices")
    records = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise DirectoryError(f"{path}: entry {index}: expected an object")
        records.append(record_from_mapping(item, where=f"{path}: entry {index}"))
    return records


def record_row(r: DeviceRecord) -> dict[str, Any]:
    """A record as the JSON object ``record_from_mapping`` reads (files, the gateway API)."""
    return {
        "device_id": r.device_id,
        "family": r.family,
        "device_type": r.device_type,
        "state": r.state,
        "gateway_id": r.gateway_id,
        "expected_interval_s": r.expected_interval_s,
        "tags": dict(r.tags),
        "protocol": r.protocol,
        "address": r.address,
        "driver_config": dict(r.driver_config),
        "metrics": dict(r.metrics),
        "influx_tag_keys": list(r.influx_tag_keys),
        # Only when set: an agent older than the parent link reads the list unchanged.
        **({"parent_id": r.parent_id} if r.parent_id else {}),
    }


def save_device_file(path: Path, records: Iterable[DeviceRecord]) -> None:
    """Write a JSON device list that ``FileDeviceDirectory`` reads (demo, tests)."""
    rows = [record_row(r) for r in records]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    tmp.replace(path)
