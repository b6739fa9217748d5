"""Scheduled maintenance windows: a device, or a kecamatan and/or family, pages no one.

A window is planned ahead (``kotahub alerts maintenance add``) and kept in the alert
database. While it is open, the alerts it covers are recorded as always (events, the
``alert`` measurement) but send no raise, stage, escalation or repeat page and are not
posted to Alertmanager; escalation waits, so a still-firing alert escalates as usual
once the window closed. A window covers a device by id, or every device of its
kecamatan and/or family (both must match when both are given).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.alerts.alert_store import AlertRow, AlertStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS maintenance (
    id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT, kecamatan TEXT, family TEXT,
    starts_ms INTEGER NOT NULL, ends_ms INTEGER NOT NULL, created_by TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '');
"""


class MaintenanceError(ValueError):
    """A window without a scope or with its end before its start."""


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """One planned window."""

    id: int
    device_id: str | None
    kecamatan: str | None
    family: str | None
    starts_ms: int
    ends_ms: int
    created_by: str
    comment: str


def add_window(
    store: AlertStore,
    *,
    device_id: str | None = None,
    kecamatan: str | None = None,
    family: str | None = None,
    starts_ms: int,
    ends_ms: int,
    actor: str,
    comment: str = "",
) -> int:
    """Plan a window; its id. MaintenanceError without a scope or with end <= start."""
    if device_id is None and kecamatan is None and family is None:
        raise MaintenanceError("a window needs a device, a kecamatan or a family")
    if ends_ms <= starts_ms:
        raise MaintenanceError("a window must end after it starts")
    with store.transaction() as db:
        cursor = db.execute(
            "INSERT INTO maintenance (device_id, kecamatan, family, starts_ms, ends_ms, "
            "created_by, comment) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device_id, kecamatan, family, starts_ms, ends_ms, actor, comment),
        )
        return int(cursor.lastrowid or 0)


def end_window(store: AlertStore, window_id: int, now_ms: int) -> bool:
    """Close a window now (a planned one is cancelled); False when there is none open."""
    with store.transaction() as db:
        cursor = db.execute(
            "UPDATE maintenance SET starts_ms = min(starts_ms, ?), ends_ms = ? "
            "WHERE id = ? AND ends_ms > ?",
            (now_ms, now_ms, window_id, now_ms),
        )
        return cursor.rowcount > 0


def windows(store: AlertStore, *, after_ms: int | None = None) -> list[MaintenanceWindow]:
    """Every window (only those still open at or planned after ``after_ms`` when given)."""
    with store.transaction() as db:
        rows = db.execute(
            "SELECT id, device_id, kecamatan, family, starts_ms, ends_ms, created_by, comment "
            "FROM maintenance WHERE ends_ms > ? ORDER BY starts_ms, id",
            (after_ms if after_ms is not None else -1,),
        ).fetchall()
    return [MaintenanceWindow(*row) for row in rows]


def in_window(db: sqlite3.Connection, alert: AlertRow, now_ms: int) -> bool:
    """Whether an open window covers the alert's device at ``now_ms``."""
    row = db.execute(
        "SELECT 1 FROM maintenance WHERE starts_ms <= ? AND ends_ms > ? AND ("
        "device_id = ? OR (device_id IS NULL "
        "AND (kecamatan IS NULL OR kecamatan = ?) AND (family IS NULL OR family = ?))) LIMIT 1",
        (now_ms, now_ms, alert.device_id, alert.kecamatan, alert.family),
    ).fetchone()
    return row is not None
