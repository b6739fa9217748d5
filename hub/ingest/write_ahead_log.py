"""A write-ahead log of line-protocol records, in numbered segment files.

One thread appends and syncs (the hub's flusher: many messages per fsync), one thread
reads (the InfluxDB writer). A record is ``length (u32) | crc32 (u32) | payload``; a
payload is the line-protocol lines of one fsync group joined by newlines. A torn record
at the end of the last segment (a crash mid-write) is cut off when the log is opened.
Segments are deleted only when the writer says InfluxDB holds everything in them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
SEGMENT_SUFFIX = ".wal"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 256 * 1024 * 1024


class WalError(Exception):
    """The write-ahead log cannot be opened or written."""


@dataclass(frozen=True, slots=True, order=True)
class WalPosition:
    """A place in the log: segment number and byte offset in it."""

    segment: int
    offset: int


def _segment_name(number: int) -> str:
    return f"{number:016d}{SEGMENT_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def scan_valid_end(path: Path) -> tuple[int, int]:
    """(bytes of whole valid records, record count) at the start of a segment file."""
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


class WriteAheadLog:
    """Segmented, fsynced, crash-safe log; bounded by ``max_bytes``."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_bytes: int = 16 * 1024**3,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.truncated_bytes = 0
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_file = (directory / "LOCK").open("a")
        except OSError as err:
            raise WalError(f"{directory}: cannot create write-ahead log: {err}") from err
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self._lock_file.close()
            raise WalError(
                f"{directory}: write-ahead log is in use by another hub process "
                "(each hub needs its own client_id / wal_dir)"
            ) from err
        self._cond = threading.Condition()
        self._sizes: dict[int, int] = {}
        # sum(_sizes.values()), kept up to date under _cond: the intake reads it per message.
        self._total = 0
        self.recovered_records = 0
        for path in sorted(directory.glob("*" + SEGMENT_SUFFIX)):
            try:
                number = int(path.stem)
            except ValueError:
                continue
            self._sizes[number] = path.stat().st_size
        if self._sizes:
            # Only the newest segment can end in a torn record; older ones were closed.
            last = max(self._sizes)
            path = directory / _segment_name(last)
            valid, _ = scan_valid_end(path)
            if valid < self._sizes[last]:
                self.truncated_bytes = self._sizes[last] - valid
                log.warning("%s: cut a torn tail of %d bytes", path, self.truncated_bytes)
                with path.open("r+b") as handle:
                    handle.truncate(valid)
                    handle.flush()
                    os.fsync(handle.fileno())
                self._sizes[last] = valid
            for number in self._sizes:
                self.recovered_records += scan_valid_end(directory / _segment_name(number))[1]
        self._total = sum(self._sizes.values())
        self._active = max(self._sizes, default=0) + 1
        self._file: BinaryIO = self._open_segment(self._active)
        self._durable = WalPosition(self._active, 0)
        self._written = 0
        self._closed = False

    # -- writer side (one thread) --------------------------------------------------
    def _open_segment(self, number: int) -> BinaryIO:
        path = self.directory / _segment_name(number)
        handle = path.open("ab")
        self._sizes[number] = 0
        _fsync_dir(self.directory)
        return handle

    def append(self, payload: bytes) -> None:
        """Buffer one record; it is durable after the next ``sync``."""
        if len(payload) > MAX_RECORD_BYTES:
            raise WalError(f"record of {len(payload)} bytes is too large")
        self._file.write(HEADER.pack(len(payload), zlib.crc32(payload)))
        self._file.write(payload)
        self._written += HEADER.size + len(payload)

    def sync(self) -> WalPosition:
        """Write and fsync what was appended; rotate a full segment; return the durable end."""
        self._file.flush()
        os.fsync(self._file.fileno())
        with self._cond:
            self._total += self._written - self._sizes[self._active]
            self._sizes[self._active] = self._written
            self._durable = WalPosition(self._active, self._written)
            self._cond.notify_all()
        if self._written >= self.segment_bytes:
            self._file.close()
            number = self._active + 1
            handle = self._open_segment(number)
            with self._cond:
                self._file, self._active, self._written = handle, number, 0
                self._durable = WalPosition(number, 0)
        return self._durable

    def close(self) -> None:
        """Sync and close the active segment and release the directory lock."""
        if self._closed:
            return
        self.sync()
        self._file.close()
        self._closed = True
        with self._cond:
            self._cond.notify_all()
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
        self._lock_file.close()

    # -- shared ------------------------------------------------------------------
    @property
    def durable(self) -> WalPosition:
        """End of what is on disk."""
        with self._cond:
            return self._durable

    @property
    def total_bytes(self) -> int:
        """Bytes in all segments (the disk the log uses)."""
        return self._total  # one int read: no lock needed

    @property
    def segment_count(self) -> int:
        """Number of segment files."""
        with self._cond:
            return len(self._sizes)

    @property
    def fill(self) -> float:
        """total_bytes / max_bytes."""
        return self.total_bytes / self.max_bytes

    def bytes_after(self, position: WalPosition) -> int:
        """Durable bytes beyond ``position``: what InfluxDB does not hold yet."""
        with self._cond:
            later = sum(size for number, size in self._sizes.items() if number > position.segment)
            return later + max(0, self._sizes.get(position.segment, 0) - position.offset)

    def first_position(self) -> WalPosition:
        """Start of the oldest segment."""
        with self._cond:
            return WalPosition(min(self._sizes), 0)

    def wait_for_data(self, after: WalPosition, timeout_s: float) -> bool:
        """Wait until something durable lies beyond ``after``; False on timeout or close."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed or self._has_data(after), timeout=timeout_s
            ) and self._has_data(after)

    def _has_data(self, after: WalPosition) -> bool:
        # A reader at the end of a closed segment may be one empty read behind: harmless.
        return self._durable > after

    def wait_for_room(self, timeout_s: float) -> bool:
        """Wait until the log is below max_bytes; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._total < self.max_bytes, timeout=timeout_s)

    def read(self, start: WalPosition, max_bytes: int) -> tuple[list[bytes], WalPosition]:
        """Durable records from ``start`` (about max_bytes of them) and the position after them."""
        records: list[bytes] = []
        pos = start
        taken = 0
        while taken < max_bytes:
            with self._cond:
                durable = self._durable
                numbers = sorted(n for n in self._sizes if n >= pos.segment)
            if not numbers:
                break
            if numbers[0] != pos.segment:
                pos = WalPosition(numbers[0], 0)
            limit = durable.offset if pos.segment == durable.segment else None
            got, new_offset, at_end = self._read_segment(pos, limit, max_bytes - taken)
            records.extend(got)
            taken += sum(len(r) for r in got)
            pos = WalPosition(pos.segment, new_offset)
            if pos.segment >= durable.segment or not at_end:
                break
            later = [n for n in numbers if n > pos.segment]
            if not later:
                break
            # A closed segment read to its end: the next one starts at offset 0.
            pos = WalPosition(later[0], 0)
        return records, pos

    def _read_segment(
        self, pos: WalPosition, limit: int | None, max_bytes: int
    ) -> tuple[list[bytes], int, bool]:
        path = self.directory / _segment_name(pos.segment)
        records: list[bytes] = []
        offset = pos.offset
        taken = 0
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return records, offset, True
        with handle:
            handle.seek(offset)
            while taken < max_bytes and (limit is None or offset < limit):
                header = handle.read(HEADER.size)
                if len(header) < HEADER.size:
                    return records, offset, True
                length, crc = HEADER.unpack(header)
                payload = handle.read(length) if length <= MAX_RECORD_BYTES else b""
                if len(payload) < length or zlib.crc32(payload) != crc:
                    # Corruption in a closed segment: nothing after it can be trusted.
                    log.error("%s: bad record at offset %d, skipping the rest", path, offset)
                    return records, offset, True
                records.append(payload)
                offset += HEADER.size + length
                taken += length
        return records, offset, limit is None and taken < max_bytes

    def release(self, upto: WalPosition) -> int:
        """Delete every segment wholly before ``upto``; return how many were deleted."""
        with self._cond:
            doomed = [n for n in self._sizes if n < upto.segment and n != self._active]
        for number in doomed:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / _segment_name(number)).unlink()
            with self._cond:
                self._total -= self._sizes.pop(number, 0)
                self._cond.notify_all()
        return len(doomed)
