"""OTA campaigns: staged waves, health gates between them, automatic pause, rollback.

A campaign takes the registry's active devices that an image targets and splits them into
waves by cumulative share (1 %, 10 %, 50 %, 100 %: wave 1 is the first 1 %, wave 2 the
next 9 %...). A wave offers its devices at ``devices_per_s`` with at most
``max_concurrent`` transfers at once. Within a wave the campaign pauses itself as soon as
more than ``max_failure_rate`` of its finished devices failed; after the wave, the health
gate wants ``min_success_rate`` of them installed *and* back online, reporting the new
version, within ``online_timeout_s``, and (given an ``AlertGate``) no alert raised on an
updated device since the wave began. A runner claims its campaign in the store, so two
never run one campaign at once. Retired and maintenance devices are never offered:
the state is read from the registry again right before each offer.

Each change is written to the campaign store at once, and each installed version to the
registry's ``firmware_version``; ``run`` picks a paused or interrupted campaign up where
it stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import queue
import secrets
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from device_registry.errors import RegistryError
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceQuery, DeviceUpdate
from firmware_tools.campaign_store import (
    DEVICE_FINAL,
    Campaign,
    CampaignSettings,
    CampaignStore,
    runner_name,
)
from firmware_tools.errors import FirmwareError
from firmware_tools.image_manifest import ImageManifest
from firmware_tools.ota_protocol import Control
from firmware_tools.ota_sender import DeviceTransfer, OtaSender, PreparedImage, SenderSettings

DEFAULT_WAVES: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0)
OFFERED_STATES = ("active",)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerLogin:
    """How the campaign's sender logs in to the broker."""

    host: str
    port: int
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class FleetDevice:
    """What a campaign needs to know of a device."""

    device_id: str
    state: str
    device_type: str
    model: str | None
    firmware_version: str | None


class Fleet(Protocol):
    """The registry as a campaign sees it."""

    def candidates(self, manifest: ImageManifest) -> list[FleetDevice]:
        """Active devices of the image's device types."""
        ...

    def device(self, device_id: str) -> FleetDevice | None:
        """A device's current state, or None once it is gone."""
        ...

    def set_firmware_version(self, device_id: str, version: str, *, actor: str) -> None:
        """Record the version a device reported."""
        ...


class AlertGate(Protocol):
    """The alerts a health gate reads: has an updated device raised one since its wave began?"""

    def raised_since(self, device_ids: Collection[str], since_s: float) -> list[tuple[str, str]]:
        """(device id, rule id) of alerts raised on these devices at or after ``since_s``."""
        ...


class RegistryFleet:
    """``Fleet`` over the device registry."""

    def __init__(self, service: RegistryService) -> None:
        self.service = service

    def candidates(self, manifest: ImageManifest) -> list[FleetDevice]:
        """Active devices of the image's types, paging through the registry."""
        found: list[FleetDevice] = []
        for device_type in manifest.device_types:
            offset = 0
            while True:
                page = self.service.list_devices(
                    DeviceQuery(device_type=device_type, state="active", limit=1000, offset=offset)
                )
                found += [
                    FleetDevice(d.id, d.state, d.device_type, d.model, d.firmware_version)
                    for d in page.items
                ]
                offset += len(page.items)
                if not page.items or offset >= page.total:
                    break
        return found

    def device(self, device_id: str) -> FleetDevice | None:
        """The device as the registry holds it now."""
        try:
            d = self.service.get_device(device_id)
        except RegistryError:
            return None
        return FleetDevice(d.id, d.state, d.device_type, d.model, d.firmware_version)

    def set_firmware_version(self, device_id: str, version: str, *, actor: str) -> None:
        """Write ``firmware_version`` (a retired device keeps what it had)."""
        # Retired meanwhile: its record is frozen; the campaign store keeps the version.
        with contextlib.suppress(RegistryError):
            self.service.update_device(
                device_id,
                DeviceUpdate(firmware_version=version),
                actor=actor,
                issue_credentials=False,
            )


def wave_sizes(total: int, waves: Sequence[float]) -> list[int]:
    """How many devices each wave takes: cumulative shares, at least one device per wave."""
    if not waves or any(b <= a for a, b in itertools.pairwise(waves)):
        raise FirmwareError("waves must be increasing percentages, e.g. 1,10,50,100")
    if waves[0] <= 0 or waves[-1] != 100:
        raise FirmwareError("waves are percentages above 0 and the last must be 100")
    sizes, given = [], 0
    for share in waves:
        upto = max(min(total, given + 1), math.ceil(total * share / 100))
        sizes.append(upto - given)
        given = upto
    return sizes


def create_campaign(
    store: CampaignStore,
    fleet: Fleet,
    manifest: ImageManifest,
    *,
    campaign_id: str | None = None,
    waves: Sequence[float] = DEFAULT_WAVES,
    settings: CampaignSettings | None = None,
) -> Campaign:
    """A campaign for every active device the image targets, in waves (sorted by id)."""
    devices = sorted(
        (d for d in fleet.candidates(manifest) if manifest.targets(d.device_type, d.model)),
        key=lambda d: d.device_id,
    )
    if not devices:
        raise FirmwareError(
            f"no active device of type {', '.join(manifest.device_types)} takes this image"
        )
    rows: list[tuple[str, int, str | None]] = []
    start = 0
    for wave, size in enumerate(wave_sizes(len(devices), waves)):
        rows += [(d.device_id, wave, d.firmware_version) for d in devices[start : start + size]]
        start += size
    return store.create(
        campaign_id or f"c{secrets.token_hex(4)}",
        image_sha256=manifest.sha256,
        version=manifest.version,
        waves=waves,
        settings=settings or CampaignSettings(),
        devices=rows,
    )


@dataclass(frozen=True, slots=True)
class Progress:
    """What the progress display shows."""

    campaign: Campaign
    wave: int
    counts: dict[str, int]
    total: int
    bytes_sent: int


ProgressCallback = Callable[[Progress], None]


class CampaignRunner:
    """Runs one campaign to its end, a pause, or ``stop``."""

    def __init__(
        self,
        store: CampaignStore,
        fleet: Fleet,
        image: PreparedImage,
        login: BrokerLogin,
        *,
        progress: ProgressCallback | None = None,
        poll_s: float = 0.5,
        alerts: AlertGate | None = None,
    ) -> None:
        self.store, self.fleet, self.image, self.login = store, fleet, image, login
        self.progress = progress
        self.alerts = alerts
        # Distinct per runner: a daemon runs several campaigns in one process.
        self.owner = runner_name(secrets.token_hex(3))
        self.poll_s = poll_s
        self.stop = threading.Event()
        self._events: queue.Queue[DeviceTransfer] = queue.Queue()
        self.sender: OtaSender | None = None

    def _sender(self, campaign: Campaign) -> OtaSender:
        s = campaign.settings
        sender = OtaSender(
            host=self.login.host,
            port=self.login.port,
            username=self.login.username,
            password=self.login.password,
            client_id=f"kotahub-ota-{campaign.id}-{secrets.token_hex(3)}",
            settings=SenderSettings(
                rate_bytes_per_s=s.rate_bytes_per_s,
                offer_timeout_s=s.offer_timeout_s,
                stall_timeout_s=s.stall_timeout_s,
                online_timeout_s=s.online_timeout_s,
            ),
            on_change=self._events.put,
        )
        sender.start()
        return sender

    def run(self, campaign_id: str) -> Campaign:
        """Start (or resume) a campaign and run it until it is done or paused."""
        campaign = self.store.get(campaign_id)
        if campaign.image_sha256 != self.image.manifest.sha256:
            raise FirmwareError("the image given is not the campaign's image")
        if campaign.state in ("done", "rolling_back", "rolled_back"):
            raise FirmwareError(f"campaign {campaign_id} is {campaign.state}")
        holder = self.store.claim(campaign_id, self.owner)
        if holder is not None:
            raise FirmwareError(f"campaign {campaign_id} is being run by {holder}")
        self.store.set_state(campaign_id, "running")
        try:
            self.sender = self._sender(campaign)
        except BaseException:
            self.store.release(campaign_id, self.owner)
            raise
        try:
            for wave in range(campaign.current_wave, len(campaign.waves)):
                if self.stop.is_set():
                    return self.store.get(campaign_id)
                self.store.set_wave(campaign_id, wave)
                if not self._run_wave(campaign_id, wave):
                    return self.store.get(campaign_id)
            self.store.set_wave(campaign_id, len(campaign.waves))
            self.store.set_state(campaign_id, "done")
        finally:
            self.sender.stop()
            self.store.release(campaign_id, self.owner)
        return self.store.get(campaign_id)

    def _run_wave(self, campaign_id: str, wave: int) -> bool:
        """Offer one wave and wait for it; False when the campaign paused or stopped."""
        assert self.sender is not None
        campaign = self.store.get(campaign_id)
        s = campaign.settings
        todo = [
            d.device_id
            for d in self.store.devices(campaign_id, wave=wave)
            if d.state not in DEVICE_FINAL
        ]
        wave_ids = {d.device_id for d in self.store.devices(campaign_id, wave=wave)}
        active: set[str] = set()
        next_offer = time.monotonic()
        last_poll = 0.0
        while todo or active:
            finals = self._drain(campaign_id, active)
            now = time.monotonic()
            if finals or now - last_poll >= self.poll_s:
                # A device that just finished is checked at once: no further offer goes
                # out after the failure that pauses the wave, nor after an operator's pause
                # (a finished device frees the slot a new offer would take).
                if self.stop.is_set() or self.store.get(campaign_id).state != "running":
                    return self._halt(active)
                if now - last_poll >= self.poll_s:
                    last_poll = now
                    # Renewed each poll; lost only if this runner stalled past its lease.
                    if self.store.claim(campaign_id, self.owner) is not None:
                        return self._halt(active)
                    self._report(campaign_id, wave)
                stats = self._wave_stats(campaign_id, wave_ids)
                finished = stats["installed"] + stats["failed"]
                if finished and stats["failed"] / finished > s.max_failure_rate:
                    self.store.set_state(
                        campaign_id,
                        "paused",
                        reason=f"wave {wave + 1}: {stats['failed']} of {finished} devices failed"
                        f" (more than {s.max_failure_rate:.0%})",
                    )
                    return self._halt(active)
            while todo and len(active) < s.max_concurrent and now >= next_offer:
                device_id = todo.pop(0)
                next_offer = max(next_offer + 1 / s.devices_per_s, now - 1.0)
                refusal = self._refusal(device_id)
                if refusal is not None:
                    self.store.update_devices(
                        campaign_id, [(device_id, "skipped", 0, None, refusal)]
                    )
                    continue
                active.add(device_id)
                self.sender.offer(device_id, campaign_id, self.image)
        self._drain(campaign_id, active)
        self._report(campaign_id, wave)
        stats = self._wave_stats(campaign_id, wave_ids)
        finished = stats["installed"] + stats["failed"]
        if finished and stats["installed"] / finished < s.min_success_rate:
            self.store.set_state(
                campaign_id,
                "paused",
                reason=f"wave {wave + 1} health gate: {stats['installed']} of {finished}"
                f" installed and back online (below {s.min_success_rate:.0%})",
            )
            return False
        return self._alert_gate(campaign_id, wave)

    def _alert_gate(self, campaign_id: str, wave: int) -> bool:
        """The gate's last test: no alert raised on a wave's updated device since it began."""
        if self.alerts is None:
            return True
        since = self.store.wave_started(campaign_id, wave) or 0.0
        updated = [
            d.device_id
            for d in self.store.devices(campaign_id, wave=wave)
            if d.state == "installed"
        ]
        raised = self.alerts.raised_since(updated, since)
        if not raised:
            return True
        named = ", ".join(f"{device} ({rule})" for device, rule in sorted(raised)[:3])
        more = f" and {len(raised) - 3} more" if len(raised) > 3 else ""
        self.store.set_state(
            campaign_id,
            "paused",
            reason=f"wave {wave + 1} health gate: new alerts on updated devices: {named}{more}",
        )
        return False

    def _refusal(self, device_id: str) -> str | None:
        """Why a device must not be offered now (retired, maintenance, gone), or None."""
        device = self.fleet.device(device_id)
        if device is None:
            return "not_in_registry"
        if device.state not in OFFERED_STATES:
            return f"state_{device.state}"
        if not self.image.manifest.targets(device.device_type, device.model):
            return "wrong_target"
        return None

    def _halt(self, active: set[str]) -> bool:
        """Stop serving the wave's transfers; they resume when the campaign does."""
        assert self.sender is not None
        for device_id in active:
            self.sender.forget(device_id)
        return False

    def _drain(self, campaign_id: str, active: set[str]) -> int:
        """Store the sender's changes (an installed version in the registry too); finals seen."""
        changes: list[tuple[str, str, int, str | None, str | None]] = []
        finals = 0
        try:
            record = self._events.get(timeout=0.05)
            while True:
                if record.campaign in (campaign_id, ""):
                    changes.append(
                        (
                            record.device_id,
                            record.state,
                            record.acked,
                            record.version,
                            record.reason,
                        )
                    )
                    if record.state in DEVICE_FINAL:
                        active.discard(record.device_id)
                        finals += 1
                    if record.state in ("installed", "rolled_back") and record.version:
                        self.fleet.set_firmware_version(
                            record.device_id, record.version, actor=f"ota:{campaign_id}"
                        )
                record = self._events.get_nowait()
        except queue.Empty:
            pass
        self.store.update_devices(campaign_id, changes)
        return finals

    def _wave_stats(self, campaign_id: str, wave_ids: set[str]) -> dict[str, int]:
        stats = {"installed": 0, "failed": 0}
        for d in self.store.devices(campaign_id):
            if d.device_id in wave_ids and d.state in stats:
                stats[d.state] += 1
        return stats

    def _report(self, campaign_id: str, wave: int) -> None:
        if self.progress is None:
            return
        counts = self.store.counts(campaign_id)
        self.progress(
            Progress(
                campaign=self.store.get(campaign_id),
                wave=wave,
                counts=counts,
                total=sum(counts.values()),
                bytes_sent=self.sender.bytes_sent if self.sender is not None else 0,
            )
        )

    def rollback(self, campaign_id: str, *, timeout_s: float = 120.0) -> Campaign:
        """Tell every device that installed the image to go back to its previous one."""
        self.store.set_state(campaign_id, "rolling_back")
        campaign = self.store.get(campaign_id)
        installed = [d.device_id for d in self.store.devices(campaign_id) if d.state == "installed"]
        self.sender = self._sender(campaign)
        waiting = set(installed)
        try:
            for device_id in installed:
                self.sender.control(device_id, Control(action="rollback", campaign=campaign_id))
            deadline = time.monotonic() + timeout_s
            while waiting and time.monotonic() < deadline and not self.stop.is_set():
                try:
                    record = self._events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if record.device_id in waiting and record.state == "rolled_back":
                    waiting.discard(record.device_id)
                    self.store.update_devices(
                        campaign_id, [(record.device_id, "rolled_back", 0, record.version, None)]
                    )
                    if record.version:
                        self.fleet.set_firmware_version(
                            record.device_id, record.version, actor=f"ota:{campaign_id}:rollback"
                        )
        finally:
            self.sender.stop()
        reason = f"{len(waiting)} device(s) did not confirm the rollback" if waiting else None
        self.store.set_state(campaign_id, "rolled_back", reason=reason)
        return self.store.get(campaign_id)
