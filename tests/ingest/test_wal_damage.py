"""WAL damage is counted and reported, and the records around it are read back.

A torn tail (a crash mid-write), a flipped byte in the newest segment (scanned at open)
and a flipped byte in a sealed segment (found only when the reader reaches it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hub.ingest.wal_segments import HEADER
from hub.ingest.write_ahead_log import WalPosition, WriteAheadLog

LOGGER = "hub.ingest.write_ahead_log"


def read_all(wal: WriteAheadLog, start: WalPosition | None = None) -> list[bytes]:
    """Every durable record from ``start`` (default: the oldest segment)."""
    out: list[bytes] = []
    position = wal.first_position() if start is None else start
    while True:
        records, position = wal.read(position, 1 << 20)
        if not records:
            return out
        out.extend(records)


def record(i: int) -> bytes:
    """A line-protocol record of a few lines, distinct per ``i``."""
    return "\n".join(f"flood,device_id=g{i}-{j} level_m={i}.{j} {i}" for j in range(5)).encode()


def segments(directory: Path) -> list[Path]:
    """Segment files, oldest first."""
    return sorted(directory.glob("*.wal"))


def record_offset(path: Path, index: int) -> int:
    """Byte offset of the ``index``-th record in a segment file."""
    data = path.read_bytes()
    offset = 0
    for _ in range(index):
        length, _crc = HEADER.unpack_from(data, offset)
        offset += HEADER.size + length
    return offset


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a file in place."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def damage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WAL's warnings that report dropped bytes."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.WARNING and "dropped" in r.getMessage()
    ]


def test_torn_tail_of_newest_segment_is_cut_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = WriteAheadLog(tmp_path)
    for i in range(10):
        wal.append(record(i))
        wal.sync()
    size = wal.durable.offset
    # A crash in the middle of the eleventh record: header and part of the payload.
    wal.append(record(10))
    wal.sync()
    wal.close()
    (newest,) = segments(tmp_path)
    with newest.open("r+b") as handle:
        handle.truncate(size + HEADER.size + 7)
    (tmp_path / (newest.stem + ".idx")).unlink()  # a crash comes before sealing
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reopened = WriteAheadLog(tmp_path)
    assert reopened.corrupt_tail_bytes == HEADER.size + 7
    assert reopened.corrupt_records == 1
    assert reopened.corrupt_bytes == HEADER.size + 7
    assert reopened.recovered_records == 10
    (message,) = damage_warnings(caplog)
    assert newest.name in message
    assert f"offset {size}" in message
    assert f"{HEADER.size + 7} bytes dropped" in message
    assert newest.stat().st_size == size  # cut: the file holds whole records only
    assert read_all(reopened) == [record(i) for i in range(10)]
    reopened.close()


def test_flipped_byte_in_newest_segment_skips_that_record_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = WriteAheadLog(tmp_path)
    for i in range(10):
        wal.append(record(i))
    wal.sync()
    wal.close()
    (newest,) = segments(tmp_path)
    (tmp_path / (newest.stem + ".idx")).unlink()  # a crash: scanned at open
    damaged_at = record_offset(newest, 4)
    flip_byte(newest, damaged_at + HEADER.size + 3)  # in record 4's payload
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reopened = WriteAheadLog(tmp_path)
    assert reopened.corrupt_records == 1
    assert reopened.corrupt_bytes == HEADER.size + len(record(4))
    assert reopened.corrupt_tail_bytes == 0
    assert reopened.recovered_records == 9
    (message,) = damage_warnings(caplog)
    assert newest.name in message
    assert f"offset {damaged_at}" in message
    assert read_all(reopened) == [record(i) for i in range(10) if i != 4]
    assert reopened.corrupt_records == 1  # the reader met it again: counted once
    reopened.close()


def test_flipped_byte_in_sealed_segment_is_found_by_the_reader(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=2000)
    for i in range(40):
        wal.append(record(i))
        wal.sync()
    wal.close()
    sealed = segments(tmp_path)[1]
    first_in_sealed = read_all_from_file(sealed)[0]
    damaged_at = record_offset(sealed, 2)
    # The length field itself: nothing in the segment frames the next record any more;
    # the sidecar's offsets still do.
    flip_byte(sealed, damaged_at)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reopened = WriteAheadLog(tmp_path, segment_bytes=2000)
    # Opening trusts the sidecars: the damage is not seen until the record is read.
    assert reopened.corrupt_records == 0
    assert reopened.recovered_records == 40
    records = read_all(reopened)
    lost = first_in_sealed + 2
    assert records == [record(i) for i in range(40) if i != lost]
    assert reopened.corrupt_records == 1
    assert reopened.corrupt_bytes == HEADER.size + len(record(lost))
    (message,) = damage_warnings(caplog)
    assert sealed.name in message
    assert f"offset {damaged_at}" in message
    reopened.close()


def read_all_from_file(path: Path) -> list[int]:
    """The ``i`` of each record(i) in a segment file (it is sound)."""
    data = path.read_bytes()
    out: list[int] = []
    offset = 0
    while offset < len(data):
        length, _crc = HEADER.unpack_from(data, offset)
        payload = data[offset + HEADER.size : offset + HEADER.size + length]
        out.append(int(payload.split(b"=g", 1)[1].split(b"-", 1)[0]))
        offset += HEADER.size + length
    return out


def test_torn_tail_before_an_empty_segment_is_still_the_tail(tmp_path: Path) -> None:
    """kill -9 right after a rotation created the next (empty) segment."""
    wal = WriteAheadLog(tmp_path)
    for i in range(3):
        wal.append(record(i))
    wal.sync()
    wal.close()
    (newest,) = segments(tmp_path)
    (tmp_path / (newest.stem + ".idx")).unlink()
    with newest.open("ab") as handle:
        handle.write(HEADER.pack(500, 0) + b"cut short")
    (tmp_path / f"{int(newest.stem) + 1:016d}.wal").touch()
    reopened = WriteAheadLog(tmp_path)
    assert reopened.corrupt_tail_bytes == HEADER.size + len(b"cut short")
    assert reopened.corrupt_records == 1
    assert read_all(reopened) == [record(i) for i in range(3)]
    reopened.close()
