"""The agent's outbox: a bounded first-in-first-out queue on disk (SQLite).

Every message the agent publishes passes through it, so order holds across broker
outages and agent restarts. When full, the oldest messages are dropped and counted.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class BufferedMessage:
    """One queued MQTT message."""

    id: int
    topic: str
    payload: bytes
    retain: bool


class DiskBuffer:
    """A bounded on-disk FIFO of MQTT messages."""

    def __init__(self, path: Path, *, max_messages: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_messages = max_messages
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        # WAL without fsync per commit: a power cut may lose the last second, a crash loses nothing.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            "id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
            "payload BLOB NOT NULL, retain INTEGER NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER)"
        )
        self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        row = self._db.execute("SELECT value FROM counters WHERE name='dropped'").fetchone()
        self.dropped = int(row[0]) if row else 0

    def __len__(self) -> int:
        return self._count

    def append(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Queue a message; drop the oldest when full. Returns how many were dropped now."""
        dropped = 0
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO outbox (topic, payload, retain) VALUES (?, ?, ?)",
                (topic, payload, int(retain)),
            )
            self._count += 1
            if self._count > self.max_messages:
                dropped = self._count - self.max_messages
                self._db.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                    (dropped,),
                )
                self._count -= dropped
                self.dropped += dropped
                self._db.execute(
                    "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                    "ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                    (self.dropped,),
                )
        return dropped

    def peek(self, limit: int) -> list[BufferedMessage]:
        """The oldest messages, without removing them."""
        rows = self._db.execute(
            "SELECT id, topic, payload, retain FROM outbox ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [BufferedMessage(int(r[0]), str(r[1]), bytes(r[2]), bool(r[3])) for r in rows]

    def remove_through(self, last_id: int) -> None:
        """Forget every message up to and including ``last_id`` (the broker has them)."""
        with self._db:
            cur = self._db.execute("DELETE FROM outbox WHERE id <= ?", (last_id,))
            self._count -= cur.rowcount

    def close(self) -> None:
        """Close the database."""
        self._db.close()
