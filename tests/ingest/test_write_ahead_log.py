"""The write-ahead log alone: durability, torn tails, segments, release."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from hub.ingest.write_ahead_log import WalError, WalPosition, WriteAheadLog


def _read_all(wal: WriteAheadLog, start: WalPosition) -> tuple[list[bytes], WalPosition]:
    out: list[bytes] = []
    position = start
    while True:
        records, position = wal.read(position, 1 << 20)
        if not records:
            return out, position
        out.extend(records)


def test_records_survive_reopen_and_torn_tail_is_cut(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=200)
    for i in range(20):
        wal.append(f"line {i}".encode())
        wal.sync()
    wal.close()
    assert wal.segment_count >= 2  # rotated
    newest = max(tmp_path.glob("*.wal"))
    if newest.stat().st_size == 0:  # the fresh segment after the last rotation
        newest = sorted(tmp_path.glob("*.wal"))[-2]
    with newest.open("ab") as handle:  # a crash in the middle of the next record
        handle.write(b"\x50\x00\x00\x00\x01\x02\x03\x04partial")
    reopened = WriteAheadLog(tmp_path, segment_bytes=200)
    assert reopened.corrupt_tail_bytes == 15
    assert reopened.recovered_records == 20
    records, _ = _read_all(reopened, reopened.first_position())
    assert records == [f"line {i}".encode() for i in range(20)]
    reopened.close()


def test_reader_sees_only_synced_records_and_release_deletes_segments(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=100)
    start = wal.first_position()
    wal.append(b"a" * 60)
    assert wal.read(start, 1 << 20)[0] == []  # appended, not yet durable
    wal.sync()
    wal.append(b"b" * 60)
    wal.sync()  # the segment passed 100 bytes: rotated
    records, position = _read_all(wal, start)
    assert records == [b"a" * 60, b"b" * 60]
    before = wal.segment_count
    assert wal.bytes_after(start) > 0
    assert wal.release(position) == before - 1
    assert wal.segment_count == 1
    assert wal.bytes_after(position) == 0
    wal.close()


def test_waiters_wake_on_sync(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    start = wal.first_position()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(wal.wait_for_data(start, 10)))
    waiter.start()
    wal.append(b"x")
    wal.sync()
    waiter.join(5)
    assert woke == [True]
    wal.close()


def test_second_process_on_same_directory_is_refused(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    with pytest.raises(WalError, match="in use"):
        WriteAheadLog(tmp_path)
    wal.close()
    WriteAheadLog(tmp_path).close()


def test_total_bytes_follows_appends_rotation_and_release(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=300)

    def on_disk() -> int:
        return sum(p.stat().st_size for p in tmp_path.glob("*.wal"))

    for i in range(30):
        wal.append(f"flood,device_id=g{i} level_m={i} 1".encode())
        wal.sync()
        assert wal.total_bytes == on_disk()
    assert wal.segment_count >= 3
    assert wal.release(wal.durable) >= 2
    assert wal.total_bytes == on_disk()
    wal.close()
    reopened = WriteAheadLog(tmp_path, segment_bytes=300)
    assert reopened.total_bytes == on_disk()
    reopened.close()
