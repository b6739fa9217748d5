"""Alert state in SQLite (``<state_dir>/alerts/alerts.sqlite3``): survives restarts and crashes.

One transaction per batch of the stream holds the engine's tracks, the alerts they
changed, the events (raise, stage, clear, ack, escalate, resolve, silence, flap), the
pages to send (the outbox) and the WAL position after the batch. A crash rolls all of
that back together, and the stream is handed over again from the saved position: each
reading changes the alerts exactly once, and a page is queued exactly once.

Pages are sent from the outbox by the notifier, which marks each one sent (and logs every
attempt in ``deliveries``) after the receiver took it; a crash in the instant between
the receiver's answer and that mark sends it again, with the same notification id.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.alerts.maintenance import SCHEMA as MAINTENANCE_SCHEMA
from hub.alerts.maintenance import in_window
from hub.alerts.rule_engine import AlertEvent, Track
from hub.ingest.write_ahead_log import WalPosition

SCHEMA = """
CREATE TABLE IF NOT EXISTS position (
    id INTEGER PRIMARY KEY CHECK (id = 1), segment INTEGER NOT NULL, byte INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (key TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    key TEXT PRIMARY KEY, rule_id TEXT NOT NULL, device_id TEXT NOT NULL,
    instance INTEGER NOT NULL, state TEXT NOT NULL, level INTEGER NOT NULL,
    stage TEXT NOT NULL, severity TEXT NOT NULL, value TEXT, message TEXT NOT NULL,
    family TEXT NOT NULL, kecamatan TEXT NOT NULL, team TEXT NOT NULL,
    raised_ms INTEGER NOT NULL, changed_ms INTEGER NOT NULL,
    acked_by TEXT, acked_ms INTEGER, resolved_ms INTEGER, flapping INTEGER NOT NULL DEFAULT 0,
    escalation INTEGER NOT NULL DEFAULT 0, last_page_ms INTEGER);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, instance INTEGER NOT NULL,
    kind TEXT NOT NULL, time_ms INTEGER NOT NULL, level INTEGER NOT NULL, stage TEXT NOT NULL,
    severity TEXT NOT NULL, value TEXT, actor TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '', exported INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS events_unexported ON events (exported) WHERE exported = 0;
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id INTEGER NOT NULL, key TEXT NOT NULL,
    instance INTEGER NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL, title TEXT NOT NULL,
    body TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    next_try_ms INTEGER NOT NULL, created_ms INTEGER NOT NULL, sent_ms INTEGER,
    last_error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_try_ms);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, outbox_id INTEGER NOT NULL, attempt INTEGER NOT NULL,
    time_ms INTEGER NOT NULL, target TEXT NOT NULL, ok INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rule_id TEXT, device_id TEXT, kecamatan TEXT,
    starts_ms INTEGER NOT NULL, ends_ms INTEGER NOT NULL, created_by TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS used_links (nonce TEXT PRIMARY KEY, used_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS incident_children (
    parent_key TEXT NOT NULL, parent_instance INTEGER NOT NULL, child_key TEXT NOT NULL,
    child_instance INTEGER NOT NULL, time_ms INTEGER NOT NULL,
    PRIMARY KEY (child_key, child_instance));
"""
ALERT_COLUMNS = (
    "key, rule_id, device_id, instance, state, level, stage, severity, value, message, family, "
    "kecamatan, team, raised_ms, changed_ms, acked_by, acked_ms, resolved_ms, flapping, "
    "escalation, last_page_ms"
)
SELECT_ALERT = f"SELECT {ALERT_COLUMNS} FROM alerts WHERE key = ?"  # noqa: S608
INSERT_ALERT = (
    f"INSERT OR REPLACE INTO alerts ({ALERT_COLUMNS}) VALUES (?, ?, ?, ?, 'firing', "  # noqa: S608
    "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, 0, NULL)"
)


class AlertStoreError(Exception):
    """The alert database cannot be opened or does not hold the asked-for alert."""


@dataclass(frozen=True, slots=True)
class Page:
    """A notification to send: one outbox row."""

    id: int
    event_id: int
    key: str
    instance: int
    kind: str
    target: str
    title: str
    body: str
    attempts: int


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert as stored (the latest instance of its rule on its device)."""

    key: str
    rule_id: str
    device_id: str
    instance: int
    state: str  # firing | resolved
    level: int
    stage: str
    severity: str
    value: str | None
    message: str
    family: str
    kecamatan: str
    team: str
    raised_ms: int
    changed_ms: int
    acked_by: str | None
    acked_ms: int | None
    resolved_ms: int | None
    flapping: int
    escalation: int
    last_page_ms: int | None


def _value_text(value: object) -> str | None:
    return None if value is None else json.dumps(value)


def default_path(state_dir: Path) -> Path:
    """Where the hub keeps its alert database."""
    return state_dir / "alerts" / "alerts.sqlite3"


class AlertStore:
    """One connection to the alert database, for one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Used by one thread at a time, not always the one that opened it (the hub
            # opens the consumer's store before its thread starts).
            self._db = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed batch (its WAL position included) survives a power cut.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA + MAINTENANCE_SCHEMA)
        except sqlite3.Error as err:
            raise AlertStoreError(f"{path}: cannot open the alert database: {err}") from err
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- the engine's side -----------------------------------------------------------
    def position(self) -> WalPosition | None:
        """The WAL position after the last batch committed, or None."""
        row = self._db.execute("SELECT segment, byte FROM position WHERE id = 1").fetchone()
        return WalPosition(row[0], row[1]) if row else None

    def tracks(self) -> dict[str, Track]:
        """Every saved track."""
        rows = self._db.execute("SELECT key, state FROM tracks").fetchall()
        return {key: Track.from_json(json.loads(state)) for key, state in rows}

    def apply(
        self,
        events: Iterable[AlertEvent],
        tracks: dict[str, Track],
        position: WalPosition | None,
        page: PageMaker | None,
        now_ms: int,
    ) -> list[int]:
        """Save one batch: tracks, alerts, events, pages and the position; the event ids."""
        ids: list[int] = []
        with self.transaction() as db:
            for key, track in tracks.items():
                db.execute(
                    "INSERT INTO tracks (key, state) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET state = excluded.state",
                    (key, json.dumps(track.to_json())),
                )
            for event in events:
                ids.append(self._apply_event(db, event, page, now_ms))
            if position is not None:
                db.execute(
                    "INSERT INTO position (id, segment, byte) VALUES (1, ?, ?) ON CONFLICT(id) "
                    "DO UPDATE SET segment = excluded.segment, byte = excluded.byte",
                    (position.segment, position.offset),
                )
        return ids

    def _apply_event(
        self, db: sqlite3.Connection, event: AlertEvent, page: PageMaker | None, now_ms: int
    ) -> int:
        row = db.execute(SELECT_ALERT, (event.key,)).fetchone()
        current = AlertRow(*row) if row else None
        value = _value_text(event.value)
        if event.kind == "raise":
            instance = (current.instance + 1) if current else 1
            db.execute(
                INSERT_ALERT,
                (
                    event.key,
                    event.rule_id,
                    event.device_id,
                    instance,
                    event.level,
                    event.stage,
                    event.severity,
                    value,
                    event.message,
                    event.family,
                    event.kecamatan,
                    event.team,
                    event.time_ms,
                    event.time_ms,
                    int(event.flapping),
                ),
            )
        elif current is None:
            instance = 0  # a clear or flap of an alert this database never saw raised
        else:
            instance = current.instance
            if event.kind == "clear":
                db.execute(
                    "UPDATE alerts SET state = 'resolved', resolved_ms = ?, changed_ms = ?, "
                    "value = ? WHERE key = ? AND state = 'firing'",
                    (event.time_ms, event.time_ms, value, event.key),
                )
            elif event.kind == "stage":
                db.execute(
                    "UPDATE alerts SET level = ?, stage = ?, severity = ?, value = ?, message = ?, "
                    "changed_ms = ? WHERE key = ?",
                    (
                        event.level,
                        event.stage,
                        event.severity,
                        value,
                        event.message,
                        event.time_ms,
                        event.key,
                    ),
                )
            elif event.kind in ("flap_start", "flap_end"):
                db.execute(
                    "UPDATE alerts SET flapping = ? WHERE key = ?",
                    (int(event.kind == "flap_start"), event.key),
                )
        cursor = db.execute(
            "INSERT INTO events (key, instance, kind, time_ms, level, stage, severity, value, "
            "message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.key,
                instance,
                event.kind,
                event.time_ms,
                event.level,
                event.stage,
                event.severity,
                value,
                event.message,
            ),
        )
        event_id = int(cursor.lastrowid or 0)
        if page is not None and instance:
            alert = self._alert(db, event.key)
            if alert is not None and event.kind == "raise":
                for parent_id in page.parents_of(alert.device_id):
                    parent = self._firing_parent(db, parent_id)
                    if parent is not None:
                        # Its parent (NVR, gateway) is down: one incident on it, no page.
                        self._join(db, parent, alert, event.time_ms)
                        break
                # Devices behind it that failed first join its incident (no more repeats).
                for child_id in page.children_of(alert.device_id):
                    child = self._firing_parent(db, child_id)
                    if child is not None:
                        self._join(db, alert, child, event.time_ms)
            if alert is not None and not self._is_child(db, alert):
                targets = page.pages(event, alert, self._silenced(db, alert, now_ms), now_ms)
                when = page.send_after(alert, now_ms) if targets else now_ms
                # The agent says its parent is down: wait for the parent's alert to join it.
                when = max(when, now_ms + page.parent_hold_ms(event, alert))
                for target, title in targets:
                    self._queue_page(
                        db, event_id, alert, event.kind, target, title, event.message, now_ms, when
                    )
        return event_id

    def _queue_page(
        self,
        db: sqlite3.Connection,
        event_id: int,
        alert: AlertRow,
        kind: str,
        target: str,
        title: str,
        body: str,
        now_ms: int,
        send_after_ms: int | None = None,
    ) -> None:
        due = max(now_ms, send_after_ms or now_ms)  # quiet hours defer, never drop
        db.execute(
            "INSERT INTO outbox (event_id, key, instance, kind, target, title, body, next_try_ms, "
            "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event_id, alert.key, alert.instance, kind, target, title, body, due, now_ms),
        )
        db.execute("UPDATE alerts SET last_page_ms = ? WHERE key = ?", (now_ms, alert.key))

    @staticmethod
    def _join(db: sqlite3.Connection, parent: AlertRow, child: AlertRow, time_ms: int) -> None:
        """The child's alert joins the parent's incident; its held pages are dropped."""
        db.execute(
            "INSERT OR IGNORE INTO incident_children VALUES (?, ?, ?, ?, ?)",
            (parent.key, parent.instance, child.key, child.instance, time_ms),
        )
        # Held (waiting for the parent, or quiet hours), never tried: the parent pages now.
        db.execute(
            "UPDATE outbox SET state = 'cancelled' WHERE key = ? AND instance = ? "
            "AND state = 'pending' AND attempts = 0 AND next_try_ms > ?",
            (child.key, child.instance, time_ms),
        )

    @staticmethod
    def _firing_parent(db: sqlite3.Connection, parent_id: str | None) -> AlertRow | None:
        if parent_id is None:
            return None
        row = db.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE device_id = ? AND state = 'firing' "  # noqa: S608
            "ORDER BY raised_ms LIMIT 1",
            (parent_id,),
        ).fetchone()
        return AlertRow(*row) if row else None

    @staticmethod
    def _is_child(db: sqlite3.Connection, alert: AlertRow) -> bool:
        row = db.execute(
            "SELECT 1 FROM incident_children WHERE child_key = ? AND child_instance = ?",
            (alert.key, alert.instance),
        ).fetchone()
        return row is not None

    def is_child(self, alert: AlertRow) -> bool:
        """Whether the alert belongs to an incident on its parent (it pages no one)."""
        return self._is_child(self._db, alert)

    def children(self, key: str) -> list[sqlite3.Row]:
        """The alerts of devices behind this alert's device, grouped into its incident."""
        return self._db.execute(
            "SELECT c.child_key, c.child_instance, c.time_ms, a.state FROM incident_children c "
            "JOIN alerts a ON a.key = c.child_key WHERE c.parent_key = ? ORDER BY c.time_ms",
            (key,),
        ).fetchall()

    @staticmethod
    def _alert(db: sqlite3.Connection, key: str) -> AlertRow | None:
        row = db.execute(SELECT_ALERT, (key,)).fetchone()
        return AlertRow(*row) if row else None

    @staticmethod
    def _silenced(db: sqlite3.Connection, alert: AlertRow, now_ms: int) -> bool:
        row = db.execute(
            "SELECT 1 FROM silences WHERE starts_ms <= ? AND ends_ms > ? "
            "AND (rule_id IS NULL OR rule_id = ?) AND (device_id IS NULL OR device_id = ?) "
            "AND (kecamatan IS NULL OR kecamatan = ?) LIMIT 1",
            (now_ms, now_ms, alert.rule_id, alert.device_id, alert.kecamatan),
        ).fetchone()
        return row is not None or in_window(db, alert, now_ms)  # maintenance pages no one

    def in_maintenance_window(self, alert: AlertRow, now_ms: int) -> bool:
        """Whether a planned maintenance window covers the alert now (maintenance.py)."""
        return in_window(self._db, alert, now_ms)

    # -- export to the ``alert`` measurement --------------------------------------------
    def unexported(self, limit: int = 1000) -> list[sqlite3.Row]:
        """Events not yet handed to the WAL, oldest first, with their alert's tags."""
        return self._db.execute(
            "SELECT e.id, e.key, e.instance, e.kind, e.time_ms, e.level, e.stage, e.severity, "
            "e.value, e.actor, e.message, a.rule_id, a.device_id, a.family, a.kecamatan, a.team "
            "FROM events e JOIN alerts a ON a.key = e.key WHERE e.exported = 0 "
            "ORDER BY e.id LIMIT ?",
            (limit,),
        ).fetchall()

    def mark_exported(self, ids: list[int]) -> None:
        """The WAL holds these events' points."""
        if not ids:
            return
        with self.transaction() as db:
            db.executemany("UPDATE events SET exported = 1 WHERE id = ?", [(i,) for i in ids])

    # -- pages ---------------------------------------------------------------------------
    def due_pages(self, now_ms: int, limit: int = 100) -> list[Page]:
        """Pages waiting to be sent whose next try is due."""
        rows = self._db.execute(
            "SELECT id, event_id, key, instance, kind, target, title, body, attempts FROM outbox "
            "WHERE state = 'pending' AND next_try_ms <= ? ORDER BY id LIMIT ?",
            (now_ms, limit),
        ).fetchall()
        return [Page(*row) for row in rows]

    def record_attempt(
        self, page: Page, now_ms: int, *, ok: bool, detail: str, retry_at_ms: int | None
    ) -> None:
        """Log one delivery attempt; mark the page sent, due again, or failed for good."""
        with self.transaction() as db:
            attempt = page.attempts + 1
            db.execute(
                "INSERT INTO deliveries (outbox_id, attempt, time_ms, target, ok, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (page.id, attempt, now_ms, page.target, int(ok), detail[:500]),
            )
            if ok:
                state, next_try = "sent", now_ms
            elif retry_at_ms is None:
                state, next_try = "failed", now_ms
            else:
                state, next_try = "pending", retry_at_ms
            db.execute(
                "UPDATE outbox SET state = ?, attempts = ?, next_try_ms = ?, last_error = ?, "
                "sent_ms = CASE WHEN ? THEN ? ELSE sent_ms END WHERE id = ?",
                (state, attempt, next_try, "" if ok else detail[:500], ok, now_ms, page.id),
            )

    def deliveries(self) -> list[sqlite3.Row]:
        """Every delivery attempt, oldest first."""
        return self._db.execute(
            "SELECT d.*, o.key, o.kind FROM deliveries d JOIN outbox o ON o.id = d.outbox_id "
            "ORDER BY d.id"
        ).fetchall()

    def pages(self) -> list[sqlite3.Row]:
        """Every outbox row."""
        return self._db.execute("SELECT * FROM outbox ORDER BY id").fetchall()

    # -- operators -------------------------------------------------------------------------
    def alerts(self, *, state: str | None = None) -> list[AlertRow]:
        """Alerts, newest change first; only ``state`` (firing, resolved) when given."""
        query = f"SELECT {ALERT_COLUMNS} FROM alerts"  # noqa: S608
        args: tuple[Any, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            args = (state,)
        rows = self._db.execute(query + " ORDER BY changed_ms DESC", args).fetchall()
        return [AlertRow(*row) for row in rows]

    def alert(self, key: str) -> AlertRow:
        """One alert by key (``rule|device``); AlertStoreError when there is none."""
        found = self._alert(self._db, key)
        if found is None:
            raise AlertStoreError(f"no alert {key!r} (see `kotahub alerts list`)")
        return found

    def events_of(self, key: str) -> list[sqlite3.Row]:
        """The events of one alert, oldest first."""
        return self._db.execute(
            "SELECT id, instance, kind, time_ms, level, stage, severity, value, actor, message "
            "FROM events WHERE key = ? ORDER BY id",
            (key,),
        ).fetchall()

    def operator_event(
        self, key: str, kind: str, actor: str, now_ms: int, *, instance: int | None = None
    ) -> bool:
        """Acknowledge or resolve by hand; False when the alert is not firing (or acked)."""
        with self.transaction() as db:
            alert = self._alert(db, key)
            if alert is None:
                raise AlertStoreError(f"no alert {key!r} (see `kotahub alerts list`)")
            if alert.state != "firing" or (instance is not None and instance != alert.instance):
                return False
            if kind == "ack":
                if alert.acked_ms is not None:
                    return False
                db.execute(
                    "UPDATE alerts SET acked_by = ?, acked_ms = ? WHERE key = ?",
                    (actor, now_ms, key),
                )
            elif kind == "resolve":
                db.execute(
                    "UPDATE alerts SET state = 'resolved', resolved_ms = ?, changed_ms = ? "
                    "WHERE key = ?",
                    (now_ms, now_ms, key),
                )
            else:
                raise AlertStoreError(f"unknown operator action {kind!r}")
            db.execute(
                "INSERT INTO events (key, instance, kind, time_ms, level, stage, severity, value, "
                "actor, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    alert.instance,
                    kind,
                    now_ms,
                    alert.level,
                    alert.stage,
                    alert.severity,
                    alert.value,
                    actor,
                    f"{kind} by {actor}",
                ),
            )
            # Pending escalations and repeats of this instance are dropped.
            db.execute(
                "UPDATE outbox SET state = 'cancelled' WHERE key = ? AND instance = ? "
                "AND state = 'pending' AND kind IN ('escalate', 'repeat')",
                (key, alert.instance),
            )
        return True

    def add_silence(
        self,
        *,
        rule_id: str | None,
        device_id: str | None,
        kecamatan: str | None,
        starts_ms: int,
        ends_ms: int,
        actor: str,
        comment: str = "",
    ) -> int:
        """Silence pages of matching alerts from ``starts_ms`` to ``ends_ms``; the id."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO silences (rule_id, device_id, kecamatan, starts_ms, ends_ms, "
                "created_by, comment) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rule_id, device_id, kecamatan, starts_ms, ends_ms, actor, comment),
            )
            return int(cursor.lastrowid or 0)

    def use_link(self, nonce: str, now_ms: int) -> bool:
        """Mark a one-tap link used; False when it was used before."""
        with self.transaction() as db:
            try:
                db.execute("INSERT INTO used_links (nonce, used_ms) VALUES (?, ?)", (nonce, now_ms))
            except sqlite3.IntegrityError:
                return False
        return True

    # -- time-driven pages ------------------------------------------------------------------
    def firing_unacked(self) -> list[AlertRow]:
        """Firing alerts nobody acknowledged."""
        rows = self._db.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'firing' AND acked_ms IS NULL"  # noqa: S608
        ).fetchall()
        return [AlertRow(*row) for row in rows]

    def escalate(
        self, alert: AlertRow, kind: str, targets: list[tuple[str, str]], now_ms: int, *, level: int
    ) -> None:
        """Record an escalation (or a repeat) of an unacknowledged alert and queue its pages."""
        with self.transaction() as db:
            fresh = self._alert(db, alert.key)
            if (
                fresh is None
                or fresh.instance != alert.instance
                or fresh.acked_ms is not None
                or fresh.state != "firing"
            ):
                return  # acknowledged or cleared meanwhile
            cursor = db.execute(
                "INSERT INTO events (key, instance, kind, time_ms, level, stage, severity, value, "
                "actor, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'kotahub', ?)",
                (
                    alert.key,
                    alert.instance,
                    kind,
                    now_ms,
                    alert.level,
                    alert.stage,
                    alert.severity,
                    alert.value,
                    alert.message,
                ),
            )
            event_id = int(cursor.lastrowid or 0)
            if kind == "escalate":
                db.execute("UPDATE alerts SET escalation = ? WHERE key = ?", (level, alert.key))
            if not self._silenced(db, fresh, now_ms):
                for target, title in targets:
                    self._queue_page(
                        db, event_id, fresh, kind, target, title, alert.message, now_ms
                    )
            else:
                db.execute("UPDATE alerts SET last_page_ms = ? WHERE key = ?", (now_ms, alert.key))


class PageMaker:
    """Decides which events page whom (the router's targets); see ``alert_router.py``."""

    def pages(
        self, event: AlertEvent, alert: AlertRow, silenced: bool, now_ms: int
    ) -> list[tuple[str, str]]:
        """(target URL, title) for each page this event sends (``now_ms``: the engine's time)."""
        raise NotImplementedError

    def send_after(self, alert: AlertRow, now_ms: int) -> int:
        """When the alert's pages may go (quiet hours defer non-critical ones)."""
        return now_ms

    def parents_of(self, device_id: str) -> list[str]:
        """The device's parents in the registry's topology (its NVR, its gateway)."""
        return []

    def parent_hold_ms(self, event: AlertEvent, alert: AlertRow) -> int:
        """How long a raise waits for its parent's alert when its cause names the parent."""
        return 0

    def children_of(self, device_id: str) -> list[str]:
        """The devices behind this one in the registry's topology."""
        return []
