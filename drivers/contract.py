"""MQTT contract v1 in one place: topics, payloads, status messages, metric rules, ACL prefixes.

The agent, the hub's decoder and intake, the registry (broker ACLs, device types) and the
benches all build and read the contract through this module, so it is spelt once. It lives
in ``drivers`` because drivers may import nothing else, while everything may import them.

Two vocabularies name a metric's kind, with one fixed mapping between them:

* drivers' metric tables use Python's names: ``float``, ``int``, ``bool``, ``str``;
* the schema (the registry's device types, the device file, the hub) uses JSON Schema's:
  ``number``, ``integer``, ``boolean``, ``string``.

A ``number`` is written to InfluxDB as a float (an integer sent for it is accepted and
written as a float), an ``integer`` as an InfluxDB integer (``42i``; a float sent for it
is refused), so a field keeps one type per measurement, as InfluxDB requires.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import orjson

PREFIX: Final = "kota/v1/"
MessageKind = Literal["telemetry", "event", "status"]
MESSAGE_KINDS: Final[tuple[MessageKind, ...]] = ("telemetry", "event", "status")
_KINDS: Final = frozenset(MESSAGE_KINDS)
DEADLETTER_TOPIC: Final = "kota/v1/hub/deadletter"
# What the hub subscribes to: a device's own topics and those a gateway sends for it.
SUBSCRIPTION_FILTERS: Final[tuple[str, ...]] = tuple(
    f"{PREFIX}{scope}/{kind}" for scope in ("dev/+", "gw/+/dev/+") for kind in MESSAGE_KINDS
)

# Metric names: also InfluxDB field keys, so short, lower case and never needing escapes.
METRIC_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
METRIC_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")  # use with fullmatch
# Names InfluxDB refuses as a field key, or that would shadow a registry tag in queries
# (device_registry.directory.ENRICHMENT_TAGS; a test keeps the two in step).
RESERVED_METRIC_NAMES: Final = frozenset(
    {"time", "device_id", "family", "site", "kecamatan", "kelurahan", "team", "model"}
)
# Every integer in a message must fit InfluxDB's int64.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1

MetricValue = float | int | bool | str
MetricType = Literal["float", "int", "bool", "str"]
MetricKind = Literal["number", "integer", "boolean", "string"]
METRIC_KINDS: Final[tuple[MetricKind, ...]] = ("number", "integer", "boolean", "string")
KIND_OF_TYPE: Final[Mapping[MetricType, MetricKind]] = {
    "float": "number",
    "int": "integer",
    "bool": "boolean",
    "str": "string",
}
TYPE_OF_KIND: Final[Mapping[MetricKind, MetricType]] = {v: k for k, v in KIND_OF_TYPE.items()}

StatusWord = Literal["online", "offline"]


class ContractError(ValueError):
    """An input or output breaks the contract; ``reason`` is the dead-letter reason's value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# -- topics ---------------------------------------------------------------------------------
def device_topic(device_id: str, kind: MessageKind) -> str:
    """``kota/v1/dev/{device_id}/{kind}``: what a device publishes itself."""
    return f"{PREFIX}dev/{device_id}/{kind}"


def gateway_device_topic(gateway_id: str, device_id: str, kind: MessageKind) -> str:
    """``kota/v1/gw/{gateway_id}/dev/{device_id}/{kind}``: what a gateway sends for a device."""
    return f"{PREFIX}gw/{gateway_id}/dev/{device_id}/{kind}"


def gateway_status_topic(gateway_id: str) -> str:
    """``kota/v1/gw/{gateway_id}/status``: the gateway's (agent's) own retained status."""
    return f"{PREFIX}gw/{gateway_id}/status"


def command_topic(device_id: str, name: str) -> str:
    """``kota/v1/dev/{device_id}/cmd/{name}``: a command the hub sends a device."""
    return f"{PREFIX}dev/{device_id}/cmd/{name}"


def hub_probe_topic(client_id: str) -> str:
    """``kota/v1/hub/probe/{client_id}``: a hub worker's shared-subscription probe."""
    return f"{PREFIX}hub/probe/{client_id}"


def device_acl_prefix(device_id: str) -> str:
    """The prefix a device identity may publish under: ``kota/v1/dev/{device_id}/``."""
    return f"{PREFIX}dev/{device_id}/"


def gateway_acl_prefix(gateway_id: str) -> str:
    """The prefix a gateway identity may publish under: ``kota/v1/gw/{gateway_id}/``."""
    return f"{PREFIX}gw/{gateway_id}/"


def parse_topic(topic: str) -> tuple[str | None, str, MessageKind] | None:
    """``(gateway_id or None, device_id, kind)`` for a contract device topic, else None."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[0] == "kota" and parts[1] == "v1" and parts[2] == "dev":
        gateway, device, kind = None, parts[3], parts[4]
    elif (
        len(parts) == 7
        and parts[0] == "kota"
        and parts[1] == "v1"
        and parts[2] == "gw"
        and parts[4] == "dev"
    ):
        gateway, device, kind = parts[3], parts[5], parts[6]
    else:
        return None
    if not device or gateway == "" or kind not in _KINDS:
        return None
    return gateway, device, kind


# -- metrics ----------------------------------------------------------------------------------
def is_metric_name(name: str) -> bool:
    """True when ``name`` may be a metric: the naming rule and not a reserved name."""
    return METRIC_NAME.fullmatch(name) is not None and name not in RESERVED_METRIC_NAMES


def kind_of_type(metric_type: MetricType) -> MetricKind:
    """The schema kind of a drivers' metric type (``int`` -> ``integer``...)."""
    return KIND_OF_TYPE[metric_type]


def check_metric(name: str, value: object) -> MetricValue:
    """``value`` if ``name`` and ``value`` may be sent as a metric; else ContractError."""
    if not is_metric_name(name):
        raise ContractError("bad_metric_name", f"bad metric name {name[:80]!r}")
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise ContractError("out_of_range", f"metric {name}: {value} does not fit int64")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ContractError("not_finite", f"metric {name} is NaN or infinite")
        return value
    raise ContractError("wrong_type", f"metric {name} must be a number, boolean or string")


# -- telemetry and event payloads ------------------------------------------------------------------
def epoch_ms(ts: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (the contract's fast ``ts``)."""
    if ts.tzinfo is None:
        raise ValueError("ts must be timezone-aware")
    # timestamp() is a float: whole seconds plus the microseconds avoid its rounding.
    whole = int(ts.replace(microsecond=0).timestamp())
    return whole * 1000 + ts.microsecond // 1000


def readings_payload(
    metrics: Mapping[str, MetricValue], *, ts_ms: int | None, seq: int | None = None
) -> bytes:
    """A telemetry or event payload: ``{"ts": <epoch ms>, "seq": n, "metrics": {...}}``.

    ``ts_ms`` None leaves ``ts`` out (the hub then uses its receive time). Every name and
    value is checked first: orjson would write NaN as null, which the hub would refuse.
    """
    body: dict[str, object] = {}
    if ts_ms is not None:
        if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or not 0 < ts_ms < 10**16:
            raise ContractError("wrong_type", "ts must be epoch milliseconds (an integer)")
        body["ts"] = ts_ms
    if seq is not None:
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= INT_MAX:
            raise ContractError("wrong_type", "seq must be an integer from 0 to 2^63-1")
        body["seq"] = seq
    for name, value in metrics.items():
        kind_of = type(value)
        # Fast path: exact types; ``value - value`` is 0.0 only for a finite float.
        if (
            (
                (kind_of is float and value - value == 0.0)  # type: ignore[operator]
                or kind_of is bool
                or kind_of is str
                or (kind_of is int and INT_MIN <= value <= INT_MAX)  # type: ignore[operator]
            )
            and METRIC_NAME.fullmatch(name) is not None
            and name not in RESERVED_METRIC_NAMES
        ):
            continue
        check_metric(name, value)  # raises, naming the metric and the reason
    body["metrics"] = metrics if type(metrics) is dict else dict(metrics)
    return orjson.dumps(body)


telemetry_payload = readings_payload
event_payload = readings_payload


# -- status messages ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StatusMessage:
    """A parsed status message; ``online`` None is an empty (retained-clearing) message."""

    online: bool | None
    reason: str | None = None
    ts: object = None  # as sent: epoch ms, RFC 3339 text or None (the receive time)


def status_payload(online: bool, reason: str = "", *, ts_ms: int | None = None) -> bytes:
    """A status message: ``{"ts": <epoch ms>, "online": bool, "reason": "..."}``."""
    body: dict[str, object] = {}
    if ts_ms is not None:
        body["ts"] = ts_ms
    body["online"] = bool(online)
    if reason:
        body["reason"] = reason
    return orjson.dumps(body)


def plain_status(payload: bytes) -> bool | None:
    """True/False for ``online``/``offline`` as plain text or a JSON string, else None."""
    text = payload.strip()
    if len(text) > 2 and text[:1] == text[-1:] == b'"':
        text = text[1:-1]
    if text == b"online":
        return True
    if text == b"offline":
        return False
    return None


def status_from_object(data: Mapping[str, object]) -> StatusMessage:
    """The status in a JSON object ``{"online": bool, "reason": str, "ts": ...}``."""
    online = data.get("online")
    if not isinstance(online, bool):
        raise ContractError("wrong_type", "status needs a boolean 'online'")
    reason = data.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ContractError("wrong_type", "status reason must be a short string")
    return StatusMessage(online, reason, data.get("ts"))


def parse_status(payload: bytes) -> StatusMessage:
    """Any status message the hub accepts: empty, plain text, a JSON string or an object."""
    if not payload:
        return StatusMessage(None)
    plain = plain_status(payload)
    if plain is not None:
        return StatusMessage(plain)
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ContractError("not_json", "status is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise ContractError("not_object", f"status is a JSON {type(data).__name__}")
    return status_from_object(data)
