"""The decoder alone: contract rules, and hypothesis throwing arbitrary input at it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_registry.directory import SnapshotDirectory
from hub.ingest.contract_decoder import (
    MAX_PAYLOAD_BYTES,
    Accepted,
    ContractDecoder,
    Reason,
    Rejected,
    parse_topic,
)
from tests.ingest.conftest import device

NOW = 1_795_000_000_000
TOPIC = "kota/v1/dev/g1/telemetry"


def _decoder() -> ContractDecoder:
    return ContractDecoder(
        SnapshotDirectory(
            [device("g1"), device("r1", state="retired"), device("c1", gateway_id="gw1")]
        )
    )


def _decode(body: Any, topic: str = TOPIC) -> Accepted | Rejected:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _decoder().decode(topic, raw, NOW)


def test_accepts_rfc3339_and_epoch_ms_and_missing_ts() -> None:
    a = _decode({"ts": "2026-11-18T08:50:00.123Z", "metrics": {"x": 1}})
    b = _decode({"ts": NOW - 10, "metrics": {"x": 1}})
    c = _decode({"metrics": {"x": 1}})
    assert isinstance(a, Accepted)
    assert isinstance(b, Accepted)
    assert isinstance(c, Accepted)
    assert b.time_ms == NOW - 10
    assert c.time_ms == NOW
    assert a.lines[0].endswith(f" {a.time_ms}")


def test_line_has_registry_tags_not_payload_tags() -> None:
    result = _decode({"metrics": {"level_m": 1.5, "on": False, "note": 'say "hi"'}})
    assert isinstance(result, Accepted)
    (line,) = result.lines
    assert line.startswith("flood,device_id=g1,family=flood,kecamatan=Semarang\\ Timur,")
    assert "site=Kali\\ Banger" in line
    assert 'level_m=1.5,on=false,note="say \\"hi\\""' in line


def test_gateway_may_speak_only_for_its_devices() -> None:
    ok = _decode({"metrics": {"x": 1}}, "kota/v1/gw/gw1/dev/c1/telemetry")
    bad = _decode({"metrics": {"x": 1}}, "kota/v1/gw/gw2/dev/c1/telemetry")
    assert isinstance(ok, Accepted)
    assert isinstance(bad, Rejected)
    assert bad.reason is Reason.FOREIGN_DEVICE


def test_status_payloads() -> None:
    decoder = _decoder()
    plain = decoder.decode("kota/v1/dev/g1/status", b"offline", NOW)
    quoted = decoder.decode("kota/v1/dev/g1/status", b'"online"', NOW)
    rich = decoder.decode("kota/v1/dev/g1/status", b'{"online": false, "reason": "lwt"}', NOW)
    bad = decoder.decode("kota/v1/dev/g1/status", b'{"online": "yes"}', NOW)
    cleared = decoder.decode("kota/v1/dev/g1/status", b"", NOW)
    assert isinstance(cleared, Accepted)
    assert cleared.online is None
    assert isinstance(plain, Accepted)
    assert plain.online is False
    assert isinstance(quoted, Accepted)
    assert quoted.online is True
    assert isinstance(rich, Accepted)
    assert rich.status_reason == "lwt"
    assert isinstance(bad, Rejected)
    assert bad.reason is Reason.WRONG_TYPE


def test_a_declared_metric_keeps_its_kind() -> None:
    decoder = _decoder()
    first = decoder.decode(TOPIC, b'{"metrics": {"x": 1}}', NOW)
    second = decoder.decode(TOPIC, b'{"metrics": {"x": true}}', NOW)
    other = decoder.decode("kota/v1/dev/r1/telemetry", b'{"metrics": {"x": true}}', NOW)
    assert isinstance(first, Accepted)
    assert isinstance(second, Rejected)
    assert second.reason is Reason.WRONG_TYPE
    assert isinstance(other, Rejected)
    assert other.reason is Reason.RETIRED_DEVICE


def _learning_decoder() -> ContractDecoder:
    """Learn mode over devices whose types declare nothing: every metric is learned."""
    return ContractDecoder(
        SnapshotDirectory([device("g1", metrics={}), device("c1", gateway_id="gw1", metrics={})]),
        unknown_metrics="learn",
    )


def test_learned_type_is_kept_per_measurement_and_metric() -> None:
    decoder = _learning_decoder()
    first = decoder.decode(TOPIC, b'{"metrics": {"zz": 1}}', NOW)
    # Another gauge of the same measurement: InfluxDB would refuse its boolean zz.
    other = decoder.decode("kota/v1/gw/gw1/dev/c1/telemetry", b'{"metrics": {"zz": true}}', NOW)
    assert isinstance(first, Accepted)
    assert isinstance(other, Rejected)
    assert other.reason is Reason.TYPE_CHANGED
    assert decoder.metric_types == {"flood": {"zz": "number"}}


def test_registry_changes_reach_a_topic_already_seen() -> None:
    directory = SnapshotDirectory([device("g1")])
    decoder = ContractDecoder(directory)
    body = b'{"metrics": {"x": 1}}'
    first = decoder.decode(TOPIC, body, NOW)
    assert isinstance(first, Accepted)
    assert "site=Kali\\ Banger" in first.lines[0]
    directory.replace([device("g1", tags={"site": "Kali Garang"})])
    moved = decoder.decode(TOPIC, body, NOW)
    assert isinstance(moved, Accepted)
    assert "site=Kali\\ Garang" in moved.lines[0]
    directory.replace([device("g1", state="retired")])
    retired = decoder.decode(TOPIC, body, NOW)
    assert isinstance(retired, Rejected)
    assert retired.reason is Reason.RETIRED_DEVICE
    directory.replace([device("g2")])
    unknown = decoder.decode(TOPIC, body, NOW)
    assert isinstance(unknown, Rejected)
    assert (unknown.reason, unknown.device_id) == (Reason.UNKNOWN_DEVICE, "g1")


def test_type_memory_reset_keeps_checking_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hub.ingest.contract_decoder.TYPE_MEMORY_LIMIT", 2)
    decoder = _learning_decoder()
    gateway_topic = "kota/v1/gw/gw1/dev/c1/telemetry"
    assert isinstance(decoder.decode(TOPIC, b'{"metrics": {"a": 1, "b": 2}}', NOW), Accepted)
    # A third name overflows the memory: it is forgotten and starts again with c1's.
    assert isinstance(decoder.decode(gateway_topic, b'{"metrics": {"x": 1}}', NOW), Accepted)
    assert decoder.type_memory_resets == 1
    assert decoder.metric_types == {"flood": {"x": "number"}}
    changed = decoder.decode(gateway_topic, b'{"metrics": {"x": true}}', NOW)
    assert isinstance(changed, Rejected)
    assert changed.reason is Reason.TYPE_CHANGED
    # a was forgotten: a boolean a is new to the hub, then remembered.
    assert isinstance(decoder.decode(TOPIC, b'{"metrics": {"a": true}}', NOW), Accepted)
    again = decoder.decode(TOPIC, b'{"metrics": {"a": 1}}', NOW)
    assert isinstance(again, Rejected)
    assert again.reason is Reason.TYPE_CHANGED


def test_reasons_for_bad_input() -> None:
    cases: list[tuple[Any, Reason]] = [
        (b"\x00\x01", Reason.NOT_JSON),
        (b"[[[[" * 5000, Reason.NOT_JSON),
        ("text", Reason.NOT_OBJECT),
        ({"metrics": []}, Reason.WRONG_TYPE),
        ({"metrics": {"x": None}}, Reason.WRONG_TYPE),
        ({"metrics": {"x": "a\nb"}}, Reason.BAD_TEXT),
        ({"metrics": {"x": "bell\x07"}}, Reason.BAD_TEXT),
        (b'{"metrics": {"note": "\\ud800"}}', Reason.BAD_TEXT),
        (b'{"metrics": {"note": "ok"}, "x": ["\\udfff"]}', Reason.BAD_TEXT),
        ({"seq": 10**400, "metrics": {}}, Reason.WRONG_TYPE),
        ({"seq": 2**63, "metrics": {}}, Reason.WRONG_TYPE),
        ({"metrics": {"x": 2**63}}, Reason.OUT_OF_RANGE),
        ({"metrics": {"x": -(2**63) - 1}}, Reason.OUT_OF_RANGE),
        ({"metrics": {"x": 2**64}}, Reason.OUT_OF_RANGE),  # orjson reads it as a float
        ({"metrics": {"x": 12345678901234567890123}}, Reason.OUT_OF_RANGE),
        ({"seq": -1, "metrics": {}}, Reason.WRONG_TYPE),
        ({"seq": True, "metrics": {}}, Reason.WRONG_TYPE),
        ({"ts": "yesterday", "metrics": {}}, Reason.WRONG_TYPE),
        ({"ts": "2026-11-18T08:50:00", "metrics": {}}, Reason.WRONG_TYPE),
        (b'{"ts": Infinity}', Reason.NOT_FINITE),
        ({"metrics": {"x": 10**400}}, Reason.OUT_OF_RANGE),
        (b'{"metrics": {"x": 1e400}}', Reason.NOT_FINITE),
        ({"ts": NOW - 8 * 86_400_000}, Reason.TS_TOO_OLD),
        ({"ts": NOW + 301_000}, Reason.TS_IN_FUTURE),
        ({"metrics": {"1x": 1}}, Reason.BAD_METRIC_NAME),
        ({"metrics": {"time": 1}}, Reason.BAD_METRIC_NAME),
        ({"metrics": {"site": "x"}}, Reason.BAD_METRIC_NAME),
        ({"metrics": {"a" * 65: 1}}, Reason.BAD_METRIC_NAME),
        ({"metrics": {f"m{i}": 1 for i in range(201)}}, Reason.TOO_MANY_METRICS),
        (b" " * (MAX_PAYLOAD_BYTES + 1), Reason.PAYLOAD_TOO_LARGE),
    ]
    for body, reason in cases:
        result = _decode(body)
        assert isinstance(result, Rejected), body
        assert result.reason is reason, (body, result)
    assert parse_topic("kota/v1/dev/g1/cmd") is None
    bad_topic = _decoder().decode("kota/v1/dev//telemetry", b"{}", NOW)
    assert isinstance(bad_topic, Rejected)
    assert bad_topic.reason is Reason.BAD_TOPIC
    unknown = _decode({"metrics": {}}, "kota/v1/dev/zz/telemetry")
    assert isinstance(unknown, Rejected)
    assert unknown.reason is Reason.UNKNOWN_DEVICE


def test_status_reason_must_be_storable_text() -> None:
    decoder = _decoder()
    for body in (
        b'{"online": false, "reason": "\\udfff"}',
        b'{"online": false, "reason": "two\\nlines"}',
        b'{"online": false, "reason": "nul\\u0000"}',
    ):
        result = decoder.decode("kota/v1/dev/g1/status", body, NOW)
        assert isinstance(result, Rejected), body
        assert result.reason is Reason.BAD_TEXT, body
    tab = decoder.decode("kota/v1/dev/g1/status", b'{"online": false, "reason": "a\\tb"}', NOW)
    assert isinstance(tab, Accepted)
    assert tab.status_reason == "a\tb"


def test_extreme_integers_are_bounded() -> None:
    top = _decode({"seq": 2**63 - 1, "metrics": {"x": 2**63 - 1, "y": -(2**63)}})
    assert isinstance(top, Accepted)
    assert top.seq == 2**63 - 1
    big_float = _decode(b'{"metrics": {"x": 1e19}}')
    assert isinstance(big_float, Accepted)
    assert " x=1e+19 " in big_float.lines[0]


def test_unknown_devices_share_one_deadletter_series() -> None:
    decoder = _decoder()
    lines = set()
    for n in range(50):
        result = decoder.decode(f"kota/v1/gw/gw1/dev/ghost{n}/telemetry", b"{}", NOW)
        assert isinstance(result, Rejected)
        assert result.reason is Reason.UNKNOWN_DEVICE
        line = result.deadletter_line()
        assert f'raw_device_id="ghost{n}"' in line
        lines.add(line.split(" ", 1)[0])
    assert lines == {"deadletter,device_id=_unknown,reason=unknown_device"}
    known = decoder.decode("kota/v1/gw/gw2/dev/c1/telemetry", b"{}", NOW)
    assert isinstance(known, Rejected)
    assert known.deadletter_line().startswith("deadletter,device_id=c1,reason=foreign_device ")


def _check(result: Accepted | Rejected) -> None:
    """Whatever came in: a valid result whose lines InfluxDB could parse."""
    if isinstance(result, Rejected):
        assert isinstance(result.reason, Reason)
        line = result.deadletter_line()
        assert "\n" not in line
        line.encode("utf-8")  # strict: what the flusher does with every line
        json.loads(result.deadletter_message())
        return
    for line in result.lines:
        assert "\n" not in line
        line.encode("utf-8")
        assert line.startswith("flood")
        assert line.endswith(f" {result.time_ms}")


TOPICS = st.sampled_from(
    [
        TOPIC,
        "kota/v1/dev/g1/event",
        "kota/v1/dev/g1/status",
        "kota/v1/gw/gw1/dev/c1/telemetry",
        "kota/v1/gw/gw9/dev/c1/status",
        "kota/v1/dev/nobody/telemetry",
    ]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=70), children, max_size=6)
    ),
    max_leaves=30,
)
METRICS = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True) | st.text(max_size=8),
    st.booleans() | st.floats() | st.integers() | st.text(max_size=40) | st.none(),
    max_size=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=TOPICS, raw=st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(topic: str, raw: bytes) -> None:
    _check(_decoder().decode(topic, raw, NOW))


@settings(max_examples=300, deadline=None)
@given(topic=TOPICS, value=JSON_VALUES)
def test_arbitrary_json_never_raises(topic: str, value: Any) -> None:
    raw = json.dumps(value, allow_nan=True).encode()
    _check(_decoder().decode(topic, raw, NOW))


@settings(max_examples=300, deadline=None)
@given(
    metrics=METRICS,
    ts=st.none() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=30),
    seq=st.none() | st.integers() | st.booleans(),
)
def test_contract_shaped_json(metrics: dict[str, Any], ts: Any, seq: Any) -> None:
    body: dict[str, Any] = {"metrics": metrics, "ts": ts, "seq": seq}
    result = _decoder().decode(TOPIC, json.dumps(body).encode(), NOW)
    _check(result)
    if isinstance(result, Accepted) and metrics:
        # Accepted means every metric was valid: finite numbers, bools, short strings.
        for value in metrics.values():
            assert value is not None
            if isinstance(value, float):
                assert math.isfinite(value)
