"""Decode and validate one MQTT message against contract v1 and the device registry.

``ContractDecoder.decode`` never raises: it returns an ``Accepted`` (points to write, as
line protocol) or a ``Rejected`` (a reason from ``Reason`` and a detail for the
dead-letter). It is called from the MQTT thread only, so it keeps its memory (metric
types, cached tag prefixes) without locks.

The device type's metrics are the schema (``DeviceRecord.metrics``, name -> kind): a
metric the type does not declare is refused (``metric_not_in_type``) unless the decoder
runs with ``unknown_metrics="learn"``, which accepts it and remembers its type per
measurement (InfluxDB fixes a field's type per measurement and shard, not per device).
A ``number`` is written as a float, an ``integer`` as an InfluxDB integer (``42i``).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal

import orjson

from device_registry.directory import DeviceDirectory, DeviceRecord
from drivers.contract import (
    DEADLETTER_TOPIC,
    INT_MAX,
    INT_MIN,
    METRIC_NAME,
    RESERVED_METRIC_NAMES,
    ContractError,
    MessageKind,
    parse_topic,
    plain_status,
    status_from_object,
)
from hub.ingest.line_protocol import FieldValue, format_field, format_line, tag_prefix

__all__ = ["DEADLETTER_TOPIC", "parse_topic"]  # the contract's, kept importable from here
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_METRICS = 200
MAX_STRING_CHARS = 256
EXCERPT_BYTES = 256
DEADLETTER_PAYLOAD_MAX = 4096
# Bounds the metric-type memory (13,000 devices x ~20 metrics fit many times over).
TYPE_MEMORY_LIMIT = 2_000_000
TOPIC_CACHE = 200_000
# Every integer in a message (seq, metrics) must fit InfluxDB's int64 (INT_MIN..INT_MAX):
# a 400-digit seq once reached float() in the self-metrics and killed housekeeping.
_BIG_FLOAT = 9.2e18  # floats past this may be integer literals orjson could not hold
# Text that cannot be stored as sent: lone surrogates (valid JSON escapes, invalid
# Unicode: UTF-8 cannot encode them) and control characters other than tab, which would
# end or corrupt a line-protocol point.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_BAD_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
# Dead-letters of devices the registry does not know share one tag value, so that a
# gateway inventing ids cannot create a series per id; the id is kept as a field.
UNKNOWN_DEVICE_TAG = "_unknown"

Kind = MessageKind
UnknownMetrics = Literal["reject", "learn"]


class Reason(StrEnum):
    """Why an input went to the dead-letter."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    UNKNOWN_DEVICE = "unknown_device"
    RETIRED_DEVICE = "retired_device"
    FOREIGN_DEVICE = "foreign_device"
    TS_TOO_OLD = "ts_too_old"
    TS_IN_FUTURE = "ts_in_future"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    TOO_MANY_METRICS = "too_many_metrics"
    BAD_METRIC_NAME = "bad_metric_name"
    METRIC_NOT_IN_TYPE = "metric_not_in_type"
    TYPE_CHANGED = "type_changed"
    BAD_TEXT = "bad_text"
    OUT_OF_RANGE = "out_of_range"
    BAD_TOPIC = "bad_topic"
    BAD_QOS = "bad_qos"
    REFUSED_BY_INFLUX = "refused_by_influx"
    HUB_ERROR = "hub_error"


@dataclass(slots=True)  # not frozen: built once per message, and frozen init costs 3x
class Accepted:
    """A valid message: its device, kind, time, and the lines to write."""

    device: DeviceRecord
    kind: Kind
    time_ms: int
    lines: tuple[str, ...]
    seq: int | None = None
    online: bool | None = None
    status_reason: str | None = None
    # The reading's metrics as decoded (each passed the checks that made ``lines``), for
    # the hub's in-memory totals (area_totals.py); None for a status.
    metrics: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that broke the contract, with everything the dead-letter needs."""

    reason: Reason
    detail: str
    topic: str
    device_id: str | None
    payload: bytes
    time_ms: int
    # False when device_id came from the topic and the registry does not know it.
    device_known: bool = True

    def excerpt(self) -> str:
        """The first bytes of the payload as text, undecodable bytes replaced."""
        return self.payload[:EXCERPT_BYTES].decode("utf-8", "replace")

    def deadletter_line(self, *, hub: str | None = None, time_ms: int | None = None) -> str:
        """The point for the ``deadletter`` measurement (tagged with the hub that refused)."""
        tags = {"reason": self.reason.value}
        fields: dict[str, FieldValue] = {
            "count": 1.0,
            "topic": self.topic[:256],
            "detail": self.detail[:256],
            "excerpt": self.excerpt(),
            "payload_bytes": float(len(self.payload)),
        }
        if self.device_id:
            if self.device_known:
                tags["device_id"] = self.device_id
            else:
                tags["device_id"] = UNKNOWN_DEVICE_TAG
                fields["raw_device_id"] = self.device_id[:128]
        if hub:
            tags["hub"] = hub
        return format_line("deadletter", tags, fields, self.time_ms if time_ms is None else time_ms)

    def deadletter_message(self) -> bytes:
        """The JSON published on the dead-letter topic (``DEADLETTER_TOPIC``)."""
        body: dict[str, object] = {
            "device": self.device_id,
            "topic": self.topic,
            "reason": self.reason.value,
            "detail": self.detail,
            "received_ms": self.time_ms,
            "payload_bytes": len(self.payload),
        }
        try:
            if len(self.payload) > DEADLETTER_PAYLOAD_MAX:
                raise UnicodeDecodeError("utf-8", b"", 0, 1, "too long")
            body["payload"] = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            body["payload_excerpt_b64"] = base64.b64encode(self.payload[:EXCERPT_BYTES]).decode()
        return json.dumps(body, ensure_ascii=False).encode("utf-8")


Decoded = Accepted | Rejected


@dataclass(slots=True)
class _Route:
    """What a topic of a known, accepted device resolves to, kept while the registry holds.

    Every device check (registered, not retired, its own gateway) ran when it was made.
    """

    record: DeviceRecord
    kind: Kind
    measurement: str
    prefix: str  # measurement and tags of the kind's points ("" for status)
    schema: Mapping[str, str]  # the device type's metrics: name -> kind
    types: dict[str, str]  # learn mode: the measurement's entry in ContractDecoder.metric_types


class _RefusalError(Exception):
    """Internal: carries a reason out of the nested checks."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _topic_device(topic: str) -> str | None:
    """The device id of a contract topic (at most 128 characters), for dead-letters."""
    parsed = parse_topic(topic)
    return parsed[1][:128] if parsed else None


def parse_ts(value: object, received_ms: int) -> int:
    """Milliseconds since the epoch from RFC 3339 text or epoch milliseconds."""
    if value is None:
        return received_ms
    if isinstance(value, bool):
        raise _RefusalError(Reason.WRONG_TYPE, "ts must be RFC 3339 text or epoch milliseconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _RefusalError(Reason.NOT_FINITE, "ts is not a finite number")
        if abs(value) > 1e16:
            raise _RefusalError(
                Reason.TS_IN_FUTURE if value > 0 else Reason.TS_TOO_OLD, "ts out of range"
            )
        return round(value)
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            raise _RefusalError(Reason.WRONG_TYPE, "ts is not RFC 3339") from None
        if stamp.tzinfo is None:
            raise _RefusalError(Reason.WRONG_TYPE, "ts has no UTC offset")
        try:
            return round(stamp.timestamp() * 1000)
        except (OverflowError, OSError, ValueError):
            raise _RefusalError(Reason.WRONG_TYPE, "ts out of range") from None
    raise _RefusalError(Reason.WRONG_TYPE, "ts must be RFC 3339 text or epoch milliseconds")


def check_text(what: str, value: str) -> str:
    """``value`` if it is at most MAX_STRING_CHARS of storable text; else refuse it."""
    if len(value) > MAX_STRING_CHARS:
        raise _RefusalError(Reason.WRONG_TYPE, f"{what}: strings are <= {MAX_STRING_CHARS} chars")
    bad = _BAD_TEXT.search(value)
    if bad is not None:
        raise _RefusalError(
            Reason.BAD_TEXT,
            f"{what} holds U+{ord(bad.group()):04X} at {bad.start()}: "
            "control characters (but tab) and lone surrogates are not storable text",
        )
    return value


def metric_value(name: str, value: object) -> FieldValue | int:
    """A metric's value checked: finite float, int64 integer, bool, or short storable text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            digits = str(value)
            shown = digits if len(digits) <= 30 else f"{digits[:30]}... ({len(digits)} digits)"
            raise _RefusalError(
                Reason.OUT_OF_RANGE,
                f"metric {name}: {shown} does not fit 64 bits (int64 is {INT_MIN} to {INT_MAX})",
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _RefusalError(Reason.NOT_FINITE, f"metric {name} is NaN or infinite")
        return value
    if isinstance(value, str):
        return check_text(f"metric {name}", value)
    raise _RefusalError(Reason.WRONG_TYPE, f"metric {name} must be a number, boolean or string")


def _refuse_surrogates(data: object) -> None:
    """Refuse a JSON value holding a lone surrogate in any string, key or value."""
    stack = [data]  # iterative: deep nesting that json accepted must not overflow here
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            match = _SURROGATE.search(value)
            if match is not None:
                raise _RefusalError(
                    Reason.BAD_TEXT,
                    f"a string holds the lone surrogate U+{ord(match.group()):04X}: "
                    "not valid Unicode, not storable",
                )
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _type_code(value: FieldValue | int) -> str:
    """The schema kind a checked value has (an int counts as ``integer``)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int):
        return "integer"
    return "number"


def _field_text(name: str, raw: object, kind: str, *, declared: bool, type_name: str) -> str:
    """The slow path of one metric: check ``raw`` and format it as a field of ``kind``.

    ``declared`` says whether ``kind`` comes from the device type (a mismatch is
    ``wrong_type``) or from what the measurement learned (``type_changed``).
    """
    value = metric_value(name, raw)
    actual = _type_code(value)
    if actual == kind:
        return f"{value}i" if kind == "integer" else format_field(value)
    if kind == "number" and actual == "integer":
        return repr(float(value))  # an integer sent for a float metric is that float
    if declared:
        raise _RefusalError(
            Reason.WRONG_TYPE, f"metric {name} is {kind} in device type {type_name}, not {actual}"
        )
    raise _RefusalError(Reason.TYPE_CHANGED, f"metric {name} was {kind}, now {actual}")


def _learned_kind(raw: object) -> str:
    """The kind a new metric gets in learn mode: any number is a float there."""
    if isinstance(raw, bool):
        return "boolean"
    if isinstance(raw, str):
        return "string"
    return "number"


class ContractDecoder:
    """Turns (topic, payload) into points or a dead-letter reason; never raises."""

    def __init__(
        self,
        directory: DeviceDirectory,
        *,
        max_age_s: float = 7 * 24 * 3600.0,
        max_clock_skew_s: float = 300.0,
        unknown_metrics: UnknownMetrics = "reject",
    ) -> None:
        self.directory = directory
        self.max_age_ms = round(max_age_s * 1000)
        self.max_skew_ms = round(max_clock_skew_s * 1000)
        self.learn = unknown_metrics == "learn"
        # Learn mode: measurement -> metric name -> kind, as InfluxDB fixes a field's type
        # per measurement; a name is in here only once validated.
        self.metric_types: dict[str, dict[str, str]] = {}
        self.type_memory_size = 0
        self.type_memory_resets = 0
        # topic -> route, for topics of accepted devices; emptied when the registry
        # changes or the type memory is reset (a route shares its device's types dict).
        self._routes: dict[str, _Route] = {}
        self._generation = -1

    def remember_type(self, measurement: str, metric: str, type_name: str) -> None:
        """Seed learn mode's type memory (e.g. from what InfluxDB already holds)."""
        types = self.metric_types.setdefault(measurement, {})
        if metric not in types:
            self.type_memory_size += 1
        types[metric] = type_name

    def decode(self, topic: str, payload: bytes, received_ms: int) -> Decoded:
        """Validate one message; return Accepted or Rejected, never raise."""
        generation = self.directory.generation
        if generation != self._generation:
            # The registry changed: devices, states and tags must be looked up again.
            self._routes.clear()
            self._generation = generation
        route = self._routes.get(topic)
        try:
            if len(payload) > MAX_PAYLOAD_BYTES:
                if route is None and parse_topic(topic) is None:
                    raise _RefusalError(Reason.BAD_TOPIC, "not a contract v1 device topic")
                raise _RefusalError(
                    Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}"
                )
            if route is None:
                route = self._route(topic)
            if route.kind == "status":
                return self._status(route.record, payload, received_ms)
            return self._readings(route, payload, received_ms)
        except _RefusalError as refusal:
            return self._rejected(
                refusal.reason, refusal.detail, topic, route, payload, received_ms
            )
        except Exception as err:  # a decoder bug must not stop ingest
            detail = f"decoder error {type(err).__name__}"
            return self._rejected(Reason.WRONG_TYPE, detail, topic, route, payload, received_ms)

    def _rejected(
        self,
        reason: Reason,
        detail: str,
        topic: str,
        route: _Route | None,
        payload: bytes,
        received_ms: int,
    ) -> Rejected:
        if route is not None:
            return Rejected(reason, detail, topic, route.record.device_id, payload, received_ms)
        return self.rejection(reason, detail, topic, payload, received_ms)

    def rejection(
        self, reason: Reason, detail: str, topic: str, payload: bytes, received_ms: int
    ) -> Rejected:
        """A rejection of a message on ``topic``, its device looked up in the registry.

        A device id the registry does not know is marked so, and never becomes a tag.
        """
        device_id = _topic_device(topic)
        known = device_id is None or self.directory.get(device_id) is not None
        return Rejected(reason, detail, topic, device_id, payload, received_ms, known)

    def _route(self, topic: str) -> _Route:
        """Resolve and check a topic's device; remember the route for the next message."""
        parsed = parse_topic(topic)
        if parsed is None:
            raise _RefusalError(Reason.BAD_TOPIC, "not a contract v1 device topic")
        gateway_id, device_id, kind = parsed
        record = self._device(device_id, gateway_id)
        prefix = ""
        measurement = record.family if kind != "event" else f"{record.family}_event"
        if kind != "status":
            prefix = tag_prefix(measurement, record.influx_tags())
        types: dict[str, str] = {}
        if self.learn and kind != "status":
            types = self.metric_types.setdefault(measurement, {})
            for name, declared in record.metrics.items():
                # What a type declares is what the measurement's field is, for all.
                if name not in types:
                    types[name] = declared
                    self.type_memory_size += 1
        route = _Route(record, kind, measurement, prefix, record.metrics, types)
        if len(self._routes) >= TOPIC_CACHE:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _device(self, device_id: str, gateway_id: str | None) -> DeviceRecord:
        record = self.directory.get(device_id)
        if record is None:
            raise _RefusalError(
                Reason.UNKNOWN_DEVICE, f"device {device_id[:128]} is not registered"
            )
        if not record.accepts_data:
            raise _RefusalError(Reason.RETIRED_DEVICE, f"device {device_id} is retired")
        if gateway_id is not None and record.gateway_id != gateway_id:
            raise _RefusalError(
                Reason.FOREIGN_DEVICE,
                f"gateway {gateway_id[:128]} speaks for {device_id}, "
                f"which the registry assigns to {record.gateway_id or 'no gateway'}",
            )
        return record

    def _load_object(self, payload: bytes, *, exact: bool = False) -> dict[str, object]:
        try:
            if exact:
                raise orjson.JSONDecodeError("exact integers wanted", "", 0)
            # orjson (C) takes a telemetry message in about 1 us, the json module in 5.
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            # orjson refuses what the json module reads (NaN, Infinity, 1e400): those get
            # their precise reason (not_finite) from the json module's reading.
            try:
                # The contract says UTF-8: decoding first also skips json's sniffing.
                data = json.loads(payload.decode("utf-8"))
            except (ValueError, RecursionError):
                raise _RefusalError(Reason.NOT_JSON, "payload is not UTF-8 JSON") from None
            # orjson also refuses lone surrogates (\\ud800), which the json module reads:
            # no string of a message may hold one (UTF-8 cannot encode it).
            _refuse_surrogates(data)
        if not isinstance(data, dict):
            raise _RefusalError(Reason.NOT_OBJECT, f"payload is a JSON {type(data).__name__}")
        return data

    def _check_time(self, time_ms: int, received_ms: int) -> None:
        if time_ms < received_ms - self.max_age_ms:
            raise _RefusalError(Reason.TS_TOO_OLD, f"ts {time_ms} is older than the accepted age")
        if time_ms > received_ms + self.max_skew_ms:
            raise _RefusalError(Reason.TS_IN_FUTURE, f"ts {time_ms} is ahead of the hub clock")

    def _readings(
        self, route: _Route, payload: bytes, received_ms: int, *, exact: bool = False
    ) -> Accepted:
        data = self._load_object(payload, exact=exact)
        ts = data.get("ts")
        # Epoch milliseconds (what most devices send) skip parse_ts's checks for text.
        time_ms = ts if type(ts) is int and 0 < ts < 10**16 else parse_ts(ts, received_ms)
        if not received_ms - self.max_age_ms <= time_ms <= received_ms + self.max_skew_ms:
            self._check_time(time_ms, received_ms)  # raises with the reason
        seq = data.get("seq")
        if seq is not None and (type(seq) is not int or not 0 <= seq <= INT_MAX):
            raise _RefusalError(Reason.WRONG_TYPE, "seq must be an integer from 0 to 2^63-1")
        metrics = data.get("metrics", {})
        if type(metrics) is not dict:
            raise _RefusalError(Reason.WRONG_TYPE, "metrics must be an object")
        if len(metrics) > MAX_METRICS:
            raise _RefusalError(Reason.TOO_MANY_METRICS, f"{len(metrics)} metrics > {MAX_METRICS}")
        parts: list[str] = []
        new_types: list[tuple[str, str]] = []
        schema = route.schema
        for name, raw in metrics.items():
            # Hot path: one dict lookup for the declared kind, exact type checks, direct
            # formatting (declared names need no escaping; the registry checked them).
            # ``raw - raw`` is 0.0 for every finite float and NaN for NaN and infinities.
            kind = schema.get(name)
            declared = kind is not None
            if kind is None:
                kind = self._undeclared(route, name, raw, new_types)
            kind_of = type(raw)
            text: str | None = None
            if kind == "number":
                if kind_of is float and raw - raw == 0.0 and -_BIG_FLOAT < raw < _BIG_FLOAT:
                    text = repr(raw)
                elif kind_of is int and INT_MIN <= raw <= INT_MAX:
                    text = repr(float(raw))
            elif kind == "integer":
                if kind_of is int and INT_MIN <= raw <= INT_MAX:
                    text = f"{raw}i"
            elif kind == "boolean" and kind_of is bool:
                text = "true" if raw else "false"
            if text is None:
                if kind_of is float and raw - raw == 0.0 and not exact and abs(raw) >= _BIG_FLOAT:
                    # orjson reads an integer literal beyond 64 bits as a float: read the
                    # message again with the json module, which keeps integers exact.
                    return self._readings(route, payload, received_ms, exact=True)
                text = _field_text(
                    name, raw, kind, declared=declared, type_name=route.record.device_type
                )
            parts.append(f"{name}={text}")
        if new_types:
            self._learn_types(route, new_types)
        lines: tuple[str, ...] = ()
        if parts:
            lines = (f"{route.prefix} {','.join(parts)} {time_ms}",)
        return Accepted(route.record, route.kind, time_ms, lines, seq, metrics=metrics)

    def _undeclared(
        self, route: _Route, name: str, raw: object, new_types: list[tuple[str, str]]
    ) -> str:
        """The kind of a metric the device type does not declare; refused unless learning."""
        known = route.types.get(name)
        if known is not None:
            return known
        # First time for this measurement (or a refusal): the name is checked once.
        if not METRIC_NAME.fullmatch(name) or name in RESERVED_METRIC_NAMES:
            raise _RefusalError(Reason.BAD_METRIC_NAME, f"bad metric name {name[:80]!r}")
        if not self.learn:
            raise _RefusalError(
                Reason.METRIC_NOT_IN_TYPE,
                f"metric {name!r} is not in device type {route.record.device_type[:80]}",
            )
        kind = _learned_kind(raw)
        new_types.append((name, kind))
        return kind

    def _learn_types(self, route: _Route, new_types: list[tuple[str, str]]) -> None:
        if self.type_memory_size + len(new_types) > TYPE_MEMORY_LIMIT:
            # Forget every measurement's types; routes share those dicts, so they go too.
            self.metric_types.clear()
            self._routes.clear()
            self.type_memory_size = 0
            self.type_memory_resets += 1
            route.types = self.metric_types[route.measurement] = {}
        types = route.types
        for name, type_name in new_types:
            if name not in types:
                self.type_memory_size += 1
            types[name] = type_name

    def _status(self, record: DeviceRecord, payload: bytes, received_ms: int) -> Accepted:
        if not payload:
            # An empty retained message clears the retained status: nothing to record.
            return Accepted(record, "status", received_ms, ())
        plain = plain_status(payload)
        if plain is not None:
            return Accepted(record, "status", received_ms, (), online=plain)
        data = self._load_object(payload)
        try:
            status = status_from_object(data)
        except ContractError as err:
            raise _RefusalError(Reason(err.reason), err.detail) from None
        online, reason = status.online, status.reason
        if reason is not None:
            check_text("status reason", reason)
        time_ms = parse_ts(status.ts, received_ms)
        self._check_time(time_ms, received_ms)
        return Accepted(record, "status", time_ms, (), online=online, status_reason=reason)
