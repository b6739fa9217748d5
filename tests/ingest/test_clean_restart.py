"""A clean stop leaves nothing to replay; a crash (or an unwritten tail) still replays."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from hub.ingest import IngestService
from hub.ingest.write_ahead_log import WriteAheadLog
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, level_points, payload, wait_until


def test_close_discards_what_is_written_downstream(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "all")
    wal.append(b"a")
    written = wal.sync()
    wal.close(written=written)
    assert not list((tmp_path / "all").glob("*.wal"))
    assert WriteAheadLog(tmp_path / "all").recovered_records == 0

    wal = WriteAheadLog(tmp_path / "part")
    wal.append(b"a")
    first = wal.sync()
    wal.append(b"b")
    wal.sync()
    wal.close(written=first)  # "b" is not in InfluxDB yet: both stay (replay is idempotent)
    reopened = WriteAheadLog(tmp_path / "part")
    try:
        assert reopened.recovered_records == 2
        records, _ = reopened.read(reopened.first_position(), 1 << 20)
        assert records == [b"a", b"b"]
    finally:
        reopened.close()


def test_clean_restart_replays_nothing(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    service = hubs.start()
    publisher = mqtt_client()
    now = time.time_ns() // 1_000_000
    for n in range(30):
        publisher.publish(f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": n}, ts=now + n))
    wait_until(lambda: level_points(running_stack, influx_db) == 30, what="30 points")
    service.stop()
    caplog.clear()
    caplog.set_level(logging.INFO, "hub.ingest.ingest_service")
    again = IngestService(service.settings, running_stack.mqtt_password)
    again.start()
    hubs.hubs.append(again)
    assert again.wal is not None
    assert again.wal.recovered_records == 0
    assert not [r for r in caplog.records if "replaying" in r.getMessage()]
