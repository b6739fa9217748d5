"""The hub's side of OTA campaigns: their runtime from the settings, the alert health gate.

``kotahub run`` starts a ``CampaignDaemon`` (``start_campaign_daemon``) so a campaign
started with ``--background`` proceeds without a terminal held open; the campaign commands
and the daemon both read the alert store for the health gate's "no new alerts on updated
devices" (``AlertStoreGate``).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from firmware_tools.campaign_cli import CampaignRuntime
from firmware_tools.campaign_daemon import CampaignDaemon
from firmware_tools.ota_identity import ensure_ota_identity
from hub.alerts.alert_store import AlertStore, default_path
from hub.local_stack import broker_admin
from hub.settings import Settings


class AlertStoreGate:
    """``AlertGate`` over the hub's alert database (read only; none yet means no alerts)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def raised_since(self, device_ids: Collection[str], since_s: float) -> list[tuple[str, str]]:
        """(device, rule) of every alert raised on these devices at or after ``since_s``."""
        wanted = set(device_ids)
        if not wanted or not self.path.is_file():
            return []
        # Opened per gate (once a wave): the store is for one thread at a time, and the
        # alert engine writes it from its own.
        store = AlertStore(self.path)
        try:
            rows = store.alerts()
        finally:
            store.close()
        cutoff_ms = int(since_s * 1000)
        return [
            (a.device_id, a.rule_id)
            for a in rows
            if a.device_id in wanted and a.raised_ms >= cutoff_ms
        ]


def alert_gate(settings: Settings) -> AlertStoreGate:
    """The health gate's alerts: the hub's alert store under the state folder."""
    return AlertStoreGate(default_path(settings.state_dir))


def campaign_runtime(settings: Settings, password: str | None = None) -> CampaignRuntime:
    """Images, campaigns, registry, the OTA sender's broker login (made once) and the gate."""
    return CampaignRuntime(
        store_dir=settings.state_dir / "firmware",
        state_dir=settings.state_dir,
        database_url=settings.registry.resolved_database_url(settings.state_dir),
        broker=ensure_ota_identity(broker_admin(settings, password), settings.state_dir),
        alerts=alert_gate(settings),
    )


def start_campaign_daemon(settings: Settings, password: str | None = None) -> CampaignDaemon:
    """The daemon ``kotahub run`` keeps: it runs every running campaign no terminal holds."""
    daemon = CampaignDaemon(
        state_dir=settings.state_dir, make_runtime=lambda: campaign_runtime(settings, password)
    )
    daemon.start()
    return daemon
