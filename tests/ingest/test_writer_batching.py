"""How the hub's writer cuts the WAL into batches (no InfluxDB needed: nothing is posted)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_registry.directory import SnapshotDirectory
from hub.ingest.ingest_service import IngestService
from hub.ingest.write_ahead_log import WriteAheadLog
from hub.settings import load_settings

LONG_INTERVAL_S = 30.0


@pytest.fixture
def service(tmp_path: Path) -> Iterator[IngestService]:
    settings = load_settings(None, state_dir=tmp_path, mqtt={"password": "unused"})
    svc = IngestService(settings, "unused", directory=SnapshotDirectory([]))
    svc.wal = WriteAheadLog(tmp_path / "wal")
    yield svc
    svc.wal.close()


def _fill(wal: WriteAheadLog, records: int, lines_each: int) -> None:
    for r in range(records):
        wal.append(b"\n".join(f"flood,device_id=g{r} x={i} 1".encode() for i in range(lines_each)))
        wal.sync()


def test_a_full_batch_is_cut_at_the_line_limit_without_waiting(service: IngestService) -> None:
    assert service.wal is not None
    _fill(service.wal, records=10, lines_each=100)
    start = service.wal.first_position()
    began = time.monotonic()
    chunks, count, end, behind = service._collect(start, 300, LONG_INTERVAL_S)
    assert time.monotonic() - began < LONG_INTERVAL_S / 3
    assert behind  # filled from what the WAL held: the writer is behind
    assert count >= 300
    assert count == sum(c.count(b"\n") + 1 for c in chunks)
    assert all(c.count(b"\n") == 99 for c in chunks)  # records stay whole
    rest, rest_count, _, rest_behind = service._collect(end, 5000, 0.05)
    assert not rest_behind
    assert count + rest_count == 1000
    assert len(chunks) + len(rest) == 10


def test_catching_up_posts_what_the_wal_holds_instead_of_waiting_out_the_interval(
    service: IngestService,
) -> None:
    assert service.wal is not None
    _fill(service.wal, records=3, lines_each=10)
    began = time.monotonic()
    chunks, count, _, _ = service._collect(
        service.wal.first_position(), 5000, LONG_INTERVAL_S, catching_up=True
    )
    assert time.monotonic() - began < LONG_INTERVAL_S / 3
    assert (len(chunks), count) == (3, 30)


def test_in_steady_state_a_partial_batch_waits_for_the_interval(service: IngestService) -> None:
    assert service.wal is not None
    _fill(service.wal, records=2, lines_each=10)
    interval = 0.5
    began = time.monotonic()
    chunks, count, _, _ = service._collect(service.wal.first_position(), 5000, interval)
    assert time.monotonic() - began >= interval * 0.9
    assert (len(chunks), count) == (2, 20)


def test_a_batch_that_filled_while_waiting_for_new_lines_is_not_behind(
    service: IngestService,
) -> None:
    """A live stream fills batches too; only a WAL that already held them means catch-up."""
    wal = service.wal
    assert wal is not None
    _fill(wal, records=1, lines_each=10)

    def late_records() -> None:
        time.sleep(0.3)
        _fill(wal, records=5, lines_each=10)

    feeder = threading.Thread(target=late_records)
    feeder.start()
    _, count, _, behind = service._collect(wal.first_position(), 50, LONG_INTERVAL_S)
    feeder.join()
    assert count >= 50
    assert not behind
