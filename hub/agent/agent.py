"""The agent: one gateway's devices, each polled on its own schedule, published per the contract.

Every device has its own task, interval, timeout, backoff and circuit breaker, so a dead
or slow device only ever costs its own time. Readings and status changes go into the
on-disk outbox; the publisher drains it in order whenever the broker is reachable.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from device_registry.directory import DeviceDirectory, DeviceRecord
from drivers.framework import (
    DeviceSpec,
    DriverConfig,
    DriverError,
    DriverFamily,
    PolledDriver,
    Reading,
    discover_families,
    families_by_protocol,
)
from hub.agent.device_health import DeviceHealth, PollPolicy
from hub.agent.disk_buffer import DiskBuffer
from hub.agent.mqtt_publisher import MqttPublisher, gateway_topic, status_payload
from hub.local_stack import mqtt_password
from hub.settings import Settings

log = logging.getLogger(__name__)
POLLED_STATES = ("active", "maintenance")
DURATIONS_KEPT = 100_000


@dataclass(slots=True)
class AgentStats:
    """Counters the agent keeps about itself (read by the bench and the health board)."""

    polls: int = 0
    failures: int = 0
    late_polls: int = 0
    readings: int = 0
    poll_ms: deque[float] = field(default_factory=lambda: deque(maxlen=DURATIONS_KEPT))
    rejected: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlannedDevice:
    """A device the agent will poll: its record, family and validated config."""

    record: DeviceRecord
    family: DriverFamily
    spec: DeviceSpec
    config: DriverConfig


def spec_for(record: DeviceRecord) -> DeviceSpec:
    """The registry's record as the plain data a driver sees."""
    return DeviceSpec(
        device_id=record.device_id,
        device_type=record.device_type,
        protocol=record.protocol or "",
        address=record.address,
        driver_config=record.driver_config,
    )


def plan_devices(
    records: list[DeviceRecord], families: Mapping[str, DriverFamily], stats: AgentStats
) -> dict[str, PlannedDevice]:
    """Validate every device's config (no network); reject bad ones with a reason, keep the rest."""
    by_protocol = families_by_protocol(families)
    planned: dict[str, PlannedDevice] = {}
    for record in records:
        if record.state not in POLLED_STATES:
            continue
        family = by_protocol.get(record.protocol or "")
        if family is None or (family.create_poller is None and family.create_stream is None):
            # Devices that publish the contract themselves (protocol "mqtt") need no agent.
            if record.protocol not in (None, "mqtt"):
                reason = f"no driver for protocol {record.protocol!r}"
                stats.rejected[record.device_id] = reason
                log.error("device %s rejected: %s", record.device_id, reason)
            continue
        spec = spec_for(record)
        try:
            config = family.validate(spec)
        except DriverError as err:
            stats.rejected[record.device_id] = str(err.cause)
            log.error("device %s rejected: %s", record.device_id, err.cause)
            continue
        stats.rejected.pop(record.device_id, None)
        planned[record.device_id] = PlannedDevice(record, family, spec, config)
    return planned


class Agent:
    """Polls the devices that the directory assigns to one gateway."""

    def __init__(
        self,
        *,
        settings: Settings,
        gateway_id: str,
        directory: DeviceDirectory,
        families: Mapping[str, DriverFamily] | None = None,
    ) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self.directory = directory
        self.families = dict(families) if families is not None else discover_families()
        self.stats = AgentStats()
        agent = settings.agent
        buffer_dir = agent.buffer_dir or settings.state_dir / "agent"
        self.outbox = DiskBuffer(
            Path(buffer_dir) / f"outbox-{gateway_id}.sqlite3",
            max_messages=agent.buffer_max_messages,
        )
        if agent.mqtt_password is not None:
            password: str | None = agent.mqtt_password.get_secret_value()
        else:
            password = mqtt_password(settings)
        self.publisher = MqttPublisher(
            gateway_id=gateway_id,
            host=settings.mqtt.host,
            port=settings.mqtt.port,
            username=agent.mqtt_username or settings.mqtt.username,
            password=password,
            outbox=self.outbox,
            keepalive_s=settings.mqtt.keepalive_s,
            connect_timeout_s=settings.mqtt.connect_timeout_s,
        )
        self.health: dict[str, DeviceHealth] = {}
        self._tasks: dict[str, tuple[PlannedDevice, asyncio.Task[None]]] = {}
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; then stop every task and say offline on purpose."""
        try:
            async with asyncio.TaskGroup() as group:
                publisher = group.create_task(
                    self.publisher.run(), name=f"agent-{self.gateway_id}-publisher"
                )
                self._sync_devices(group)
                while not stop.is_set():
                    try:
                        async with asyncio.timeout(self.settings.agent.refresh_interval_s):
                            await stop.wait()
                    except TimeoutError:
                        self._refresh(group)
                await self._stop_pollers()
                publisher.cancel()
        finally:
            self.outbox.close()

    async def _stop_pollers(self) -> None:
        """Cancel every device task and wait until each has really ended."""
        self._stopping = True
        pending = {task for _, task in self._tasks.values()}
        while pending:
            # Python 3.11's asyncio.wait_for (inside pymodbus) can swallow a cancel that
            # races a reply (CPython gh-86296), so a single cancel() may be lost: repeat it.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        self._tasks.clear()

    def _refresh(self, group: asyncio.TaskGroup) -> None:
        try:
            changed = self.directory.refresh()
        except Exception as err:  # a bad device list keeps the last good one
            log.error("agent %s: device list not reloaded: %s", self.gateway_id, err)
            return
        if changed:
            self._sync_devices(group)

    def _sync_devices(self, group: asyncio.TaskGroup) -> None:
        """Start pollers for new or changed devices, stop those gone or changed."""
        planned = plan_devices(
            self.directory.devices_for_gateway(self.gateway_id), self.families, self.stats
        )
        for device_id, (old, task) in list(self._tasks.items()):
            new = planned.get(device_id)
            if new is None or new.record != old.record:
                task.cancel()
                del self._tasks[device_id]
        polled = [p for p in planned.values() if p.family.create_poller is not None]
        new_ones = [p for p in polled if p.spec.device_id not in self._tasks]
        for index, device in enumerate(new_ones):
            # Spread first polls over one interval so 500 devices do not start at once.
            start_delay = self._interval(device) * index / max(len(new_ones), 1)
            task = group.create_task(
                self._poll_forever(device, start_delay), name=f"poll-{device.spec.device_id}"
            )
            self._tasks[device.spec.device_id] = (device, task)
        streams: dict[str, list[PlannedDevice]] = {}
        for p in planned.values():
            if p.family.create_poller is None and p.family.create_stream is not None:
                streams.setdefault(p.family.name, []).append(p)
        for family_name, devices in streams.items():
            key = f"stream:{family_name}"
            if key in self._tasks:
                self._tasks.pop(key)[1].cancel()
            task = group.create_task(self._stream_forever(devices), name=f"stream-{family_name}")
            self._tasks[key] = (devices[0], task)

    def _interval(self, device: PlannedDevice) -> float:
        return device.config.poll_interval_s or device.record.expected_interval_s

    def _policy(self, device: PlannedDevice) -> PollPolicy:
        agent = self.settings.agent
        return PollPolicy(
            interval_s=self._interval(device),
            timeout_s=device.config.timeout_s,
            offline_after_failures=agent.offline_after_failures,
            breaker_failures=agent.breaker_failures,
            breaker_open_s=agent.breaker_open_s,
            retry_max_s=agent.retry_max_s,
        )

    async def _poll_forever(self, device: PlannedDevice, start_delay: float) -> None:
        """One device's loop: poll on schedule, back off on failure, report changes once."""
        device_id = device.spec.device_id
        policy = self._policy(device)
        health = self.health.setdefault(device_id, DeviceHealth(policy))
        health.policy = policy
        assert device.family.create_poller is not None
        driver: PolledDriver = device.family.create_poller(device.spec, device.config)
        loop = asyncio.get_running_loop()
        due = loop.time() + start_delay
        late_tolerance = min(1.0, 0.1 * policy.interval_s)
        try:
            while not self._stopping:
                await asyncio.sleep(max(0.0, due - loop.time()))
                started = loop.time()
                if started - due > late_tolerance:
                    self.stats.late_polls += 1
                self.stats.polls += 1
                try:
                    async with asyncio.timeout(policy.timeout_s):
                        readings = await driver.poll()
                except TimeoutError:
                    outcome = health.failed(f"no answer within {policy.timeout_s:g} s")
                except DriverError as err:
                    outcome = health.failed(str(err.cause))
                except Exception as err:
                    # A driver bug must cost this device only, never the agent.
                    log.exception("device %s: driver error", device_id)
                    outcome = health.failed(f"{type(err).__name__}: {err}")
                else:
                    self._publish_readings(readings)
                    outcome = health.succeeded()
                self.stats.poll_ms.append((loop.time() - started) * 1000)
                if outcome.change is not None:
                    self._report(device_id, outcome.change, health.last_error)
                if outcome.delay_s is None:
                    due += policy.interval_s
                    if due < loop.time():
                        # The poll overran its slot: keep the grid, skip the missed slots.
                        missed = int((loop.time() - due) // policy.interval_s) + 1
                        due += missed * policy.interval_s
                else:
                    self.stats.failures += 1
                    log.debug(
                        "device %s poll failed (%d in a row): %s",
                        device_id,
                        health.failures,
                        health.last_error,
                    )
                    due = loop.time() + outcome.delay_s
        finally:
            await driver.close()

    async def _stream_forever(self, devices: list[PlannedDevice]) -> None:
        """A listening family (BLE): publish what arrives; a device is online once heard."""
        family = devices[0].family
        assert family.create_stream is not None
        stream = family.create_stream([(d.spec, d.config) for d in devices])
        async for reading in stream.stream():
            self._publish_readings([reading])
            health = self.health.setdefault(
                reading.device_id, DeviceHealth(self._policy(devices[0]))
            )
            outcome = health.succeeded()
            if outcome.change is not None:
                self._report(reading.device_id, outcome.change, "")

    def _publish_readings(self, readings: list[Reading]) -> None:
        for reading in readings:
            self.stats.readings += 1
            topic = gateway_topic(self.gateway_id, reading.device_id, "telemetry")
            self.publisher.enqueue(topic, reading.payload())

    def _report(self, device_id: str, status: str, reason: str) -> None:
        """A status change, logged and published (retained) once each way."""
        if status == "offline":
            log.warning("device %s offline: %s", device_id, reason)
        else:
            log.info("device %s online", device_id)
        topic = gateway_topic(self.gateway_id, device_id, "status")
        self.publisher.enqueue(topic, status_payload(status, reason), retain=True)
