"""One device's message must never stop the city's ingest: hostile inputs on the real broker.

Each test publishes through the real Mosquitto to an in-process hub writing to the real
InfluxDB, then checks that the hub dead-lettered the bad message, acknowledged it, and
goes on writing the next good one; and that every loop is still alive (``/healthz``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.ingest import IngestService
from hub.ingest.write_ahead_log import WriteAheadLog
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, level_points, payload, wait_until


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _probe(service: IngestService, path: str) -> tuple[int, dict[str, Any]]:
    resp = httpx.get(f"http://127.0.0.1:{service.metrics_port}{path}", timeout=5)
    return resp.status_code, resp.json()


def _deadletters(stack: RunningStack, database: str, reason: str) -> int:
    rows = stack.influx.rows(
        f"SELECT count(\"count\") FROM deadletter WHERE reason = '{reason}'", database=database
    )
    return int(rows[0]["count"]) if rows else 0


def _acked_everything(service: IngestService) -> bool:
    return service.stats.messages_acked == service.stats.messages_in


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_lone_surrogates_are_dead_lettered_and_ingest_goes_on(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    protocol: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    service = hubs.start(mqtt_protocol=protocol)
    publisher = mqtt_client()
    # Valid JSON (orjson refuses it, the json module reads it), invalid Unicode: this
    # once killed the flusher for good, and its redelivery killed it again after a restart.
    publisher.publish(f"kota/v1/dev/{gauge}/telemetry", b'{"metrics": {"note": "\\ud800"}}')
    publisher.publish(f"kota/v1/dev/{gauge}/status", b'{"online": false, "reason": "\\udfff"}')
    publisher.publish(f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 1.5}, ts=_now_ms()))
    wait_until(lambda: level_points(running_stack, influx_db) == 1, what="the good reading")
    wait_until(
        lambda: _deadletters(running_stack, influx_db, "bad_text") == 2,
        what="two bad_text dead-letters",
    )
    wait_until(lambda: _acked_everything(service), what="every message acknowledged")
    status, body = _probe(service, "/healthz")
    assert status == 200, body
    assert body["threads"]["ingest-flusher"]["restarts"] == 0
    # The operator's log names the first rejection of the device and reason, once.
    told = [r.getMessage() for r in caplog.records if r.name == "hub.ingest.deadletter"]
    assert len(told) == 1, told
    assert told[0].startswith(f"dead-letter bad_text from device '{gauge}'")


def test_huge_seq_is_refused_and_housekeeping_goes_on(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    gauge, late = f"{unique_id}-g1", f"{unique_id}-late"
    hubs.devices(device(gauge))
    service = hubs.start(self_metrics_interval_s=1.0)
    publisher = mqtt_client()
    topic = f"kota/v1/dev/{gauge}/telemetry"
    publisher.publish(topic, payload({"level_m": 1.0}, ts=_now_ms(), seq=0))
    publisher.publish(topic, payload({"level_m": 2.0}, ts=_now_ms() + 1, seq=10**400))
    wait_until(lambda: _deadletters(running_stack, influx_db, "wrong_type") == 1, what="refusal")
    # Past the next self-metrics tick, housekeeping still runs: hub points are written
    # and a device registered now is accepted (the device list is refreshed).
    before = len(running_stack.influx.rows("SELECT * FROM hub", database=influx_db))
    wait_until(
        lambda: len(running_stack.influx.rows("SELECT * FROM hub", database=influx_db)) > before,
        what="a hub point after the huge seq",
    )
    hubs.devices(device(gauge), device(late))
    wait_until(lambda: service.directory.get(late) is not None, what="the device list refresh")
    publisher.publish(f"kota/v1/dev/{late}/telemetry", payload({"level_m": 3.0}, ts=_now_ms()))
    wait_until(lambda: level_points(running_stack, influx_db) == 2, what="the new device's point")
    assert not service.stats.housekeeping_errors
    assert _probe(service, "/healthz")[0] == 200


def test_a_failing_loop_is_restarted_and_visible(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    service = hubs.start()
    post = service._post
    failures = {"left": 2}

    def flaky_post(*args: Any, **kwargs: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("injected writer bug")
        post(*args, **kwargs)

    monkeypatch.setattr(service, "_post", flaky_post)
    publisher = mqtt_client()
    publisher.publish(f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 1.5}, ts=_now_ms()))
    wait_until(lambda: level_points(running_stack, influx_db) == 1, what="the point, after retries")
    status, body = _probe(service, "/healthz")
    assert status == 200, body
    assert body["threads"]["ingest-writer"]["restarts"] == 2
    assert "injected writer bug" in body["threads"]["ingest-writer"]["last_error"]
    metrics = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).text
    assert 'thread="ingest-writer"} 2' in metrics
    wait_until(lambda: _probe(service, "/readyz")[0] == 200, what="ready again")


def test_a_handler_bug_dead_letters_the_message_and_acks_it(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad, good = f"{unique_id}-bad", f"{unique_id}-good"
    hubs.devices(device(bad), device(good))
    service = hubs.start()
    seen = service.status.seen

    def buggy_seen(record: Any, received: int) -> Any:
        if record.device_id == bad:
            raise KeyError("injected tracker bug")
        return seen(record, received)

    monkeypatch.setattr(service.status, "seen", buggy_seen)
    publisher = mqtt_client()
    publisher.publish(f"kota/v1/dev/{bad}/telemetry", payload({"level_m": 9.0}, ts=_now_ms()))
    publisher.publish(f"kota/v1/dev/{good}/telemetry", payload({"level_m": 1.0}, ts=_now_ms()))
    wait_until(lambda: level_points(running_stack, influx_db) == 1, what="the good point")
    wait_until(lambda: _deadletters(running_stack, influx_db, "hub_error") == 1, what="hub_error")
    wait_until(lambda: _acked_everything(service), what="both acknowledged")
    rows = running_stack.influx.rows(
        "SELECT * FROM deadletter WHERE reason = 'hub_error'", database=influx_db
    )
    assert rows[0]["device_id"] == bad
    assert "injected tracker bug" in rows[0]["detail"]


def test_readiness_reports_the_broker_connection(hubs: HubFactory, unique_id: str) -> None:
    service = hubs.start()
    status, body = _probe(service, "/readyz")
    assert status == 200, body
    assert body["checks"] == {
        "threads": True,
        "broker_connected": True,
        "wal_writable": True,
        "writer": True,
    }
    metrics = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).text
    client = service.client_id
    assert f'kotahub_ingest_mqtt_connect_failures_total{{hub="{client}"}} 0' in metrics
    assert f'kotahub_ingest_mqtt_connection_losses_total{{hub="{client}"}} 0' in metrics
    assert service._intake is not None
    service._intake.stop()  # as if the broker were gone
    status, body = _probe(service, "/readyz")
    assert status == 503
    assert body["checks"]["broker_connected"] is False
    assert _probe(service, "/healthz")[0] == 200  # alive, just not ready


def test_a_torn_wal_tail_is_counted_and_shown(
    hubs: HubFactory, running_stack: RunningStack, influx_db: str, unique_id: str
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    settings = hubs.settings()
    wal_dir = Path(str(settings.ingest.wal_dir))
    wal = WriteAheadLog(wal_dir)
    for n in range(3):
        wal.append(f"flood,device_id={gauge} level_m={n}.5 {_now_ms() - 10_000 + n}".encode())
    wal.sync()
    wal.close()
    (segment,) = sorted(wal_dir.glob("*.wal"))
    with open(segment, "ab") as handle:
        handle.write(b"\x00\x00\x01\x00torn")  # a record header and part of its body
    service = hubs.start()
    wait_until(lambda: level_points(running_stack, influx_db) == 3, what="the 3 whole records")
    metrics = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).text
    client = settings.ingest.client_id
    assert f'kotahub_ingest_wal_corrupt_tail_bytes{{hub="{client}"}} 8' in metrics
