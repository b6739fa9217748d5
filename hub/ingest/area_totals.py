"""``area_totals``: per family and kecamatan, totals of the metrics each family declares.

A board over a city's thousands of devices that sums a metric per kecamatan reads one
series per device, and InfluxDB's cost grows with the series (the WiFi board's sums over
2,300 access points took 28-36 s over 30 days). The hub sees every reading anyway: it
keeps each device's last value of the metrics its family names in
``DriverFamily.area_metrics`` and writes, every ``ingest.fleet_online_interval_s``, one
point per (hub, family, kecamatan) (docs/ingest.md, "area_totals"):

* ``<metric>_sum`` and ``<metric>_devices`` (``sum``): the devices' last values summed
  over those that reported within ``offline_factor`` x their expected interval (the
  silence limit: a stale device drops out), and how many they are; a mean is the sum
  over the count;
* ``<metric>_max`` (``max``): the largest reading since the hub's previous point;
* ``<metric>_increase`` (``increase``): how much the devices' counters grew since then (a
  counter that went back, a restart, adds nothing), over the devices that reported.

``record`` runs on the intake thread for every reading and takes no lock for a device it
knows (a dict lookup and a few list writes); ``totals`` runs on the housekeeping thread.
A reading racing with ``totals`` lands in this point or the next one, except that its
value may be missing from that interval's ``_max``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from device_registry.directory import DeviceRecord
from drivers.framework import AreaAggregate, DriverFamily
from hub.ingest.line_protocol import tag_prefix

log = logging.getLogger(__name__)

MEASUREMENT = "area_totals"
FieldKind = Literal["number", "integer"]
Number = int | float
DeviceLookup = Callable[[str], DeviceRecord | None]
_Pairs = tuple[tuple[int, str], ...]
_HotPlan = tuple[_Pairs, _Pairs, _Pairs]  # sums, increases, peaks
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# The suffix of each output field, and the rollup aggregate that keeps its meaning over a
# longer bucket: the boards read the mean of a sum (the mean total of the bucket), the max
# of a peak and the sum of increases.
COUNT_SUFFIX = "_devices"
SUFFIXES: Mapping[AreaAggregate, str] = {"sum": "_sum", "max": "_max", "increase": "_increase"}
ROLLUP_AGGREGATES: Mapping[str, Literal["mean", "max", "sum"]] = {
    "_sum": "mean",
    COUNT_SUFFIX: "mean",
    "_max": "max",
    "_increase": "sum",
}


def rollup_aggregate(field: str) -> Literal["mean", "max", "sum"]:
    """The rollups' aggregate of an ``area_totals`` field, by its suffix."""
    for suffix, aggregate in ROLLUP_AGGREGATES.items():
        if field.endswith(suffix):
            return aggregate
    return "mean"


@dataclass(frozen=True, slots=True)
class _Slot:
    """One declared metric of a family: where its state sits in a device's lists."""

    index: int
    key: str
    aggregate: AreaAggregate
    integer: bool  # the output is an integer field


def _plans(families: Iterable[DriverFamily]) -> dict[str, tuple[_Slot, ...]]:
    """Each declaring family's slots; a field already typed otherwise by another is left out.

    One measurement holds every family's fields, and InfluxDB keeps one type per field.
    """
    plans: dict[str, tuple[_Slot, ...]] = {}
    kinds: dict[str, FieldKind] = {}
    for family in sorted(families, key=lambda f: f.name):
        schema = family.metric_schema()
        slots: list[_Slot] = []
        for area in family.area_metrics:
            integer = schema[area.key] != "number"
            field = area.key + SUFFIXES[area.aggregate]
            kind: FieldKind = "integer" if integer else "number"
            if kinds.setdefault(field, kind) != kind:
                log.error(
                    "area_totals: %s of family %s would be %s, another family wrote it as %s; "
                    "left out",
                    field,
                    family.name,
                    kind,
                    kinds[field],
                )
                continue
            slots.append(_Slot(len(slots), area.key, area.aggregate, integer))
        if slots:
            plans[family.name] = tuple(slots)
    return plans


def area_fields(families: Iterable[DriverFamily]) -> dict[str, FieldKind]:
    """Every ``area_totals`` field the families' declarations make, with its kind."""
    out: dict[str, FieldKind] = {}
    for slots in _plans(families).values():
        for slot in slots:
            out[slot.key + SUFFIXES[slot.aggregate]] = "integer" if slot.integer else "number"
            if slot.aggregate != "max":
                out[slot.key + COUNT_SUFFIX] = "integer"
    return dict(sorted(out.items()))


@dataclass(frozen=True, slots=True)
class AreaTotal:
    """One family's totals in one kecamatan: output field -> value."""

    family: str
    kecamatan: str  # "" when the registry gives the device none (the tag is left out)
    fields: Mapping[str, Number]


class _DeviceState:
    """A device's last values, times, counter growth and peaks, one list slot per metric."""

    __slots__ = ("at", "epoch", "family", "grown", "last", "peak", "record")

    def __init__(self, record: DeviceRecord, slots: int, epoch: int) -> None:
        self.record = record
        self.family = record.family
        # Any: the values are the decoder's (numbers and booleans the schema let through).
        self.last: list[Any] = [None] * slots
        self.at: list[int] = [0] * slots
        # Only the intake adds to it: the writer keeps what it reported (no reset, no lock).
        self.grown: list[Any] = [0] * slots
        self.peak: list[Any] = [None] * slots
        self.epoch = epoch


class AreaTotals:
    """Keeps each device's values of its family's ``area_metrics``; sums them per area."""

    def __init__(self, families: Iterable[DriverFamily], *, offline_factor: float = 3.0) -> None:
        self.offline_factor = offline_factor
        declared = list(families)
        self._plans = _plans(declared)
        # The hot path's plan per family: (index, key) pairs of the sums, increases and
        # peaks, plain tuples (an attribute read per slot and reading is measurable).
        self._hot: dict[str, _HotPlan] = {
            family: tuple(  # type: ignore[misc]
                tuple((s.index, s.key) for s in slots if s.aggregate == aggregate)
                for aggregate in ("sum", "increase", "max")
            )
            for family, slots in self._plans.items()
        }
        self._integer = {name: kind == "integer" for name, kind in area_fields(declared).items()}
        self._lock = threading.Lock()
        self._devices: dict[str, _DeviceState] = {}
        # device id -> the counter growth already in a point, per slot (writer's own).
        self._reported: dict[str, list[Number]] = {}
        # Bumped by each ``totals``: a device's peaks start over at its first reading after.
        self._epoch = 0

    @property
    def families(self) -> frozenset[str]:
        """The families that declare area metrics."""
        return frozenset(self._plans)

    def record(self, device: DeviceRecord, metrics: Mapping[str, object], now_ms: int) -> None:
        """A reading of ``device`` arrived at ``now_ms`` (hub clock) with these metrics."""
        hot = self._hot.get(device.family)
        if hot is None:
            return  # the family declares nothing: one dict lookup per reading
        state = self._devices.get(device.device_id)
        if state is None:
            state = self._add(device)
        else:
            state.record = device
        sums, increases, maxes = hot
        get = metrics.get
        last, at = state.last, state.at
        for index, key in sums:
            value = get(key)
            if value is not None and type(value) is not str:
                last[index] = value
                at[index] = now_ms
        for index, key in increases:
            value = get(key)
            if value is None or type(value) is str:
                continue
            before = last[index]
            if before is not None and value > before:
                state.grown[index] += value - before
            last[index] = value
            at[index] = now_ms
        if maxes:
            if state.epoch != self._epoch:
                state.peak = [None] * len(last)
                state.epoch = self._epoch
            peak = state.peak
            for index, key in maxes:
                value = get(key)
                if value is None or type(value) is str:
                    continue
                best = peak[index]
                if best is None or value > best:
                    peak[index] = value

    def _add(self, device: DeviceRecord) -> _DeviceState:
        with self._lock:
            state = self._devices.get(device.device_id)
            if state is None:
                slots = len(self._plans[device.family])
                state = _DeviceState(device, slots, self._epoch)
                self._devices[device.device_id] = state
            return state

    def totals(self, now_ms: int, current: DeviceLookup | None = None) -> list[AreaTotal]:
        """Each area's totals now, sorted; ends the interval of the peaks and increases.

        ``current`` looks each device up in the registry as it is now (as ``fleet_counts``
        does): one it does not know or that is retired is left out, a moved one counts
        where it is now; without it, the record of its last reading decides.
        """
        with self._lock:
            states = list(self._devices.items())
        epoch = self._epoch
        self._epoch = epoch + 1
        areas: dict[tuple[str, str], dict[str, Number]] = {}
        for device_id, state in states:
            record = state.record if current is None else current(device_id)
            if record is None or not record.accepts_data:
                continue
            slots = self._plans[state.family]
            reported = self._reported.get(device_id)
            if reported is None:
                reported = self._reported[device_id] = [0] * len(slots)
            key = (state.family, record.tags.get("kecamatan") or "")
            fields = areas.get(key)
            if fields is None:
                fields = areas[key] = {}
            peaks = state.peak if state.epoch == epoch else None
            # The silence limit of the device as the registry has it now.
            limit_ms = self.offline_factor * record.expected_interval_s * 1000
            for slot in slots:
                _add_slot(fields, slot, state, reported, peaks, now_ms - limit_ms)
        return [
            AreaTotal(family, kecamatan, fields)
            for (family, kecamatan), fields in sorted(areas.items())
            if fields
        ]

    def lines(self, hub: str, now_ms: int, current: DeviceLookup | None = None) -> list[str]:
        """The ``area_totals`` points of this interval, one per family and kecamatan."""
        out = []
        for total in self.totals(now_ms, current):
            tags = {"hub": hub, "family": total.family, "kecamatan": total.kecamatan}
            texts = [
                (name, _number_text(value, self._integer.get(name, False)))
                for name, value in sorted(total.fields.items())
            ]
            fields = ",".join(f"{name}={text}" for name, text in texts if text is not None)
            if fields:
                out.append(f"{tag_prefix(MEASUREMENT, tags)} {fields} {now_ms}")
        return out


def _add_slot(
    fields: dict[str, Number],
    slot: _Slot,
    state: _DeviceState,
    reported: list[Number],
    peaks: list[Number | None] | None,
    fresh_since_ms: float,
) -> None:
    """Add one device's share of one metric to its area's fields."""
    index = slot.index
    name = slot.key + SUFFIXES[slot.aggregate]
    if slot.aggregate == "max":
        best = None if peaks is None else peaks[index]
        if best is not None and (name not in fields or best > fields[name]):
            fields[name] = best
        return
    value = state.last[index]
    if value is None:
        return  # never reported
    fresh = state.at[index] >= fresh_since_ms
    if slot.aggregate == "increase":
        grown = state.grown[index]  # read once: the intake may add to it meanwhile
        share, reported[index] = grown - reported[index], grown
        if not fresh and not share:
            return
    elif fresh:
        share = value
    else:
        return  # stale: out of the sums and counts
    fields[name] = fields.get(name, 0) + share
    if fresh:
        count = slot.key + COUNT_SUFFIX
        fields[count] = fields.get(count, 0) + 1


def _number_text(value: Number, integer: bool) -> str | None:
    """A field value: integers clamped to int64 (a sum could outgrow it), else a float.

    None for a float sum that overflowed to infinity (InfluxDB takes no infinities).
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if integer:
        return f"{min(max(int(value), INT64_MIN), INT64_MAX)}i"
    return repr(float(value))
