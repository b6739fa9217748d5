"""The device type's metrics are the schema: on the real broker and InfluxDB, and in the decoder.

Issue 11, section 2: one device created 2,000 field keys with 10 messages; integers became
floats (``9223372036854775808`` was written as ``9.223372036854776e18``); a device sending
``level_m`` as a string for a day made every other gauge's ``level_m`` of that day
``refused_by_influx``, since InfluxDB fixes a field's type per measurement and shard.
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt

from device_registry.directory import SnapshotDirectory
from drivers.contract import DEADLETTER_TOPIC, INT_MAX, device_topic
from hub.ingest.contract_decoder import Accepted, ContractDecoder, Reason, Rejected
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, payload, wait_until

GAUGE_SCHEMA = {"level_m": "number", "pumps_running": "integer", "sensor_status": "string"}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _field_types(stack: RunningStack, database: str, measurement: str) -> dict[str, str]:
    rows = stack.influx.rows(f'SHOW FIELD KEYS FROM "{measurement}"', database=database)
    return {str(r["fieldKey"]): str(r["fieldType"]) for r in rows}


def _reasons(messages: list[mqtt.MQTTMessage]) -> list[str]:
    return [json.loads(m.payload)["reason"] for m in messages]


def test_undeclared_metrics_create_no_field_keys(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge, metrics=GAUGE_SCHEMA))
    hubs.start()
    watcher = mqtt_client()
    watcher.keep_only(unique_id)
    watcher.subscribe(DEADLETTER_TOPIC)
    publisher = mqtt_client()
    topic = device_topic(gauge, "telemetry")
    ts = _now_ms() - 60_000
    for message in range(10):
        invented = {f"m{message}_{i}": float(i) for i in range(200)}
        publisher.publish(topic, payload(invented, ts=ts + message))
    publisher.publish(topic, payload({"level_m": 1.5}, ts=ts + 100))

    reports = watcher.wait_for(10, timeout_s=15)
    assert _reasons(reports) == ["metric_not_in_type"] * 10
    assert "is not in device type vegapuls-c21" in json.loads(reports[0].payload)["detail"]
    wait_until(
        lambda: bool(running_stack.influx.rows("SELECT level_m FROM flood", database=influx_db)),
        what="the valid reading",
    )
    # 2,000 invented names, no new field key: only the declared metric that was sent.
    assert _field_types(running_stack, influx_db, "flood") == {"level_m": "float"}


def test_integers_stay_integers_and_out_of_range_is_refused(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge, metrics=GAUGE_SCHEMA))
    hubs.start()
    watcher = mqtt_client()
    watcher.keep_only(unique_id)
    watcher.subscribe(DEADLETTER_TOPIC)
    publisher = mqtt_client()
    topic = device_topic(gauge, "telemetry")
    ts = _now_ms() - 60_000
    # Raw text: json.dumps would write these exactly too, but the point is the literal.
    publisher.publish(topic, f'{{"ts":{ts},"metrics":{{"pumps_running":9223372036854775808}}}}')
    publisher.publish(topic, f'{{"ts":{ts + 1},"metrics":{{"pumps_running":1.5}}}}')
    publisher.publish(
        topic, f'{{"ts":{ts + 2},"metrics":{{"pumps_running":9223372036854775807,"level_m":2}}}}'
    )

    reports = watcher.wait_for(2, timeout_s=15)
    assert _reasons(reports) == ["out_of_range", "wrong_type"]
    assert "does not fit 64 bits" in json.loads(reports[0].payload)["detail"]

    def rows() -> list[dict[str, object]]:
        return running_stack.influx.rows(
            "SELECT pumps_running, level_m FROM flood", database=influx_db
        )

    wait_until(lambda: bool(rows()), what="the int64 reading")
    (row,) = rows()
    assert row["time"] == ts + 2
    assert row["pumps_running"] == INT_MAX
    assert type(row["pumps_running"]) is int
    # An integer sent for a float metric is that float.
    assert row["level_m"] == 2.0
    assert _field_types(running_stack, influx_db, "flood") == {
        "pumps_running": "integer",
        "level_m": "float",
    }


def test_one_device_sending_the_wrong_type_spoils_nobody_elses_day(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    broken, healthy = f"{unique_id}-broken", f"{unique_id}-healthy"
    hubs.devices(device(broken, metrics=GAUGE_SCHEMA), device(healthy, metrics=GAUGE_SCHEMA))
    hubs.start()
    watcher = mqtt_client()
    watcher.keep_only(unique_id)
    watcher.subscribe(DEADLETTER_TOPIC)
    publisher = mqtt_client()
    ts = _now_ms() - 60_000
    publisher.publish(device_topic(broken, "telemetry"), payload({"level_m": "high"}, ts=ts))
    reports = watcher.wait_for(1, timeout_s=15)
    assert _reasons(reports) == ["wrong_type"]
    publisher.publish(device_topic(healthy, "telemetry"), payload({"level_m": 1.25}, ts=ts + 1))

    def rows() -> list[dict[str, object]]:
        return running_stack.influx.rows("SELECT level_m, device_id FROM flood", database=influx_db)

    wait_until(lambda: bool(rows()), what="the healthy gauge's reading")
    assert [(r["device_id"], r["level_m"]) for r in rows()] == [(healthy, 1.25)]
    refused = running_stack.influx.rows(
        "SELECT count(\"count\") FROM deadletter WHERE reason = 'refused_by_influx'",
        database=influx_db,
    )
    assert not refused
    assert _field_types(running_stack, influx_db, "flood") == {"level_m": "float"}


# -- the decoder alone ---------------------------------------------------------------------------
NOW = 1_795_000_000_000


def _decode(decoder: ContractDecoder, device_id: str, body: bytes) -> Accepted | Rejected:
    return decoder.decode(device_topic(device_id, "telemetry"), body, NOW)


def test_reject_mode_names_the_metric_and_the_type() -> None:
    decoder = ContractDecoder(SnapshotDirectory([device("g1", metrics=GAUGE_SCHEMA)]))
    unknown = _decode(decoder, "g1", b'{"metrics": {"level_m": 1.0, "flow_m3s": 2.0}}')
    bad_name = _decode(decoder, "g1", b'{"metrics": {"Level": 1.0}}')
    assert isinstance(unknown, Rejected)
    assert unknown.reason is Reason.METRIC_NOT_IN_TYPE
    assert unknown.detail == "metric 'flow_m3s' is not in device type vegapuls-c21"
    # A name the contract forbids says so, rather than "not in the type".
    assert isinstance(bad_name, Rejected)
    assert bad_name.reason is Reason.BAD_METRIC_NAME
    assert decoder.metric_types == {}  # reject mode learns nothing


def test_kinds_are_enforced_per_declared_kind() -> None:
    decoder = ContractDecoder(SnapshotDirectory([device("g1", metrics=GAUGE_SCHEMA)]))
    cases = [
        (b'{"metrics": {"pumps_running": 3}}', "pumps_running=3i"),
        (
            b'{"metrics": {"pumps_running": -9223372036854775808}}',
            "pumps_running=-9223372036854775808i",
        ),
        (b'{"metrics": {"level_m": 3}}', "level_m=3.0"),
        (b'{"metrics": {"level_m": 1e19}}', "level_m=1e+19"),
        (b'{"metrics": {"sensor_status": "ok"}}', 'sensor_status="ok"'),
    ]
    for body, field in cases:
        result = _decode(decoder, "g1", body)
        assert isinstance(result, Accepted), (body, result)
        assert f" {field} " in result.lines[0], (body, result.lines)
    refusals = [
        (b'{"metrics": {"pumps_running": 3.0}}', Reason.WRONG_TYPE),
        (b'{"metrics": {"pumps_running": true}}', Reason.WRONG_TYPE),
        (b'{"metrics": {"pumps_running": -9223372036854775809}}', Reason.OUT_OF_RANGE),
        (b'{"metrics": {"pumps_running": 1' + b"0" * 40 + b"}}", Reason.OUT_OF_RANGE),
        (b'{"metrics": {"level_m": "1.5"}}', Reason.WRONG_TYPE),
        (b'{"metrics": {"level_m": 9223372036854775808}}', Reason.OUT_OF_RANGE),
        (b'{"metrics": {"sensor_status": 1}}', Reason.WRONG_TYPE),
        (b'{"metrics": {"pumps_running": NaN}}', Reason.NOT_FINITE),
    ]
    for body, reason in refusals:
        result = _decode(decoder, "g1", body)
        assert isinstance(result, Rejected), body
        assert result.reason is reason, (body, result.detail)


def test_learn_mode_accepts_new_metrics_and_types_them_per_measurement() -> None:
    directory = SnapshotDirectory(
        [
            device("g1", metrics=GAUGE_SCHEMA),
            device("g2", device_type="other", metrics={}),
            device("c1", family="cctv", metrics={}),
        ]
    )
    decoder = ContractDecoder(directory, unknown_metrics="learn")
    first = _decode(decoder, "g1", b'{"metrics": {"flow_m3s": 2, "level_m": 1.0}}')
    assert isinstance(first, Accepted)
    assert " flow_m3s=2.0,level_m=1.0 " in first.lines[0]  # a learned number is a float
    # g2's type declares nothing, but the flood measurement already knows both fields.
    assert isinstance(_decode(decoder, "g2", b'{"metrics": {"flow_m3s": "x"}}'), Rejected)
    assert isinstance(_decode(decoder, "g2", b'{"metrics": {"pumps_running": 1.5}}'), Rejected)
    two = _decode(decoder, "g2", b'{"metrics": {"pumps_running": 2}}')
    assert isinstance(two, Accepted)
    assert " pumps_running=2i " in two.lines[0]
    # Another measurement has fields of its own.
    assert isinstance(_decode(decoder, "c1", b'{"metrics": {"flow_m3s": "x"}}'), Accepted)
    assert decoder.metric_types["flood"]["flow_m3s"] == "number"
    assert decoder.metric_types["cctv"] == {"flow_m3s": "string"}
