"""The seam after decoding: consumers of the write-ahead log other than the InfluxDB writer.

The WAL holds every accepted reading and every status change as line protocol, written
by the decoder with the registry's tags and the device type's metric kinds. A consumer
(the alert engine, a second store) reads the same records back as typed values:

* ``Reading``: device, family, telemetry or event, tags, metrics typed as the decoder
  wrote them (float, int, bool, str), time in ms;
* ``StatusChange`` (``device_status.py``): a device went online or offline.

Each consumer keeps its own position (``WalCursors``) and runs on its own thread
(``run_consumer``). A crash re-delivers to a consumer everything after the position it
last committed, so delivery is at least once; a consumer that stores its position with
its own state (in one transaction) sees each record's effect exactly once. Segments are
released only when the InfluxDB writer and every consumer are past them, except that a
lagging consumer holds the log back only while it is below ``hold_fill`` of its
``max_bytes``: beyond that the writer's releases go on (intake never pauses for a
consumer), and the consumer skips ahead to the oldest segment left, which is counted
and logged as an error (``skipped_segments``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from hub.ingest.device_status import StatusChange
from hub.ingest.write_ahead_log import WalPosition, WriteAheadLog

log = logging.getLogger(__name__)

INFLUX_CURSOR = "influx"
# Small reads: a consumer holds the GIL for one read's worth of work at a time.
READ_BYTES = 64 * 1024
IDLE_WAIT_S = 0.2
# A consumer more than LAG_YIELD_BYTES behind (a backlog is draining faster than it can
# evaluate) or told that ingest is under pressure runs at BACKLOG_DUTY of the time, so
# that ingest keeps its full speed; its share grows with its lag, to all of it at half of
# what the log holds for it, so it never falls out of the log. Live traffic (a consumer
# that keeps up) is handed over at once.
BACKLOG_DUTY = 0.05
LAG_YIELD_BYTES = 1024 * 1024  # a consumer that keeps up is one fsync group behind
# A consumer whose work is in another process (the alert engine) is held back only while
# InfluxDB's writer is this far behind: seconds of a city's traffic, a real backlog (a
# restart, an outage's end). A writer that merely fills its batches (the "catching up" of
# a steady 10,000 msg/s) is not one: held back then, the engine paged minutes late.
INGEST_BACKLOG_BYTES = 8 * 1024 * 1024
# ... or while the hub's intake handler is busy this share of the time: it drains a
# backlog the broker queued (a restart, a network cut's end) as fast as it can, and
# InfluxDB's writer keeps close behind it. A steady 10,000 msg/s keeps it ~15 % busy.
INTAKE_BUSY_SHARE = 0.5
MAX_YIELD_S = 1.0
MetricValue = float | int | bool | str
# Measurements the hub writes about itself: never readings of a device.
HUB_MEASUREMENTS = frozenset({"deadletter", "hub", "alert"})
STATUS_MEASUREMENT = "device_status"
EVENT_SUFFIX = "_event"


@dataclass(frozen=True, slots=True)
class Reading:
    """One decoded point of a device, as a consumer sees it."""

    device_id: str
    family: str
    kind: Literal["telemetry", "event"]
    tags: dict[str, str]
    metrics: dict[str, MetricValue]
    time_ms: int


StreamItem = Reading | StatusChange


class LineProtocolError(ValueError):
    """A WAL line that is not line protocol as the hub writes it."""


class WalConsumer(Protocol):
    """What the seam asks of a consumer; its methods run on the consumer's own thread."""

    name: str

    def start_position(self, first: WalPosition, durable: WalPosition) -> WalPosition:
        """Where to start reading: after what this consumer committed before, else ``first``."""
        ...

    def wanted(self) -> frozenset[str] | None:
        """Measurements (families, ``<family>_event``, ``device_status``) to parse; None: all."""
        ...

    def consume(self, items: Sequence[StreamItem], end: WalPosition) -> None:
        """Handle ``items`` (possibly none) and make that durable with ``end`` before returning."""
        ...

    def tick(self) -> None:
        """Called after each batch and every ``IDLE_WAIT_S`` s without data: timed work."""
        ...


@runtime_checkable
class RecordConsumer(WalConsumer, Protocol):
    """A consumer that takes the WAL's raw records (it decodes them elsewhere: its process)."""

    def resume_position(
        self, committed: WalPosition, first: WalPosition, durable: WalPosition
    ) -> WalPosition:
        """Where to read after its loop (re)starts; ``committed`` is its last commit here."""
        ...

    def consume_records(
        self, records: list[bytes], end: WalPosition, on_error: Callable[[str], None]
    ) -> None:
        """Handle raw records and make that durable with ``end``; report unreadable lines."""
        ...


# -- line protocol, as the hub writes it -------------------------------------------------
def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _value(raw: str) -> MetricValue:
    if raw == "true":
        return True
    if raw == "false":
        return False
    if raw.endswith("i"):
        return int(raw[:-1])
    return float(raw)


def _fields(text: str) -> dict[str, MetricValue]:
    """The field set; string values may hold commas, spaces and escaped quotes."""
    fields: dict[str, MetricValue] = {}
    if '"' not in text and "\\" not in text:
        for part in text.split(","):
            key, _, raw = part.partition("=")
            fields[key] = _value(raw)
        return fields
    i, size = 0, len(text)
    while i < size:
        key_start = i
        while i < size and not (text[i] == "=" and text[i - 1] != "\\"):
            i += 2 if text[i] == "\\" else 1
        key = _unescape(text[key_start:i])
        i += 1
        if i < size and text[i] == '"':
            i += 1
            chars: list[str] = []
            while i < size and text[i] != '"':
                if text[i] == "\\" and i + 1 < size:
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= size:
                raise LineProtocolError("unterminated string field")
            fields[key] = "".join(chars)
            i += 1
        else:
            start = i
            while i < size and text[i] != ",":
                i += 1
            fields[key] = _value(text[start:i])
        if i < size and text[i] != ",":
            raise LineProtocolError("field set continues after a value")
        i += 1
    return fields


_HEAD_END = re.compile(r"(?<!\\) ")
_TAG_SPLIT = re.compile(r"(?<!\\),")
_KEY_SPLIT = re.compile(r"(?<!\\)=")
_ESCAPE = re.compile(r"\\(.)")
HEAD_CACHE = 100_000
# Series key (measurement and tags, as written) -> (measurement, tags): a device's lines
# share it, so each is split and unescaped once (the tags dict is shared: read only).
_heads: dict[str, tuple[str, dict[str, str]]] = {}


def _plain(text: str) -> str:
    return _ESCAPE.sub(r"\1", text) if "\\" in text else text


def _head(head: str) -> tuple[str, dict[str, str]]:
    cached = _heads.get(head)
    if cached is not None:
        return cached
    parts = _TAG_SPLIT.split(head)
    tags: dict[str, str] = {}
    for part in parts[1:]:
        key, value = _KEY_SPLIT.split(part, 1)
        tags[_plain(key)] = _plain(value)
    cached = (_plain(parts[0]), tags)
    if len(_heads) >= HEAD_CACHE:
        _heads.clear()
    _heads[head] = cached
    return cached


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, MetricValue], int]:
    """``(measurement, tags, fields, time_ms)`` of one line; raises LineProtocolError.

    The tags dict may be shared between lines of one series: do not change it.
    """
    try:
        rest, _, stamp = line.rpartition(" ")
        match = _HEAD_END.search(rest)
        if match is None:
            raise LineProtocolError("no field set")
        end = match.start()
        measurement, tags = _head(rest[:end])
        return measurement, tags, _fields(rest[end + 1 :]), int(stamp)
    except LineProtocolError:
        raise
    except ValueError as err:
        raise LineProtocolError(f"not line protocol: {err}") from err


def _measurement(line: bytes) -> str:
    """The measurement of a line, cheaply (the hub's measurement names have no escapes)."""
    comma = line.find(b",")
    return line[:comma].decode("utf-8", "replace") if comma > 0 else ""


def item_of(line: str) -> StreamItem | None:
    """The reading or status change a WAL line holds; None for the hub's own points."""
    measurement, tags, fields, time_ms = parse_line(line)
    if measurement == STATUS_MEASUREMENT:
        online = fields.get("online")
        reason = fields.get("reason", "")
        device_id = tags.get("device_id", "")
        return StatusChange(
            device_id,
            tags.get("family", ""),
            online == 1.0,
            str(reason),
            time_ms,
            tuple(sorted(tags.items())),
        )
    if measurement in HUB_MEASUREMENTS or "device_id" not in tags:
        return None
    kind: Literal["telemetry", "event"] = "telemetry"
    family = tags.get("family", measurement)
    if measurement.endswith(EVENT_SUFFIX) and measurement != family:
        kind = "event"
    return Reading(tags["device_id"], family, kind, tags, fields, time_ms)


def decode_records(
    records: Iterable[bytes], wanted: frozenset[str] | None, on_error: Callable[[str], None]
) -> list[StreamItem]:
    """The readings and status changes of WAL records, only of ``wanted`` measurements."""
    items: list[StreamItem] = []
    for record in records:
        for line in record.split(b"\n"):
            if not line:
                continue
            if wanted is not None and _measurement(line) not in wanted:
                continue
            try:
                item = item_of(line.decode("utf-8", "replace"))
            except LineProtocolError as err:
                on_error(f"{err}: {line[:120]!r}")
                continue
            if item is not None:
                items.append(item)
    return items


# -- positions -----------------------------------------------------------------------
@dataclass(slots=True)
class _Cursor:
    position: WalPosition
    essential: bool
    skipped_segments: int = 0
    parse_errors: int = 0


@dataclass
class WalCursors:
    """Each consumer's committed position; releases the segments all of them are past."""

    wal: WriteAheadLog
    hold_fill: float = 0.5
    _cursors: dict[str, _Cursor] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, name: str, position: WalPosition, *, essential: bool = False) -> None:
        """Add a consumer at ``position``; an essential one (InfluxDB) is never overtaken."""
        with self._lock:
            self._cursors[name] = _Cursor(position, essential)

    def position(self, name: str) -> WalPosition:
        """Where ``name`` committed last."""
        with self._lock:
            return self._cursors[name].position

    def commit(self, name: str, position: WalPosition) -> int:
        """``name`` holds everything before ``position``; release what all hold."""
        with self._lock:
            self._cursors[name].position = position
            point = self._release_point()
            return self.wal.release(point) if point is not None else 0

    def _release_point(self) -> WalPosition | None:
        holding = self.wal.fill < self.hold_fill
        positions = [c.position for c in self._cursors.values() if c.essential or holding]
        return min(positions, default=None)

    def lowest(self) -> WalPosition | None:
        """The position of the consumer furthest behind (what a clean stop may delete)."""
        with self._lock:
            return min((c.position for c in self._cursors.values()), default=None)

    def names(self) -> list[str]:
        """Registered consumers."""
        with self._lock:
            return list(self._cursors)

    def skipped(self, name: str, segments: int) -> None:
        """Count segments a lagging consumer lost (released past it)."""
        with self._lock:
            self._cursors[name].skipped_segments += segments

    def parse_error(self, name: str) -> None:
        """Count a line a consumer could not read."""
        with self._lock:
            self._cursors[name].parse_errors += 1

    def figures(self) -> dict[str, tuple[int, int, int]]:
        """Per consumer: (bytes behind the durable end, skipped segments, parse errors)."""
        with self._lock:
            cursors = dict(self._cursors)
        return {
            name: (self.wal.bytes_after(c.position), c.skipped_segments, c.parse_errors)
            for name, c in cursors.items()
        }


def run_consumer(
    wal: WriteAheadLog,
    cursors: WalCursors,
    consumer: WalConsumer,
    stop: threading.Event,
    beat: Callable[[], None],
    pressure: Callable[[], bool] = lambda: False,
    duty: float = BACKLOG_DUTY,
    ingest_lag: Callable[[], int] = lambda: 0,
    intake_busy: Callable[[], float] = lambda: 0.0,
) -> None:
    """One consumer's loop: read from its position, hand over, commit; until ``stop``.

    Restarted by its supervisor after an error, it resumes at the last committed position,
    so the batch that failed is handed over again. While ``pressure()`` says ingest is
    draining a backlog, it yields so as to run at most ``duty`` of the time. A raw-record
    consumer (its work in another process) yields only while ``ingest_lag()``, InfluxDB's
    writer's bytes behind, exceeds ``INGEST_BACKLOG_BYTES``, or ``intake_busy()``, the
    intake handler's busy share, exceeds ``INTAKE_BUSY_SHARE``.
    """
    name = consumer.name
    position = cursors.position(name)
    raw = consumer if isinstance(consumer, RecordConsumer) else None
    if raw is not None:
        position = raw.resume_position(position, wal.first_position(), wal.durable)

    def parse_failed(detail: str) -> None:
        cursors.parse_error(name)
        log.error("consumer %s: a WAL line is not readable, skipped: %s", name, detail)

    while not stop.is_set():
        beat()
        first = wal.first_position()
        if position < first:
            lost = first.segment - position.segment
            cursors.skipped(name, lost)
            log.error(
                "consumer %s fell behind by more than the WAL holds for it: %d segment(s) "
                "released before it read them",
                name,
                lost,
            )
            position = first
            cursors.commit(name, position)
        if not wal.wait_for_data(position, timeout_s=IDLE_WAIT_S):
            consumer.tick()
            continue
        started = time.perf_counter()
        records, end = wal.read(position, READ_BYTES)
        if raw is not None:
            raw.consume_records(records, end, parse_failed)
        else:
            consumer.consume(decode_records(records, consumer.wanted(), parse_failed), end)
        position = end
        cursors.commit(name, end)
        consumer.tick()  # durations run out under a steady stream too
        # A raw consumer's work is in another process, but reading and handing over the
        # records costs the hub's GIL and the engine a core: while ingest drained a backlog
        # that cost 26-31 % of its rate; with no backlog there is nothing to hold back for.
        behind = (
            ingest_lag() > INGEST_BACKLOG_BYTES or intake_busy() > INTAKE_BUSY_SHARE
            if raw is not None
            else pressure()
        )
        lag = wal.bytes_after(position)
        if (raw is None and lag > LAG_YIELD_BYTES) or behind:
            share = min(1.0, duty + lag / max(1.0, wal.max_bytes * cursors.hold_fill / 2))
            if share < 1.0:
                busy = time.perf_counter() - started
                stop.wait(min(MAX_YIELD_S, busy * (1 - share) / share))
