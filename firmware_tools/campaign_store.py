"""Campaigns and each device's place in one, in SQLite under the state folder.

Every state change is committed as it happens, so a hub that restarts (or is killed)
picks a campaign up where it was: devices still transferring are offered again and
resume from the chunk they hold.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from firmware_tools.errors import FirmwareError

CampaignState = Literal["created", "running", "paused", "done", "rolling_back", "rolled_back"]
# A device's state in a campaign: the sender's states plus the campaign's own.
DEVICE_FINAL: Final = frozenset({"installed", "declined", "failed", "skipped", "rolled_back"})
CAMPAIGN_FILE: Final = "campaigns.sqlite"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS campaign (
    id TEXT PRIMARY KEY,
    image_sha256 TEXT NOT NULL,
    version TEXT NOT NULL,
    waves TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    current_wave INTEGER NOT NULL DEFAULT 0,
    settings TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS campaign_device (
    campaign_id TEXT NOT NULL REFERENCES campaign(id),
    device_id TEXT NOT NULL,
    wave INTEGER NOT NULL,
    state TEXT NOT NULL,
    previous_version TEXT,
    version TEXT,
    next_chunk INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    updated_at REAL NOT NULL,
    PRIMARY KEY (campaign_id, device_id)
);
CREATE TABLE IF NOT EXISTS campaign_wave (
    campaign_id TEXT NOT NULL REFERENCES campaign(id),
    wave INTEGER NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (campaign_id, wave)
);
CREATE TABLE IF NOT EXISTS campaign_lease (
    campaign_id TEXT PRIMARY KEY REFERENCES campaign(id),
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""
# How long a runner's claim on a campaign lasts without renewal: a runner killed with -9
# on another machine is taken over after this; on this machine as soon as its pid is gone.
LEASE_S: Final = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignSettings:
    """A campaign's rules: gates, limits and how the image is sent."""

    max_failure_rate: float = 0.2  # pause at once when more fail than this, within a wave
    min_success_rate: float = 0.9  # the health gate at the end of each wave
    online_timeout_s: float = 60.0  # a device must be back, reporting the version, by then
    devices_per_s: float = 20.0  # how fast new devices are offered the image
    max_concurrent: int = 200  # transfers at once
    rate_bytes_per_s: float = 0.0  # 0: unlimited
    chunk_size: int = 16 * 1024
    offer_timeout_s: float = 30.0
    stall_timeout_s: float = 120.0

    def to_json(self) -> str:
        """As stored."""
        return orjson.dumps({k: getattr(self, k) for k in self.__slots__}).decode()


@dataclass(frozen=True, slots=True)
class Campaign:
    """One campaign as stored."""

    id: str
    image_sha256: str
    version: str
    waves: tuple[float, ...]
    state: CampaignState
    reason: str | None
    current_wave: int
    settings: CampaignSettings


@dataclass(frozen=True, slots=True)
class CampaignDevice:
    """One device's place in a campaign."""

    device_id: str
    wave: int
    state: str
    previous_version: str | None
    version: str | None
    next_chunk: int
    reason: str | None
    updated_at: float = 0.0  # when its state last changed (epoch s)


def runner_name(tag: str = "") -> str:
    """This process's name as a campaign's runner: ``host:pid[:tag]``."""
    return f"{socket.gethostname()}:{os.getpid()}" + (f":{tag}" if tag else "")


def owner_alive(owner: str) -> bool:
    """False only when the owner ran on this host and its process is gone (killed, exited)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine's: only its lease's expiry tells
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CampaignStore:
    """The campaigns file; safe to use from several threads (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as err:
            raise FirmwareError(f"cannot open the campaign store {path}: {err}") from err

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # -- campaigns ------------------------------------------------------------------------------
    def create(
        self,
        campaign_id: str,
        *,
        image_sha256: str,
        version: str,
        waves: Sequence[float],
        settings: CampaignSettings,
        devices: Sequence[tuple[str, int, str | None]],
    ) -> Campaign:
        """A new campaign with its devices (id, wave, current version); refuses a taken id."""
        now = time.time()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO campaign VALUES (?, ?, ?, ?, 'created', NULL, 0, ?, ?, ?)",
                    (
                        campaign_id,
                        image_sha256,
                        version,
                        orjson.dumps(list(waves)).decode(),
                        settings.to_json(),
                        now,
                        now,
                    ),
                )
                self._db.executemany(
                    "INSERT INTO campaign_device (campaign_id, device_id, wave, state,"
                    " previous_version, updated_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                    [(campaign_id, d, w, v, now) for d, w, v in devices],
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as err:
                self._db.execute("ROLLBACK")
                raise FirmwareError(f"campaign {campaign_id!r} already exists") from err
        return self.get(campaign_id)

    def get(self, campaign_id: str) -> Campaign:
        """A campaign by id; FirmwareError when there is none."""
        rows = self._run(
            "SELECT id, image_sha256, version, waves, state, reason, current_wave, settings"
            " FROM campaign WHERE id = ?",
            (campaign_id,),
        )
        if not rows:
            raise FirmwareError(f"no campaign {campaign_id!r}")
        cid, sha, version, waves, state, reason, wave, settings = rows[0]
        return Campaign(
            cid,
            sha,
            version,
            tuple(orjson.loads(waves)),
            state,
            reason,
            wave,
            CampaignSettings(**orjson.loads(settings)),
        )

    def all(self) -> list[Campaign]:
        """Every campaign, oldest first."""
        ids = self._run("SELECT id FROM campaign ORDER BY created_at")
        return [self.get(row[0]) for row in ids]

    def set_state(
        self, campaign_id: str, state: CampaignState, *, reason: str | None = None
    ) -> None:
        """Change a campaign's state (and why)."""
        self._run(
            "UPDATE campaign SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
            (state, reason, time.time(), campaign_id),
        )

    def running(self) -> list[Campaign]:
        """Campaigns whose state is running (whether or not a runner holds them now)."""
        ids = self._run("SELECT id FROM campaign WHERE state = 'running' ORDER BY created_at")
        return [self.get(row[0]) for row in ids]

    # -- who runs a campaign -----------------------------------------------------------------------
    def claim(self, campaign_id: str, owner: str, *, lease_s: float = LEASE_S) -> str | None:
        """Take or renew the run of a campaign; None when taken, else the live holder's name."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT owner, expires_at FROM campaign_lease WHERE campaign_id = ?",
                    (campaign_id,),
                ).fetchone()
                if row is not None and row[0] != owner and row[1] > now and owner_alive(row[0]):
                    return str(row[0])
                self._db.execute(
                    "INSERT INTO campaign_lease VALUES (?, ?, ?) ON CONFLICT(campaign_id)"
                    " DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at",
                    (campaign_id, owner, now + lease_s),
                )
                return None
            finally:
                self._db.execute("COMMIT")

    def release(self, campaign_id: str, owner: str) -> None:
        """Give a campaign's run up (only if ``owner`` still holds it)."""
        self._run(
            "DELETE FROM campaign_lease WHERE campaign_id = ? AND owner = ?", (campaign_id, owner)
        )

    def holder(self, campaign_id: str) -> str | None:
        """Who runs the campaign now (a live, unexpired claim), or None."""
        rows = self._run(
            "SELECT owner, expires_at FROM campaign_lease WHERE campaign_id = ?", (campaign_id,)
        )
        if rows and rows[0][1] > time.time() and owner_alive(rows[0][0]):
            return str(rows[0][0])
        return None

    def set_wave(self, campaign_id: str, wave: int) -> None:
        """Record that the campaign moved on to ``wave`` (its start time kept from the first)."""
        now = time.time()
        self._run(
            "UPDATE campaign SET current_wave = ?, updated_at = ? WHERE id = ?",
            (wave, now, campaign_id),
        )
        self._run("INSERT OR IGNORE INTO campaign_wave VALUES (?, ?, ?)", (campaign_id, wave, now))

    def restart_gate(self, campaign_id: str, wave: int) -> None:
        """Count the wave's alerts from now on: the operator resumed past its health gate."""
        self._run(
            "UPDATE campaign_wave SET started_at = ? WHERE campaign_id = ? AND wave = ?",
            (time.time(), campaign_id, wave),
        )

    def wave_started(self, campaign_id: str, wave: int) -> float | None:
        """Since when ``wave``'s alerts count (its start, or the last operator resume; epoch s)."""
        rows = self._run(
            "SELECT started_at FROM campaign_wave WHERE campaign_id = ? AND wave = ?",
            (campaign_id, wave),
        )
        return float(rows[0][0]) if rows else None

    # -- devices -----------------------------------------------------------------------------------
    def devices(self, campaign_id: str, *, wave: int | None = None) -> list[CampaignDevice]:
        """A campaign's devices (of one wave), by id."""
        sql = (
            "SELECT device_id, wave, state, previous_version, version, next_chunk, reason,"
            " updated_at FROM campaign_device WHERE campaign_id = ?"
        )
        params: list[Any] = [campaign_id]
        if wave is not None:
            sql += " AND wave = ?"
            params.append(wave)
        return [CampaignDevice(*row) for row in self._run(sql + " ORDER BY device_id", params)]

    def update_devices(
        self, campaign_id: str, changes: Iterable[tuple[str, str, int, str | None, str | None]]
    ) -> None:
        """Write (device, state, next_chunk, version, reason) changes in one transaction."""
        now = time.time()
        rows = [(s, n, v, r, now, campaign_id, d) for d, s, n, v, r in changes]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "UPDATE campaign_device SET state = ?, next_chunk = ?,"
                " version = COALESCE(?, version), reason = ?, updated_at = ?"
                " WHERE campaign_id = ? AND device_id = ?",
                rows,
            )
            self._db.execute("COMMIT")

    def counts(self, campaign_id: str) -> dict[str, int]:
        """How many devices are in each state."""
        rows = self._run(
            "SELECT state, COUNT(*) FROM campaign_device WHERE campaign_id = ? GROUP BY state",
            (campaign_id,),
        )
        return {state: count for state, count in rows}
