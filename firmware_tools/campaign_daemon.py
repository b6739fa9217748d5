"""The campaign daemon: ``kotahub run`` carries on every running campaign no terminal holds.

``kotahub firmware campaign start --background`` (or ``resume --background``) only marks a
campaign running; the daemon looks every ``scan_s`` for running campaigns without a live
runner (none started, or its ``start`` was killed) and runs each in a thread of its own.
Which process runs a campaign is a claim in the campaign store, so a foreground ``start``
and the daemon never run the same campaign at once. ``pause`` from any terminal stops the
runner within a poll; on ``stop`` (the hub shutting down) each campaign stays running and
the next start of the hub goes on with it where it was.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from device_registry.database import RegistryDatabase, open_database
from device_registry.registry_service import RegistryService
from firmware_tools.campaign_cli import CampaignRuntime, prepared_image
from firmware_tools.campaign_store import CAMPAIGN_FILE, CampaignStore
from firmware_tools.campaigns import CampaignRunner, RegistryFleet
from firmware_tools.errors import FirmwareError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Run:
    runner: CampaignRunner
    thread: threading.Thread


@dataclass(slots=True)
class CampaignDaemon:
    """Runs the running campaigns that no live runner holds, until ``stop``.

    ``make_runtime`` is called once, when the first campaign needs running: a hub that
    never runs one neither opens the campaign store nor creates the OTA broker identity.
    """

    state_dir: Path
    make_runtime: Callable[[], CampaignRuntime]
    scan_s: float = 2.0
    poll_s: float = 0.5
    _runs: dict[str, _Run] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _store: CampaignStore | None = None
    _runtime: CampaignRuntime | None = None
    _database: RegistryDatabase | None = None

    def start(self) -> None:
        """Scan in a thread of its own."""
        self._thread = threading.Thread(target=self._loop, name="ota-campaigns", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every runner (their campaigns stay running, for the next start) and close."""
        self._stop.set()
        for run in self._runs.values():
            run.runner.stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for run in self._runs.values():
            run.thread.join(timeout_s)
        if self._store is not None:
            self._store.close()
        if self._database is not None:
            self._database.close()

    def running(self) -> list[str]:
        """The campaigns this daemon runs now."""
        return sorted(cid for cid, run in self._runs.items() if run.thread.is_alive())

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception:  # one bad scan (a locked file) never ends the daemon
                log.exception("campaign daemon: scan failed; trying again")
            self._stop.wait(self.scan_s)

    def scan(self) -> None:
        """Start a runner for each running campaign that nobody runs."""
        if self._store is None:
            path = self.state_dir / CAMPAIGN_FILE
            if not path.is_file():
                return  # no campaign was ever made here
            self._store = CampaignStore(path)
        for campaign in self._store.running():
            run = self._runs.get(campaign.id)
            if run is not None and run.thread.is_alive():
                continue
            if self._store.holder(campaign.id) is not None or self._stop.is_set():
                continue
            if self._runtime is None:
                self._runtime = self.make_runtime()  # FirmwareError: logged, tried next scan
                self._database = open_database(self._runtime.database_url)
            assert self._database is not None
            try:
                image = prepared_image(self._runtime, campaign)
            except FirmwareError as err:
                # Nothing to send: paused with the reason, never retried every scan.
                self._store.set_state(campaign.id, "paused", reason=f"image: {err}")
                log.error("campaign %s paused: %s", campaign.id, err)
                continue
            runner = CampaignRunner(
                self._store,
                RegistryFleet(RegistryService(self._database)),
                image,
                self._runtime.broker,
                poll_s=self.poll_s,
                alerts=self._runtime.alerts,
            )
            thread = threading.Thread(
                target=self._run, args=(runner, campaign.id), name=f"ota-{campaign.id}"
            )
            self._runs[campaign.id] = _Run(runner, thread)
            thread.start()

    def _run(self, runner: CampaignRunner, campaign_id: str) -> None:
        log.info("campaign %s: running", campaign_id)
        try:
            result = runner.run(campaign_id)
        except FirmwareError as err:  # another runner claimed it first, or it ended meanwhile
            log.info("campaign %s not run here: %s", campaign_id, err)
            return
        except Exception:
            log.exception("campaign %s: runner failed; the next scan takes it up", campaign_id)
            return
        if result.state == "running":
            log.info("campaign %s: stopped with the hub; the next start goes on", campaign_id)
        else:
            log.info(
                "campaign %s: %s%s",
                campaign_id,
                result.state,
                f" ({result.reason})" if result.reason else "",
            )
