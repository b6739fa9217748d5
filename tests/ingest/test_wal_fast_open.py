"""Opening the WAL reads the segments' sidecars, not the segments; any bytes round-trip."""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.ingest.wal_segments import HEADER
from hub.ingest.write_ahead_log import WriteAheadLog
from tests.ingest.test_wal_damage import read_all, record, segments

MIB = 1024 * 1024


def bytes_read_by_process() -> int:
    """Bytes this process has read through read(2) and friends so far (page cache too)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def build(directory: Path, *, total: int, record_bytes: int, segment_bytes: int) -> int:
    """A WAL of about ``total`` bytes in records of ``record_bytes``; its record count."""
    wal = WriteAheadLog(directory, segment_bytes=segment_bytes)
    body = b"flood,device_id=g1 level_m=1.5 1\n" * (record_bytes // 33)
    count = total // (HEADER.size + len(body))
    for _ in range(count):
        wal.append(body)
        if wal.durable.offset == 0 or _ % 8 == 0:
            wal.sync()
    wal.close()
    return count


def test_open_reads_sidecars_not_segments(tmp_path: Path) -> None:
    count = build(tmp_path, total=24 * MIB, record_bytes=64 * 1024, segment_bytes=2 * MIB)
    assert len(segments(tmp_path)) >= 10
    before = bytes_read_by_process()
    wal = WriteAheadLog(tmp_path, segment_bytes=2 * MIB)
    read = bytes_read_by_process() - before
    assert wal.recovered_records == count
    assert read < 64 * 1024, f"opening read {read} bytes of a 24 MiB log"
    assert len(read_all(wal)) == count  # the reader still reads (and checks) them all
    wal.close()


def test_after_a_crash_only_the_newest_segment_is_scanned(tmp_path: Path) -> None:
    count = build(tmp_path, total=24 * MIB, record_bytes=64 * 1024, segment_bytes=2 * MIB)
    newest = segments(tmp_path)[-1]
    (tmp_path / (newest.stem + ".idx")).unlink()  # a crash: the newest was never sealed
    before = bytes_read_by_process()
    wal = WriteAheadLog(tmp_path, segment_bytes=2 * MIB)
    read = bytes_read_by_process() - before
    assert wal.recovered_records == count
    assert read < newest.stat().st_size + 64 * 1024
    assert (tmp_path / (newest.stem + ".idx")).exists()  # sealed now: not scanned again
    wal.close()


def test_log_without_sidecars_is_scanned_once_and_sealed(tmp_path: Path) -> None:
    """A log written before sidecars existed (or whose sidecars are lost) still opens."""
    wal = WriteAheadLog(tmp_path, segment_bytes=1000)
    for i in range(30):
        wal.append(record(i))
        wal.sync()
    wal.close()
    for index in tmp_path.glob("*.idx"):
        index.unlink()
    reopened = WriteAheadLog(tmp_path, segment_bytes=1000)
    assert reopened.recovered_records == 30
    assert read_all(reopened) == [record(i) for i in range(30)]
    reopened.close()
    assert len(list(tmp_path.glob("*.idx"))) == len(segments(tmp_path))
    again = WriteAheadLog(tmp_path, segment_bytes=1000)
    assert again.recovered_records == 30
    assert again.corrupt_records == 0
    again.close()


def test_stale_sidecar_is_ignored(tmp_path: Path) -> None:
    """A segment that grew after its sidecar was written is scanned, not trusted."""
    wal = WriteAheadLog(tmp_path)
    wal.append(record(0))
    wal.close()
    (newest,) = segments(tmp_path)
    payload = record(1)
    with newest.open("ab") as handle:
        handle.write(HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
    reopened = WriteAheadLog(tmp_path)
    assert reopened.recovered_records == 2
    assert read_all(reopened) == [record(0), record(1)]
    reopened.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=25))
def test_any_bytes_round_trip(payloads: list[bytes]) -> None:
    """Nothing in the log depends on a record's content: headers, zeros, empty records."""
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        wal = WriteAheadLog(directory, segment_bytes=700)
        for payload in payloads:
            wal.append(payload)
            wal.sync()
        assert read_all(wal) == payloads
        wal.close()
        reopened = WriteAheadLog(directory, segment_bytes=700)
        assert reopened.recovered_records == len(payloads)
        assert reopened.corrupt_records == 0
        assert read_all(reopened) == payloads
        reopened.close()
