"""The contract module: topics, payloads, status messages, metric names and kinds, ACL prefixes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import get_args

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_registry.directory import ENRICHMENT_TAGS
from device_registry.schemas import MetricSpec
from drivers import contract
from drivers.contract import (
    DEADLETTER_TOPIC,
    INT_MAX,
    INT_MIN,
    KIND_OF_TYPE,
    METRIC_KINDS,
    SUBSCRIPTION_FILTERS,
    TYPE_OF_KIND,
    ContractError,
    StatusMessage,
    device_acl_prefix,
    device_topic,
    epoch_ms,
    gateway_acl_prefix,
    gateway_device_topic,
    gateway_status_topic,
    is_metric_name,
    parse_status,
    parse_topic,
    readings_payload,
    status_payload,
)


def test_topics_round_trip_through_the_parser() -> None:
    assert device_topic("g1", "telemetry") == "kota/v1/dev/g1/telemetry"
    assert gateway_device_topic("gw1", "g1", "event") == "kota/v1/gw/gw1/dev/g1/event"
    assert gateway_status_topic("gw1") == "kota/v1/gw/gw1/status"
    assert DEADLETTER_TOPIC == "kota/v1/hub/deadletter"
    for kind in contract.MESSAGE_KINDS:
        assert parse_topic(device_topic("g1", kind)) == (None, "g1", kind)
        assert parse_topic(gateway_device_topic("gw1", "g1", kind)) == ("gw1", "g1", kind)
    for bad in (
        "kota/v1/dev/g1/cmd",
        "kota/v1/dev//telemetry",
        "kota/v1/gw//dev/g1/telemetry",
        "kota/v1/gw/gw1/status",  # the agent's own status: not a device's
        "kota/v2/dev/g1/telemetry",
        DEADLETTER_TOPIC,
    ):
        assert parse_topic(bad) is None, bad


def test_subscription_filters_cover_every_device_topic_and_nothing_else() -> None:
    assert set(SUBSCRIPTION_FILTERS) == {
        "kota/v1/dev/+/telemetry",
        "kota/v1/dev/+/event",
        "kota/v1/dev/+/status",
        "kota/v1/gw/+/dev/+/telemetry",
        "kota/v1/gw/+/dev/+/event",
        "kota/v1/gw/+/dev/+/status",
    }


def test_acl_prefixes_contain_exactly_the_identity_topics() -> None:
    assert device_acl_prefix("g1") == "kota/v1/dev/g1/"
    assert gateway_acl_prefix("gw1") == "kota/v1/gw/gw1/"
    for kind in contract.MESSAGE_KINDS:
        assert device_topic("g1", kind).startswith(device_acl_prefix("g1"))
        assert gateway_device_topic("gw1", "g1", kind).startswith(gateway_acl_prefix("gw1"))
    assert gateway_status_topic("gw1").startswith(gateway_acl_prefix("gw1"))
    assert not device_topic("g10", "telemetry").startswith(device_acl_prefix("g1"))


def test_readings_payload_is_compact_json_with_epoch_ms() -> None:
    ts = datetime(2026, 11, 22, 10, 0, 0, 123999, tzinfo=UTC)
    body = readings_payload(
        {"level_m": -0.5, "pump_on": True, "pumps_running": 2, "sensor_status": "ok"},
        ts_ms=epoch_ms(ts),
        seq=42,
    )
    assert body == (
        b'{"ts":1795341600123,"seq":42,"metrics":'
        b'{"level_m":-0.5,"pump_on":true,"pumps_running":2,"sensor_status":"ok"}}'
    )
    assert readings_payload({}, ts_ms=None) == b'{"metrics":{}}'


def test_epoch_ms_truncates_like_the_hub_and_needs_a_zone() -> None:
    plus7 = timezone(timedelta(hours=7))
    assert epoch_ms(datetime(1970, 1, 1, 7, 0, 0, 1999, tzinfo=plus7)) == 1
    with pytest.raises(ValueError, match="aware"):
        epoch_ms(datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({"Level": 1.0}, "bad_metric_name"),
        ({"site": 1.0}, "bad_metric_name"),
        ({"level_m": math.nan}, "not_finite"),
        ({"level_m": math.inf}, "not_finite"),
        ({"n": INT_MAX + 1}, "out_of_range"),
        ({"n": INT_MIN - 1}, "out_of_range"),
        ({"n": [1]}, "wrong_type"),
        ({"n": None}, "wrong_type"),
    ],
)
def test_readings_payload_refuses_what_the_hub_would(
    metrics: dict[str, object], reason: str
) -> None:
    with pytest.raises(ContractError) as caught:
        readings_payload(metrics, ts_ms=1)  # type: ignore[arg-type]
    assert caught.value.reason == reason


def test_readings_payload_refuses_bad_ts_and_seq() -> None:
    with pytest.raises(ContractError):
        readings_payload({}, ts_ms=True)
    with pytest.raises(ContractError):
        readings_payload({}, ts_ms=1, seq=-1)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True).filter(is_metric_name),
        st.floats(allow_nan=False, allow_infinity=False)
        | st.integers(INT_MIN, INT_MAX)
        | st.booleans()
        | st.text(max_size=20),
        max_size=8,
    ),
    st.integers(1, 10**15),
)
def test_readings_payload_round_trips(metrics: dict[str, contract.MetricValue], ts: int) -> None:
    body = orjson.loads(readings_payload(metrics, ts_ms=ts, seq=7))
    assert body == {"ts": ts, "seq": 7, "metrics": metrics}


def test_status_payload_and_every_accepted_status_form() -> None:
    assert orjson.loads(status_payload(False, "agent stopped", ts_ms=5)) == {
        "ts": 5,
        "online": False,
        "reason": "agent stopped",
    }
    assert status_payload(True) == b'{"online":true}'
    assert parse_status(status_payload(False, "lwt", ts_ms=5)) == StatusMessage(False, "lwt", 5)
    assert parse_status(b"online") == StatusMessage(True)
    assert parse_status(b' "offline" ') == StatusMessage(False)
    assert parse_status(b"") == StatusMessage(None)
    for bad, reason in (
        (b"maybe", "not_json"),
        (b"[1]", "not_object"),
        (b'{"online": 1}', "wrong_type"),
    ):
        with pytest.raises(ContractError) as caught:
            parse_status(bad)
        assert caught.value.reason == reason


def test_one_kind_vocabulary_mapped_one_to_one() -> None:
    assert set(KIND_OF_TYPE.values()) == set(METRIC_KINDS)
    assert {TYPE_OF_KIND[k] for k in METRIC_KINDS} == set(KIND_OF_TYPE)
    # The registry's metric kinds are exactly the contract's.
    assert get_args(MetricSpec.model_fields["kind"].annotation) == METRIC_KINDS


def test_reserved_names_are_the_registry_tags_and_influx_keys() -> None:
    assert {"time", "device_id", "family", *ENRICHMENT_TAGS} == contract.RESERVED_METRIC_NAMES
