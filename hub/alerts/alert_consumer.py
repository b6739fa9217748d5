"""The alert engine as a consumer of the hub's write-ahead log (``hub.ingest.wal_consumers``).

Each batch of the stream is evaluated and saved in one SQLite transaction with the WAL
position after it, so a crash re-evaluates exactly what was not saved. Time-driven work
runs in ``tick``: for-durations, silent metrics, escalations and repeats. Every event is
written to the ``alert`` measurement through the WAL (``sink``): an event is marked
exported one tick after it was queued, so one lost in a crash is queued again (the
points are idempotent: same series, same time).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence

from hub.alerts.alert_store import AlertStore, PageMaker
from hub.alerts.clock import Clock
from hub.alerts.rule_engine import AlertEvent, RuleEngine
from hub.ingest.device_status import StatusChange
from hub.ingest.line_protocol import FieldValue, format_line
from hub.ingest.wal_consumers import Reading, StreamItem
from hub.ingest.write_ahead_log import WalPosition

log = logging.getLogger(__name__)

ALERT_MEASUREMENT = "alert"
TICK_INTERVAL_MS = 200
POSITION_COMMIT_MS = 1000
Sink = Callable[[list[str]], None]


def alert_line(row: sqlite3.Row) -> str:
    """The ``alert`` point of one stored event (schema: docs/architecture.md)."""
    tags = {
        "rule_id": row["rule_id"],
        "device_id": row["device_id"],
        "family": row["family"],
        "kecamatan": row["kecamatan"],
        "team": row["team"],
        "severity": row["severity"],
        "event": row["kind"],
    }
    fields: dict[str, FieldValue] = {
        "alert_key": row["key"],
        "instance": float(row["instance"]),
        "level": float(row["level"]),
        "stage": row["stage"],
        "message": (row["message"] or "")[:256],
        "actor": row["actor"] or "",
        "event_id": float(row["id"]),
    }
    raw = row["value"]
    if raw is not None:
        import json

        value = json.loads(raw)
        if isinstance(value, int | float) and not isinstance(value, bool):
            fields["value"] = float(value)
        else:
            fields["value_text"] = str(value)[:256]
    return format_line(
        ALERT_MEASUREMENT, {k: v for k, v in tags.items() if v}, fields, row["time_ms"]
    )


class AlertConsumer:
    """Feeds the rule engine from the WAL and keeps its state in the alert store."""

    name = "alerts"

    def __init__(
        self,
        engine: RuleEngine,
        store: AlertStore,
        clock: Clock,
        *,
        pages: PageMaker | None = None,
        sink: Sink | None = None,
        on_saved: Callable[[], None] | None = None,
        escalations: Callable[[AlertStore, int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.clock = clock
        self.pages = pages
        self.sink = sink
        self.on_saved = on_saved
        self.escalations = escalations
        self._last_tick = 0
        self._last_commit = 0
        self._queued_ids: list[int] = []
        engine.load(store.tracks())
        families: set[str] = set()
        everything = False
        for compiled in engine.rules:
            scope = compiled.rule.scope.families
            everything = everything or not scope
            for family in scope:
                families.update((family, f"{family}_event"))
        families.add("device_status")
        self._wanted = None if everything else frozenset(families)

    def start_position(self, first: WalPosition, durable: WalPosition) -> WalPosition:
        """After the last batch saved; the log's start when it holds nothing saved here."""
        saved = self.store.position()
        if saved is None or not first <= saved <= durable:
            # Never run, or the log was emptied by a clean stop after every consumer
            # had read it all (segment numbers start again): begin at its start.
            return first
        return saved

    def wanted(self) -> frozenset[str] | None:
        """The families the rules watch, their events, and status changes."""
        return self._wanted

    def consume(self, items: Sequence[StreamItem], end: WalPosition) -> None:
        """Evaluate a batch and save its effect with ``end``, in one transaction."""
        try:
            self._consume(items, end)
        except Exception:
            # The batch is handed over again (from the last committed position): the
            # engine must start it from the saved state, or its raises would be lost.
            self.engine.reset(self.store.tracks())
            raise

    def _consume(self, items: Sequence[StreamItem], end: WalPosition) -> None:
        engine = self.engine
        events: list[AlertEvent] = []
        for item in items:
            if type(item) is Reading:
                events += engine.on_reading(item)
            elif isinstance(item, StatusChange):
                events += engine.on_status(item)
        dirty = engine.take_dirty()
        now = self.clock.now_ms()
        if not events and not dirty and now - self._last_commit < POSITION_COMMIT_MS:
            # Nothing changed that a replay would not redo the same way: the position
            # alone is saved at most once a second (an fsync per read would slow the
            # hub's own WAL fsyncs).
            return
        self.store.apply(events, dirty, end, self.pages, now)
        self._last_commit = now
        if events:
            self._after_save()

    def tick(self) -> None:
        """Time-driven evaluation, escalations and the export of events, a few times a second."""
        now = self.clock.now_ms()
        if now - self._last_tick < TICK_INTERVAL_MS:
            return
        self._last_tick = now
        events = self.engine.tick()
        dirty = self.engine.take_dirty()
        if events or dirty:
            self.store.apply(events, dirty, None, self.pages, now)
        if self.escalations is not None:
            self.escalations(self.store, now)
        self._export()
        if events:
            self._after_save()

    def _after_save(self) -> None:
        if self.on_saved is not None:
            self.on_saved()

    def _export(self) -> None:
        """Queue unexported events as ``alert`` points; mark those of the last tick done."""
        if self.sink is None:
            return
        # Queued a tick ago: the flusher has fsynced them by now (it groups for ~4 ms).
        self.store.mark_exported(self._queued_ids)
        rows = self.store.unexported()
        queued = {*self._queued_ids}
        fresh = [row for row in rows if row["id"] not in queued]
        self._queued_ids = [row["id"] for row in fresh]
        if fresh:
            self.sink([alert_line(row) for row in fresh])
