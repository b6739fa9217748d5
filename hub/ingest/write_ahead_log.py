"""A write-ahead log of line-protocol records, in numbered segment files.

One thread appends and syncs (the hub's flusher: many messages per fsync), one thread
reads (the InfluxDB writer). A record is ``length (u32) | crc32 (u32) | payload``; a
payload is the line-protocol lines of one fsync group joined by newlines, but the log
looks at nothing in it except its length and checksum.

A segment that is full (or the last one when the log is closed or reopened) is
*sealed*: a sidecar ``<number>.idx`` (written to a temporary name, fsynced, renamed)
holds its size, its record count and every record's offset. Opening the log reads the
sidecars and scans only a segment without one (normally the newest, after a crash), so
start-up costs one small read per segment instead of reading gigabytes. The reader
still checks every record's checksum when it reads it. The file formats (records,
sidecars) and the scan are in ``wal_segments.py``; this module owns the files' lifecycle.

Damage is counted and logged, never skipped silently: a torn tail of the newest segment
(a crash mid-write) is cut off when the log is opened; a record that fails its checksum
is skipped, the reader resuming at the next record's offset from the sidecar (or, in a
segment scanned without one, right after it when the record there checks out; when it
does not, the rest of the segment is dropped).

Segments are deleted only when the writer says InfluxDB holds everything in them. A
write that fails (disk full) is rolled back to the last whole record and raises
:class:`WalDiskFullError`; the same record can be appended again once space is back.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import logging
import os
import threading
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path

from hub.ingest.wal_segments import (
    HEADER,
    INDEX_SUFFIX,
    MAX_RECORD_BYTES,
    SEGMENT_SUFFIX,
    SegmentIndex,
    fsync_dir,
    index_name,
    read_index_header,
    read_index_offsets,
    scan_segment,
    segment_name,
    write_index,
)

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
# Errors that mean "no room" rather than "broken disk": the hub waits for space.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class WalError(Exception):
    """The write-ahead log cannot be opened or written."""


class WalWriteError(WalError, OSError):
    """A write or fsync failed; the log was rolled back to its last whole record."""


class WalDiskFullError(WalWriteError):
    """No space left for the log (errno ENOSPC or EDQUOT); append again once there is."""


@dataclass(frozen=True, slots=True, order=True)
class WalPosition:
    """A place in the log: segment number and byte offset in it."""

    segment: int
    offset: int


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``directory``."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


class WriteAheadLog:
    """Segmented, fsynced, crash-safe log; bounded by ``max_bytes``.

    Figures for /metrics: ``corrupt_records`` and ``corrupt_bytes`` (damage found at
    open or when read, torn tail included), ``corrupt_tail_bytes`` (the torn tail cut at
    open), ``disk_full_errors`` (appends or syncs refused for lack of space);
    ``last_error`` / :meth:`check_writable` for a readiness probe.
    """

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
        self.corrupt_tail_bytes = 0
        self.corrupt_records = 0
        self.corrupt_bytes = 0
        self.disk_full_errors = 0
        self.last_error: str | None = None
        self._disk_full = False
        self._rotation_blocked = False
        # Records in the log when it was opened: from the sealed segments' sidecars
        # (counted when sealed) plus a scan of any segment without one. A record found
        # damaged later, when read, is not subtracted: it is in corrupt_records.
        self.recovered_records = 0
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
        self._sizes: dict[int, int] = {}  # bytes on disk per segment
        self._ends: dict[int, int] = {}  # sealed segments: end of the last whole record
        self._indexes: dict[int, SegmentIndex] = {}  # sealed segments with a sidecar
        self._offsets: dict[int, array[int]] = {}  # record offsets known in memory
        self._damage_seen: set[tuple[int, int]] = set()
        # sum(_sizes.values()), kept up to date under _cond: the intake reads it per message.
        self._total = 0
        self._fd = -1
        self._closed = False
        try:
            self._recover()
        except OSError as err:
            self._unlock()
            raise WalError(f"{directory}: cannot open write-ahead log: {err}") from err
        self._total = sum(self._sizes.values())
        last = max(self._sizes, default=0)
        self._active = last + 1
        # Until the active segment exists, the durable end is the end of the last one.
        self._durable = WalPosition(last, self._sizes.get(last, 0))
        self._written = 0  # end of the last whole record appended to the active segment
        self._synced = 0  # end of the last fsynced record in it
        self._active_offsets: array[int] = array("Q")
        self._rollback_pending = False
        try:
            self._create_active()
        except WalDiskFullError:
            # Started on a full disk: append creates it (or raises) once there is room.
            pass
        except WalWriteError as err:
            self._unlock()
            raise WalError(str(err)) from err

    # -- opening -------------------------------------------------------------------
    def _recover(self) -> None:
        numbers: list[int] = []
        indexes: set[int] = set()
        with os.scandir(self.directory) as entries:
            for entry in entries:
                name = entry.name
                stem, _, suffix = name.partition(".")
                if not stem.isdigit():
                    continue
                if "." + suffix == SEGMENT_SUFFIX:
                    number = int(stem)
                    numbers.append(number)
                    self._sizes[number] = entry.stat().st_size
                elif "." + suffix == INDEX_SUFFIX:
                    indexes.add(int(stem))
                elif suffix.endswith(".tmp"):
                    os.unlink(entry.path)  # a sidecar a crash left half-written
        for number in indexes - set(numbers):
            # Its segment was released and the crash came before the sidecar went too.
            with contextlib.suppress(FileNotFoundError):
                (self.directory / index_name(number)).unlink()
        numbers.sort()
        # Only the newest segment with data can end in a torn write (a crash leaves the
        # empty segment of the next run, or of a rotation, after it).
        newest = max((n for n in numbers if self._sizes[n]), default=0)
        for number in numbers:
            index = None
            if number in indexes:
                index = read_index_header(self.directory / index_name(number))
            if index is not None and index.size == self._sizes[number]:
                self._indexes[number] = index
                self._ends[number] = index.valid_end
                self.recovered_records += index.records
            else:
                self._recover_by_scan(number, newest=number == newest)

    def _recover_by_scan(self, number: int, *, newest: bool) -> None:
        """Scan a segment without a (valid) sidecar, cut a torn tail, then seal it."""
        path = self.directory / segment_name(number)
        scan = scan_segment(path, self._sizes[number])
        size = self._sizes[number]
        for offset, dropped in scan.damage:
            if newest and offset == scan.torn_tail:
                # A crash mid-write: only the newest segment can end so; cut it off so
                # that the file holds whole records only.
                self.corrupt_tail_bytes += dropped
                self._record_damage(number, offset, dropped, "torn tail cut off")
                with path.open("r+b") as handle:
                    handle.truncate(offset)
                    handle.flush()
                    os.fsync(handle.fileno())
                size = offset
            else:
                self._record_damage(number, offset, dropped, "corrupt record skipped")
        self._sizes[number] = size
        self._ends[number] = scan.valid_end
        self.recovered_records += len(scan.offsets)
        if size and not self._seal(number, size, scan.valid_end, scan.offsets):
            self._offsets[number] = scan.offsets  # no sidecar to read them from later

    def _record_damage(self, number: int, offset: int, dropped: int, what: str) -> None:
        with self._cond:
            if (number, offset) in self._damage_seen:
                return
            self._damage_seen.add((number, offset))
            self.corrupt_records += 1
            self.corrupt_bytes += dropped
        log.warning(
            "%s: %s at offset %d, %d bytes dropped",
            self.directory / segment_name(number),
            what,
            offset,
            dropped,
        )

    def _seal(self, number: int, size: int, valid_end: int, offsets: array[int]) -> bool:
        """Write the sidecar; without one (disk full) the next open scans the segment."""
        path = self.directory / index_name(number)
        try:
            write_index(path, size, valid_end, offsets)
        except OSError as err:
            log.warning(
                "%s: cannot write the segment's index (%s); the next start scans it",
                self.directory / segment_name(number),
                err,
            )
            return False
        index = read_index_header(path)
        if index is not None:
            with self._cond:
                self._indexes[number] = index
        return True

    # -- writer side (one thread) --------------------------------------------------
    def _failure(self, err: OSError, what: str, size: int) -> WalWriteError:
        """The dedicated error for a failed write, with the directory and space left."""
        try:
            free = free_bytes(self.directory)
        except OSError:
            free = -1
        code = err.errno or errno.EIO
        self._disk_full = code in DISK_FULL_ERRNOS
        if self._disk_full:
            self.disk_full_errors += 1
            message = f"{self.directory}: disk full ({free} bytes free): {what} of {size} bytes"
            failure: WalWriteError = WalDiskFullError(code, message)
        else:
            message = f"{self.directory}: {what} of {size} bytes failed: {err.strerror or err}"
            failure = WalWriteError(code, message)
        if self.last_error is None:
            log.warning("%s", message)  # once per episode; a good sync ends it
        self.last_error = message
        return failure

    def _open_segment(self, number: int) -> int:
        """Create an empty segment file (its name durable in the directory); its fd."""
        path = self.directory / segment_name(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.ftruncate(fd, 0)  # a file left by a failed earlier attempt
            fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _create_active(self) -> None:
        try:
            self._fd = self._open_segment(self._active)
        except OSError as err:
            raise self._failure(err, f"creating segment {self._active}", 0) from err
        with self._cond:
            self._sizes[self._active] = 0

    def _rollback(self, offset: int) -> None:
        """Cut the active segment back to ``offset`` (the end of a whole record)."""
        try:
            os.ftruncate(self._fd, offset)
        except OSError:
            # Shrinking needs no space; should it fail anyway, retry before the next write.
            self._rollback_pending = True
            return
        self._rollback_pending = False
        self._written = offset
        cut = bisect.bisect_left(self._active_offsets, offset)
        del self._active_offsets[cut:]

    def append(self, payload: bytes) -> None:
        """Write one record; it is durable after the next ``sync``.

        Raises :class:`WalDiskFullError` (or :class:`WalWriteError`) with nothing of the
        record left in the log; records appended before it stay.
        """
        if self._closed:
            raise WalError(f"{self.directory}: the write-ahead log is closed")
        size = len(payload)
        if size > MAX_RECORD_BYTES:
            raise WalError(f"record of {size} bytes is too large")
        if self._fd < 0:
            self._create_active()
        if self._rollback_pending:
            self._rollback(self._written)
            if self._rollback_pending:
                raise self._failure(OSError(errno.EIO, "cannot cut a failed write"), "append", 0)
        header = HEADER.pack(size, zlib.crc32(payload))
        start = self._written
        try:
            done = os.writev(self._fd, [header, payload])
            while done < HEADER.size + size:
                # A short write (the disk filling up): write the rest, or fail trying.
                if done < HEADER.size:
                    done += os.write(self._fd, header[done:] + payload)
                else:
                    done += os.write(self._fd, memoryview(payload)[done - HEADER.size :])
        except OSError as err:
            self._rollback(start)
            raise self._failure(err, "append", HEADER.size + size) from err
        self._active_offsets.append(start)
        self._written = start + HEADER.size + size

    def sync(self) -> WalPosition:
        """Fsync what was appended; rotate a full segment; return the durable end.

        A failed fsync leaves the records appended since the last sync in doubt: they
        are cut off and the error raised, so append them again.
        """
        if self._fd < 0:
            if self.last_error is None:
                return self._durable
            self._create_active()  # still full: raises again; else nothing to sync
        try:
            os.fsync(self._fd)
        except OSError as err:
            self._rollback(self._synced)
            raise self._failure(err, "fsync", self._written - self._synced) from err
        self._synced = self._written
        if self.last_error is not None:
            log.info("%s: write-ahead log writable again", self.directory)
            self.last_error = None
        with self._cond:
            self._total += self._written - self._sizes[self._active]
            self._sizes[self._active] = self._written
            self._durable = WalPosition(self._active, self._written)
            self._cond.notify_all()
        if self._written >= self.segment_bytes:
            self._rotate()
        return self._durable

    def _rotate(self) -> None:
        """Seal the full segment and continue in a new one."""
        old = self._active
        try:
            fd = self._open_segment(old + 1)
        except OSError as err:
            # No room for a new file: keep writing this one; the next sync retries.
            if not self._rotation_blocked:
                log.warning("%s: cannot start segment %d: %s", self.directory, old + 1, err)
                self._rotation_blocked = True
            return
        self._rotation_blocked = False
        os.close(self._fd)
        offsets = self._active_offsets
        sealed = self._seal(old, self._written, self._written, offsets)
        with self._cond:
            self._fd, self._active = fd, old + 1
            self._sizes[self._active] = 0
            self._ends[old] = self._written
            if not sealed:
                self._offsets[old] = offsets  # no sidecar to read them from later
            self._active_offsets = array("Q")
            self._written = self._synced = 0
            self._durable = WalPosition(self._active, 0)

    def close(self, *, written: WalPosition | None = None) -> None:
        """Sync, seal and close the active segment and release the directory lock.

        ``written``: how far the consumer (InfluxDB) holds the log. When that is all of
        it, every segment is deleted, so a clean stop leaves nothing to replay.
        """
        if self._closed:
            return
        try:
            if self._fd >= 0 and written is not None and written >= self._durable:
                os.close(self._fd)
                self._fd = -1
                self._discard_all()
            if self._fd >= 0:
                # A failure is rolled back and logged; what was synced before is sealed.
                with contextlib.suppress(WalWriteError):
                    self.sync()
                os.close(self._fd)
                path = self.directory / segment_name(self._active)
                if self._written:
                    self._seal(self._active, self._written, self._written, self._active_offsets)
                else:
                    # An empty segment per start would pile up; the next start makes one.
                    path.unlink()
                    with self._cond:
                        del self._sizes[self._active]
                self._fd = -1
        finally:
            self._closed = True
            with self._cond:
                self._cond.notify_all()
            self._unlock()

    def _discard_all(self) -> None:
        """Delete every segment and sidecar (all of it is written downstream)."""
        with self._cond:
            numbers = list(self._sizes)
            for table in (self._sizes, self._ends, self._indexes, self._offsets):
                table.clear()
            self._total = 0
        for number in numbers:
            for name in (segment_name(number), index_name(number)):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()
        with contextlib.suppress(OSError):
            # Only makes the deletions durable: a crash before it replays, harmlessly.
            fsync_dir(self.directory)

    def _unlock(self) -> None:
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

    @property
    def disk_full(self) -> bool:
        """Whether the last write failed for lack of space (cleared by a good sync)."""
        return self.last_error is not None and self._disk_full

    def check_writable(self, min_free_bytes: int = 1024 * 1024) -> str | None:
        """None when the log can take writes, else why not (cheap: one statvfs)."""
        if self.last_error is not None:
            return self.last_error
        try:
            free = free_bytes(self.directory)
        except OSError as err:
            return f"{self.directory}: {err}"
        if free < min_free_bytes:
            return f"{self.directory}: disk nearly full ({free} bytes free)"
        return None

    def bytes_after(self, position: WalPosition) -> int:
        """Durable bytes beyond ``position``: what InfluxDB does not hold yet."""
        with self._cond:
            later = sum(size for number, size in self._sizes.items() if number > position.segment)
            return later + max(0, self._sizes.get(position.segment, 0) - position.offset)

    def first_position(self) -> WalPosition:
        """Start of the oldest segment."""
        with self._cond:
            return WalPosition(min(self._sizes, default=self._active), 0)

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
                if pos.segment == durable.segment:
                    limit = durable.offset
                else:
                    # A sealed segment ends at its last whole record; the active one
                    # (rotated meanwhile) at what was durable when it was rotated.
                    limit = self._ends.get(pos.segment, self._sizes[pos.segment])
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
        self, pos: WalPosition, limit: int, max_bytes: int
    ) -> tuple[list[bytes], int, bool]:
        path = self.directory / segment_name(pos.segment)
        records: list[bytes] = []
        offset = pos.offset
        taken = 0
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return records, offset, True
        with handle:
            handle.seek(offset)
            while taken < max_bytes and offset < limit:
                header = handle.read(HEADER.size)
                length, crc = HEADER.unpack(header) if len(header) == HEADER.size else (-1, 0)
                end = offset + HEADER.size + length
                payload = handle.read(length) if length >= 0 and end <= limit else b""
                if len(payload) != length or zlib.crc32(payload) != crc:
                    following = self._next_record(pos.segment, offset, limit)
                    self._record_damage(
                        pos.segment, offset, following - offset, "corrupt record skipped"
                    )
                    offset = following
                    handle.seek(offset)
                    continue
                records.append(payload)
                offset = end
                taken += length
            if offset >= limit:
                self._note_dropped_tail(pos.segment, limit)
        return records, offset, offset >= limit

    def _next_record(self, number: int, offset: int, limit: int) -> int:
        """Offset of the record after a damaged one: from the index, else the limit."""
        offsets = self._known_offsets(number)
        if offsets is None:
            return limit
        at = bisect.bisect_right(offsets, offset)
        return min(offsets[at], limit) if at < len(offsets) else limit

    def _known_offsets(self, number: int) -> array[int] | None:
        with self._cond:
            if number == self._active:
                return self._active_offsets
            offsets = self._offsets.get(number)
            index = self._indexes.get(number)
        if offsets is None and index is not None:
            offsets = read_index_offsets(self.directory / index_name(number), index)
            if offsets is not None:
                with self._cond:
                    self._offsets[number] = offsets
        return offsets

    def _note_dropped_tail(self, number: int, valid_end: int) -> None:
        """A sealed segment whose bytes after its last whole record were dropped."""
        with self._cond:
            size = self._sizes.get(number, 0)
            sealed = number in self._ends
        if sealed and size > valid_end:
            self._record_damage(number, valid_end, size - valid_end, "corrupt tail skipped")

    def release(self, upto: WalPosition) -> int:
        """Delete every segment wholly before ``upto``; return how many were deleted."""
        with self._cond:
            doomed = [n for n in self._sizes if n < upto.segment and n != self._active]
        for number in doomed:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / segment_name(number)).unlink()
            with contextlib.suppress(FileNotFoundError):
                (self.directory / index_name(number)).unlink()
            with self._cond:
                self._total -= self._sizes.pop(number, 0)
                self._ends.pop(number, None)
                self._indexes.pop(number, None)
                self._offsets.pop(number, None)
                self._cond.notify_all()
        return len(doomed)
