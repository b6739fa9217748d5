"""The WAL's disk fills: the hub stops acknowledging, says so, and resumes losing nothing.

The WAL lives on a real small filesystem (a tmpfs with a size limit, mounted for the
test: CI runs as root, like this machine's sessions), in front of the real Mosquitto and
InfluxDB.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub.ingest import IngestService
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, level_points, payload, wait_until

FS_BYTES = 4 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted under the test's folder."""
    mount_point = tmp_path / "walfs"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"this test needs root to mount a small tmpfs: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """Write a filler file until the filesystem is full; return its path."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(block)
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 512)
    return filler


def _metrics_text(service: IngestService) -> str:
    return httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).text


def test_full_disk_pauses_acks_and_resumes_without_loss(
    small_fs: Path,  # first: set up before the hub, so unmounted after it stopped
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    settings = hubs.settings(wal_dir=str(small_fs / "wal"))
    service = IngestService(settings, running_stack.mqtt_password, segment_bytes=256 * 1024)
    service.start()
    hubs.hubs.append(service)
    publisher = mqtt_client()
    topic = f"kota/v1/dev/{gauge}/telemetry"
    base = time.time_ns() // 1_000_000 - 60_000
    publisher.publish(topic, payload({"level_m": 0.0}, ts=base))
    wait_until(lambda: level_points(running_stack, influx_db) == 1, what="the first point")

    filler = _fill(small_fs)
    with pytest.raises(OSError) as full:
        (small_fs / "probe").write_bytes(b"x" * 65536)
    assert full.value.errno == errno.ENOSPC
    count = 300
    for n in range(1, count + 1):
        publisher.publish(topic, payload({"level_m": float(n)}, ts=base + n))
    wait_until(lambda: not service.readiness()[0], what="/readyz failing")
    status = httpx.get(f"http://127.0.0.1:{service.metrics_port}/readyz", timeout=5)
    assert status.status_code == 503
    assert status.json()["checks"]["wal_writable"] is False
    assert "disk full" in status.json()["wal_error"]
    assert "kotahub_ingest_wal_writable{" in _metrics_text(service)
    assert 'kotahub_ingest_wal_writable{hub="' + settings.ingest.client_id + '"} 0' in (
        _metrics_text(service)
    )
    acked, received = service.stats.messages_acked, service.stats.messages_in
    time.sleep(1.5)
    # Nothing more is acknowledged (or even read) while nothing can be made durable;
    # what came before the disk filled was made durable and acknowledged.
    assert service.stats.messages_acked == acked < count + 1
    assert service.stats.messages_in == received
    assert httpx.get(f"http://127.0.0.1:{service.metrics_port}/healthz").status_code == 200
    errors = [r for r in caplog.records if "WAL cannot be written" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in errors]

    filler.unlink()
    wait_until(
        lambda: level_points(running_stack, influx_db) == count + 1,
        timeout_s=30,
        what="every reading once space is back",
    )
    rows = running_stack.influx.rows("SELECT level_m FROM flood", database=influx_db)
    assert sorted(row["level_m"] for row in rows) == [float(n) for n in range(count + 1)]
    wait_until(lambda: service.readiness()[0], what="/readyz passing again")
    assert 'kotahub_ingest_wal_writable{hub="' + settings.ingest.client_id + '"} 1' in (
        _metrics_text(service)
    )
    assert any("writable again" in r.getMessage() for r in caplog.records)
