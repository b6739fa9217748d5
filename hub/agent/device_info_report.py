"""The agent's reports of what its devices say they are (model, firmware, serial).

A driver that learns its device's identity (``drivers.framework.DescribesDevice``: an ONVIF
camera's ``GetDeviceInformation``) hands it over after each poll. The reporter keeps only
what differs from what the registry last acknowledged, and sends that batch to the registry
(``PUT /api/v1/gateways/{gateway_id}/device-info``, ``device_registry.device_info_api``)
with the gateway's own token, every ``interval_s``. So a fleet costs one report per device
per agent start and per real change, never one per poll; the registry writes only changes.

Values are cleaned to what the registry stores (no control characters, the columns'
lengths), so one camera's odd firmware string cannot make the batch refused. A registry
that is away keeps the reports for the next try; failures are logged once each way.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from device_registry.device_info_api import FIELD_LENGTHS, MAX_REPORTS
from drivers.framework import DeviceInfo
from hub.agent.registry_feed import RegistryFeedConfig

log = logging.getLogger(__name__)
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]+")
DEFAULT_INTERVAL_S = 10.0


def clean(value: str | None, max_chars: int) -> str | None:
    """A device's text as the registry stores it: one line, trimmed, bounded; None if empty."""
    if value is None:
        return None
    text = " ".join(_UNSTORABLE.sub(" ", value).split())[:max_chars].strip()
    return text or None


def report_row(device_id: str, info: DeviceInfo) -> dict[str, str]:
    """The registry's report of one device (only the fields the device told)."""
    values = {
        "vendor": info.vendor,
        "model": info.model,
        "firmware_version": info.firmware,
        "serial": info.serial,
    }
    row = {"device_id": device_id}
    for key, value in values.items():
        text = clean(value, FIELD_LENGTHS[key])
        if text is not None:
            row[key] = text
    return row


@dataclass(slots=True)
class ReporterStats:
    """What the reporter did (for tests and the health board)."""

    sent: int = 0
    changed: int = 0
    refused: int = 0
    failures: int = 0


class DeviceInfoReporter:
    """Sends its gateway's devices' identities to the registry when they change."""

    def __init__(
        self,
        config: RegistryFeedConfig,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        client: httpx.Client | None = None,
    ) -> None:
        if config.gateway_id is None:
            raise ValueError("device info is reported by a gateway's agent")
        self.gateway_id = config.gateway_id
        self.interval_s = interval_s
        self.path = f"/api/v1/gateways/{quote(self.gateway_id, safe='')}/device-info"
        verify: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(config.ca_file))
        self._client = client or httpx.Client(
            base_url=config.url,
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=config.timeout_s,
            verify=verify,
            follow_redirects=False,
        )
        self._lock = threading.Lock()
        self._acknowledged: dict[str, dict[str, str]] = {}  # what the registry answered to
        self._pending: dict[str, dict[str, str]] = {}
        self._failing: str | None = None
        self._refusals: dict[str, str] = {}
        self.stats = ReporterStats()

    def observe(self, device_id: str, info: DeviceInfo) -> None:
        """A poll's identity of a device: queued when it differs from the acknowledged one."""
        row = report_row(device_id, info)
        if len(row) == 1:
            return  # the device told nothing
        with self._lock:
            if self._acknowledged.get(device_id) == row:
                self._pending.pop(device_id, None)
            else:
                self._pending[device_id] = row

    @property
    def pending(self) -> int:
        """Reports waiting to be sent."""
        with self._lock:
            return len(self._pending)

    def send_pending(self) -> int:
        """Send what is queued (blocking, in batches); the number of reports the registry took."""
        taken = 0
        while True:
            with self._lock:
                batch = list(self._pending.values())[:MAX_REPORTS]
            if not batch:
                return taken
            answer = self._put(batch)
            if answer is None:
                return taken  # kept for the next try
            taken += len(batch)
            self._settle(batch, answer)

    def _put(self, batch: list[dict[str, str]]) -> list[Any] | None:
        where = f"registry {self._client.base_url}{self.path}"
        try:
            response = self._client.put(self.path, json={"devices": batch})
        except httpx.TransportError as err:
            self._failed(f"{where}: {err or type(err).__name__}")
            return None
        if response.status_code >= 500 or response.status_code in (408, 429):
            self._failed(f"{where}: answered {response.status_code}")
            return None
        if response.status_code != 200:
            # A refused token or batch will not pass on a retry: drop it, say so once.
            self._failed(f"{where}: answered {response.status_code}: {response.text[:300]}")
            with self._lock:
                for row in batch:
                    if self._pending.get(row["device_id"]) == row:
                        del self._pending[row["device_id"]]
            return None
        if self._failing is not None:
            log.info("agent %s: the registry takes device info again", self.gateway_id)
            self._failing = None
        try:
            results = response.json()["results"]
        except (ValueError, KeyError, TypeError):
            results = None
        if not isinstance(results, list):
            self._failed(f"{where}: the answer has no results list")
            return None
        return results

    def _settle(self, batch: list[dict[str, str]], results: list[Any]) -> None:
        outcomes = {
            r.get("device_id"): r for r in results if isinstance(r, dict) and "device_id" in r
        }
        with self._lock:
            for row in batch:
                device_id = row["device_id"]
                result = outcomes.get(device_id, {})
                outcome = result.get("outcome")
                self.stats.sent += 1
                if outcome == "changed":
                    self.stats.changed += 1
                    log.info(
                        "agent %s: %s's registry record updated: %s",
                        self.gateway_id,
                        device_id,
                        row,
                    )
                elif outcome == "refused":
                    self.stats.refused += 1
                    reason = str(result.get("reason", ""))
                    if self._refusals.get(device_id) != reason:
                        log.warning(
                            "agent %s: registry refused %s's device info: %s",
                            self.gateway_id,
                            device_id,
                            reason,
                        )
                    self._refusals[device_id] = reason
                # Acknowledged either way: asked again only when the device says otherwise.
                self._acknowledged[device_id] = row
                if self._pending.get(device_id) == row:
                    del self._pending[device_id]

    def _failed(self, reason: str) -> None:
        self.stats.failures += 1
        if reason != self._failing:
            log.warning("agent %s: device info not reported: %s", self.gateway_id, reason)
        self._failing = reason

    async def run(self) -> None:
        """Send what is queued every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            if self.pending:
                await asyncio.to_thread(self.send_pending)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()
