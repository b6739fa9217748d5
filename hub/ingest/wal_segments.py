"""The write-ahead log's files: record framing, segment names, sidecar indexes, the scan.

A segment ``<number>.wal`` is a run of records ``length (u32) | crc32 (u32) | payload``.
A sealed segment has a sidecar ``<number>.idx``: a checked header (the segment's size,
the end of its last whole record, its record count) and every record's offset, so that
opening the log needs no read of the segment itself. A segment without a valid sidecar
is read and checked record by record (``scan_segment``), which tells damage in the
middle from a torn tail. Nothing here keeps state or logs: ``write_ahead_log.py`` owns
the segments' lifecycle, the counts of damage and the messages about it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HEADER = struct.Struct("<II")
SEGMENT_SUFFIX = ".wal"
INDEX_SUFFIX = ".idx"
MAX_RECORD_BYTES = 256 * 1024 * 1024
# Sidecar: magic, segment bytes at sealing, end of its last whole record, record count,
# crc32 of the offsets that follow; then a crc32 of those fields; then u64 offsets.
INDEX_MAGIC = b"KOTAWAL1"
INDEX_HEADER = struct.Struct("<8sQQQI")
INDEX_CRC = struct.Struct("<I")
INDEX_PREFIX_BYTES = INDEX_HEADER.size + INDEX_CRC.size


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """What a scan of one segment file found: whole records and the damage between them."""

    offsets: array[int]
    valid_end: int
    damage: tuple[tuple[int, int], ...]  # (offset, bytes dropped), in file order
    torn_tail: int  # offset where an unreadable tail starts; -1 when there is none


def segment_name(number: int) -> str:
    """The file name of segment ``number``: zero-padded, so names sort as numbers."""
    return f"{number:016d}{SEGMENT_SUFFIX}"


def index_name(number: int) -> str:
    """The file name of segment ``number``'s sidecar index."""
    return f"{number:016d}{INDEX_SUFFIX}"


def fsync_dir(path: Path) -> None:
    """Fsync a folder: makes a file created, renamed or deleted in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record_ok(handle: BinaryIO, offset: int, end: int) -> tuple[bool, int]:
    """(whether a whole record with a good checksum starts at offset, its length)."""
    handle.seek(offset)
    header = handle.read(HEADER.size)
    if len(header) < HEADER.size:
        return False, -1
    length, crc = HEADER.unpack(header)
    if length > MAX_RECORD_BYTES or offset + HEADER.size + length > end:
        return False, length
    payload = handle.read(length)
    return len(payload) == length and zlib.crc32(payload) == crc, length


def scan_segment(path: Path, end: int | None = None) -> SegmentScan:
    """Read and check every record of a segment file (the slow path: no sidecar)."""
    offsets: array[int] = array("Q")
    damage: list[tuple[int, int]] = []
    offset = 0
    torn = -1
    with path.open("rb") as handle:
        if end is None:
            end = os.fstat(handle.fileno()).st_size
        while offset < end:
            ok, length = _record_ok(handle, offset, end)
            if ok:
                offsets.append(offset)
                offset += HEADER.size + length
                continue
            # A bad record whose length still leads to a good record is damage in the
            # middle (a flipped byte): skip just it. Otherwise nothing after it can be
            # framed, so it is the tail (a torn write when this is the newest segment).
            following = offset + HEADER.size + length
            framed = 0 <= length <= MAX_RECORD_BYTES and following < end
            if framed and _record_ok(handle, following, end)[0]:
                damage.append((offset, following - offset))
                offset = following
                continue
            damage.append((offset, end - offset))
            torn = offset
            break
    valid_end = torn if torn >= 0 else end
    return SegmentScan(offsets, valid_end, tuple(damage), torn)


def scan_valid_end(path: Path) -> tuple[int, int]:
    """(bytes of whole valid records, record count) at the start of a segment file.

    The full read and check the log used to do for every segment at open; the WAL bench
    times it as the reference.
    """
    end = count = 0
    with path.open("rb") as handle:
        while True:
            header = handle.read(HEADER.size)
            if len(header) < HEADER.size:
                return end, count
            length, crc = HEADER.unpack(header)
            if length > MAX_RECORD_BYTES:
                return end, count
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                return end, count
            end += HEADER.size + length
            count += 1


def _offsets_bytes(offsets: array[int]) -> bytes:
    if sys.byteorder == "big":
        offsets = array("Q", offsets)
        offsets.byteswap()
    return offsets.tobytes()


def write_index(path: Path, size: int, valid_end: int, offsets: array[int]) -> None:
    """Write a segment's sidecar atomically: temporary file, fsync, rename, fsync dir."""
    body = _offsets_bytes(offsets)
    header = INDEX_HEADER.pack(INDEX_MAGIC, size, valid_end, len(offsets), zlib.crc32(body))
    temporary = path.with_name(path.name + ".tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(header + INDEX_CRC.pack(zlib.crc32(header)) + body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_dir(path.parent)


@dataclass(frozen=True, slots=True)
class SegmentIndex:
    """A sidecar's header: the sealed segment's size, valid end and record count."""

    size: int
    valid_end: int
    records: int
    offsets_crc: int


def read_index_header(path: Path) -> SegmentIndex | None:
    """The sidecar's header, or None when it is missing or does not check out."""
    try:
        with path.open("rb") as handle:
            prefix = handle.read(INDEX_PREFIX_BYTES)
    except FileNotFoundError:
        return None
    if len(prefix) < INDEX_PREFIX_BYTES:
        return None
    header = prefix[: INDEX_HEADER.size]
    (crc,) = INDEX_CRC.unpack(prefix[INDEX_HEADER.size :])
    magic, size, valid_end, records, offsets_crc = INDEX_HEADER.unpack(header)
    if magic != INDEX_MAGIC or zlib.crc32(header) != crc or valid_end > size:
        return None
    return SegmentIndex(size, valid_end, records, offsets_crc)


def read_index_offsets(path: Path, index: SegmentIndex) -> array[int] | None:
    """Every record offset of a sealed segment, or None when the sidecar is damaged."""
    try:
        with path.open("rb") as handle:
            handle.seek(INDEX_PREFIX_BYTES)
            body = handle.read()
    except FileNotFoundError:
        return None
    if len(body) != 8 * index.records or zlib.crc32(body) != index.offsets_crc:
        return None
    offsets: array[int] = array("Q")
    offsets.frombytes(body)
    if sys.byteorder == "big":
        offsets.byteswap()
    return offsets
