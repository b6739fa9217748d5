"""Alertmanager output: the firing alerts posted to ``/api/v2/alerts`` as Prometheus does.

Each Alertmanager in ``[alerts] alertmanager_urls`` (every one of an HA pair) is sent
every firing alert once per ``alertmanager_interval_s`` and soon after a change, with
``endsAt`` three intervals ahead: if the hub stops, Alertmanager resolves them by itself
when that lapses. An alert that cleared, joined its parent's incident or went into
maintenance is sent once more with ``endsAt`` at its end, so Alertmanager resolves it.
Grouping, silences and inhibition are then Alertmanager's (its own configuration).

Labels are the alert's identity in Alertmanager and do not change while it fires:
``alertname`` (the rule), ``device_id``, ``family``, ``kecamatan``, ``team`` and
``severity``; the stage, value, message and the incident's children are annotations.
A severity change is a new alert there, and the old one is resolved at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from hub.alerts.alert_store import AlertRow, AlertStore
from hub.alerts.clock import Clock

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
# Whether an alert pages no one now (the registry's maintenance state): such alerts are
# not sent; planned maintenance windows are checked in the store.
Muted = Callable[[AlertRow, int], bool]


def rfc3339(time_ms: int) -> str:
    """A time in ms as Alertmanager's RFC 3339 text (UTC, milliseconds)."""
    moment = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def labels_of(alert: AlertRow) -> Labels:
    """The alert's identity in Alertmanager (empty values left out, as it treats them)."""
    pairs = {
        "alertname": alert.rule_id,
        "device_id": alert.device_id,
        "family": alert.family,
        "kecamatan": alert.kecamatan,
        "team": alert.team,
        "severity": alert.severity,
    }
    return tuple(sorted((k, v) for k, v in pairs.items() if v))


def payload(
    alert: AlertRow, labels: Labels, ends_ms: int, children: list[str] | None = None
) -> dict[str, Any]:
    """One alert of the ``POST /api/v2/alerts`` body."""
    annotations = {"summary": alert.message, "stage": alert.stage, "value": alert.value or ""}
    if alert.acked_by:
        annotations["acknowledged_by"] = alert.acked_by
    if children:
        annotations["incident_children"] = ", ".join(sorted(children))
    return {
        "labels": dict(labels),
        "annotations": {k: v for k, v in annotations.items() if v},
        "startsAt": rfc3339(alert.raised_ms),
        "endsAt": rfc3339(max(ends_ms, alert.raised_ms)),
    }


class AlertmanagerOutput:
    """Posts the store's firing alerts to Alertmanager; ``wake`` after a saved batch."""

    def __init__(
        self,
        urls: list[str],
        database: Path,
        clock: Clock,
        *,
        interval_s: float = 60.0,
        min_gap_s: float = 1.0,
        muted: Muted | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        self.database = database
        self.clock = clock
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.muted = muted
        self.timeout_s = timeout_s
        # What each Alertmanager was last told fires: alert key -> its labels.
        self._told: dict[str, dict[str, Labels]] = {url: {} for url in self.urls}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.posts = 0
        self.failures = 0

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="alerts-alertmanager", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Alerts may have changed: post soon (at most once per ``min_gap_s``)."""
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the post under way."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        store = AlertStore(self.database)
        try:
            with httpx.Client(timeout=self.timeout_s) as client:
                while not self._stop.is_set():
                    try:
                        self.push(store, client)
                    except Exception:  # a bug must not stop the output for good
                        log.exception("Alertmanager output failed; retrying")
                    self._wake.wait(self.interval_s)
                    self._wake.clear()
                    self._stop.wait(self.min_gap_s)
        finally:
            store.close()

    def wanted(self, store: AlertStore, now_ms: int) -> dict[str, tuple[AlertRow, Labels]]:
        """The alerts Alertmanager should have firing now, by key."""
        wanted: dict[str, tuple[AlertRow, Labels]] = {}
        for alert in store.alerts(state="firing"):
            if store.is_child(alert) or store.in_maintenance_window(alert, now_ms):
                continue
            if self.muted is not None and self.muted(alert, now_ms):
                continue
            wanted[alert.key] = (alert, labels_of(alert))
        return wanted

    def body(
        self, store: AlertStore, url: str, now_ms: int
    ) -> tuple[list[dict[str, Any]], dict[str, Labels]]:
        """What to post to one Alertmanager now (the firing and the newly ended alerts),
        and what it will then have firing."""
        ends_ms = now_ms + round(3 * self.interval_s * 1000)
        wanted = self.wanted(store, now_ms)
        told = self._told[url]
        alerts: list[dict[str, Any]] = []
        for key, (alert, labels) in wanted.items():
            children = [
                row["child_key"].partition("|")[2]
                for row in store.children(key)
                if row["state"] == "firing"
            ]
            alerts.append(payload(alert, labels, ends_ms, children))
            if told.get(key, labels) != labels:  # a new severity: end the old alert
                alerts.append(payload(alert, told[key], now_ms))
        for key, labels in told.items():
            if key not in wanted:
                ended = store.alert(key)
                alerts.append(payload(ended, labels, ended.resolved_ms or now_ms))
        return alerts, {key: labels for key, (_alert, labels) in wanted.items()}

    def push(self, store: AlertStore, client: httpx.Client) -> int:
        """Post to every Alertmanager once; return how many took the post."""
        now_ms = self.clock.now_ms()
        took = 0
        for url in self.urls:
            alerts, firing = self.body(store, url, now_ms)
            if not alerts:
                continue
            try:
                answer = client.post(f"{url}/api/v2/alerts", json=alerts)
                answer.raise_for_status()
            except httpx.HTTPError as err:
                self.failures += 1
                log.warning("Alertmanager %s did not take %d alert(s): %s", url, len(alerts), err)
                continue  # told stays as it was: the ended ones are sent again next time
            self.posts += 1
            took += 1
            self._told[url] = firing
        return took
