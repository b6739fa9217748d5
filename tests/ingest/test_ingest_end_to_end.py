"""End to end against the real Mosquitto and InfluxDB: message -> point, tags, status."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, level_points, payload, wait_until

PROTOCOLS = ["3.1.1", "5"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_message_becomes_point_with_registry_tags(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    protocol: str,
) -> None:
    gauge, camera, gateway = f"{unique_id}-g1", f"{unique_id}-c1", f"{unique_id}-gw"
    hubs.devices(device(gauge), device(camera, family="cctv", gateway_id=gateway, tags={}))
    hubs.start(mqtt_protocol=protocol)
    publisher = mqtt_client()
    ts = _now_ms() - 5000
    metrics = {"level_m": 1.25, "pump_on": True, "sensor_status": "ok", "count": 3}
    publisher.publish(f"kota/v1/dev/{gauge}/telemetry", payload(metrics, ts=ts, seq=1))
    publisher.publish(
        f"kota/v1/gw/{gateway}/dev/{camera}/event", payload({"tamper": True}, ts=ts, seq=7)
    )

    def flood_rows() -> list[dict[str, object]]:
        return running_stack.influx.rows("SELECT * FROM flood", database=influx_db)

    wait_until(lambda: len(flood_rows()) == 1, what="the flood point")
    row = flood_rows()[0]
    assert row["time"] == ts
    assert row["level_m"] == 1.25
    assert row["pump_on"] is True
    assert row["sensor_status"] == "ok"
    assert row["count"] == 3.0
    assert row["device_id"] == gauge
    assert row["family"] == "flood"
    assert row["site"] == "Kali Banger"
    assert row["kecamatan"] == "Semarang Timur"
    assert row["team"] == "pompa-1"
    wait_until(
        lambda: bool(running_stack.influx.rows("SELECT * FROM cctv_event", database=influx_db)),
        what="the cctv event point",
    )
    event = running_stack.influx.rows("SELECT * FROM cctv_event", database=influx_db)[0]
    assert event["tamper"] is True
    assert event["device_id"] == camera
    assert event["time"] == ts


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redelivered_message_is_written_once(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    protocol: str,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    service = hubs.start(mqtt_protocol=protocol)
    publisher = mqtt_client()
    base = _now_ms() - 60_000
    for seq in range(10):
        body = payload({"level_m": float(seq)}, ts=base + seq * 1000, seq=seq)
        publisher.publish(f"kota/v1/dev/{gauge}/telemetry", body)
        if seq % 3 == 0:  # the same message again, as the broker would redeliver it
            publisher.publish(f"kota/v1/dev/{gauge}/telemetry", body)
    wait_until(lambda: service.stats.messages_in == 14, what="14 messages in")

    wait_until(lambda: service.stats.lines_written >= 14, what="14 lines written")
    assert level_points(running_stack, influx_db) == 10
    assert service.stats.seq_gaps_total == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_acked_messages_are_not_redelivered_but_queued_ones_are(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    protocol: str,
) -> None:
    """The grouped PUBACKs reach the broker; the persistent session queues while away."""
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    first = hubs.start("same", mqtt_protocol=protocol)
    publisher = mqtt_client()
    base = _now_ms() - 60_000
    topic = f"kota/v1/dev/{gauge}/telemetry"
    for seq in range(300):
        publisher.client.publish(topic, payload({"level_m": 1.0}, ts=base + seq, seq=seq), qos=1)
    publisher.publish(topic, payload({"level_m": 1.0}, ts=base + 300, seq=300))
    wait_until(lambda: first.stats.messages_acked == 301, what="301 acks")
    first.stop()
    for seq in range(301, 311):  # queued by the broker for the stopped hub's session
        publisher.publish(topic, payload({"level_m": 1.0}, ts=base + seq, seq=seq))
    second = hubs.start("same", mqtt_protocol=protocol)
    wait_until(lambda: second.stats.messages_acked >= 10, what="the queued messages")
    time.sleep(0.5)  # a redelivery of acked messages would arrive with the queued ones
    assert second.stats.messages_in == 10
    assert second.stats.seq_gaps_total == 0

    wait_until(lambda: level_points(running_stack, influx_db) == 311, what="311 points")


def test_metrics_endpoint_and_hub_measurement(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    service = hubs.start(self_metrics_interval_s=1.0)
    publisher = mqtt_client()
    for seq in (1, 2, 5):  # 3 and 4 never arrive: a gap of two
        publisher.publish(
            f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 1.0}, ts=_now_ms(), seq=seq)
        )
    publisher.publish(f"kota/v1/dev/{gauge}/telemetry", b"not json")
    wait_until(lambda: service.stats.lines_written >= 4, what="lines written")
    text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).text
    hub = f'hub="{service.client_id}"'
    assert f"kotahub_ingest_messages_total{{{hub}}} 4" in text
    assert f'kotahub_ingest_deadletters_total{{{hub},reason="not_json"}} 1' in text
    assert f"kotahub_ingest_seq_gaps_total{{{hub}}} 2" in text
    assert f'kotahub_ingest_device_seq_gaps_total{{{hub},device_id="{gauge}"}} 2' in text
    assert "# TYPE kotahub_ingest_write_seconds histogram" in text
    assert "kotahub_ingest_wal_bytes" in text
    assert httpx.get(f"http://127.0.0.1:{service.metrics_port}/other", timeout=5).status_code == 404

    def busy_seconds() -> float:
        """The intake's busy seconds (housekeeping copies them to /metrics each second)."""
        page = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).text
        found = re.search(
            rf"^kotahub_ingest_intake_busy_seconds_total\{{{hub}\}} (\S+)$", page, re.M
        )
        return float(found.group(1)) if found else -1.0

    # Four messages handled: some time in the handler, far less than a second of it.
    wait_until(lambda: 0 < busy_seconds() < 1, what="intake busy seconds")

    def hub_rows() -> list[dict[str, object]]:
        return running_stack.influx.rows(
            "SELECT * FROM hub WHERE device_id = ''", database=influx_db
        )

    wait_until(lambda: any(r["messages_in"] == 4.0 for r in hub_rows()), what="hub measurement")
    row = next(r for r in hub_rows() if r["messages_in"] == 4.0)
    assert row["hub"] == service.client_id
    assert row["deadletter_not_json"] == 1.0
    assert row["seq_gaps"] == 2.0
    assert isinstance(row["messages_in_per_s"], float)
    gaps = running_stack.influx.rows(
        f"SELECT seq_gaps FROM hub WHERE device_id = '{gauge}'", database=influx_db
    )
    assert gaps
    assert gaps[-1]["seq_gaps"] == 2.0
    json.dumps(row)  # plain values only
