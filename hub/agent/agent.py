"""The agent: one gateway's devices, each polled on its own schedule, published per the contract.

Every device has its own task, interval, timeout, backoff and circuit breaker, so a dead
or slow device only ever costs its own time. Readings and status changes go into the
on-disk outbox; the publisher drains it in order whenever the broker is reachable.

Every long-lived task (the publisher, each poller, each listening family) runs under the
task supervisor: one that fails is logged, backed off and restarted on its own, so a BLE
scanner that cannot start costs BLE only. A fatal error (a damaged outbox) stops the agent
in order and ``run`` raises ``AgentFatalError``, for the process to exit non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from device_registry.directory import DeviceDirectory, DeviceRecord
from drivers.framework import (
    DescribesDevice,
    DeviceSpec,
    DriverConfig,
    DriverError,
    DriverFamily,
    PolledDriver,
    Reading,
    discover_families,
    families_by_protocol,
)
from drivers.patient_timeout import Patience, patient_timeout
from hub.agent.device_health import DeviceHealth, PollPolicy
from hub.agent.device_info_report import DeviceInfoReporter
from hub.agent.disk_buffer import DiskBuffer
from hub.agent.mqtt_publisher import MqttPublisher, gateway_topic, status_payload
from hub.agent.registry_feed import RegistryFeedDirectory
from hub.agent.task_supervisor import (
    FatalTaskError,
    RestartPolicy,
    TaskEndedError,
    TaskSupervisor,
    describe,
    stop_requested,
)
from hub.local_stack import agent_login, mqtt_endpoint
from hub.settings import Settings

log = logging.getLogger(__name__)
POLLED_STATES = ("active", "maintenance")
DURATIONS_KEPT = 100_000
# The hub refuses a status reason over 256 characters or holding control characters, no
# JSON encoder here writes a lone surrogate, and exception text (the reason of a failed
# stream or poll) can hold all three.
REASON_MAX_CHARS = 200
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]+")
PUBLISHER_TASK = "publisher"
DEVICE_INFO_TASK = "device-info"
# SQLite's names for a file that is not (or no longer) a database: no restart can read it.
DAMAGED_DATABASE = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
# Agents running per event loop (the demo runs one per gateway): families share resources
# per loop (one SNMP engine), so the last agent to stop there closes them.
_RUNNING: WeakKeyDictionary[asyncio.AbstractEventLoop, int] = WeakKeyDictionary()


class AgentFatalError(Exception):
    """A task failed in a way no restart can mend; the agent stopped and the process exits."""


_NUMBERS = re.compile(r"\d+(?:\.\d+)?")
FAILURE_KINDS_KEPT = 64


def status_reason(text: str) -> str:
    """A failure's text as a status reason the hub stores: one line, at most 200 chars."""
    line = " ".join(_UNSTORABLE.sub(" ", text).split())
    return line if len(line) <= REASON_MAX_CHARS else line[: REASON_MAX_CHARS - 3] + "..."


def poll_task(device_id: str) -> str:
    """The supervised task name of one device's poller."""
    return f"poll:{device_id}"


def stream_task(family_name: str) -> str:
    """The supervised task name of one listening family's stream."""
    return f"stream:{family_name}"


@dataclass(slots=True)
class AgentStats:
    """Counters the agent keeps about itself (read by the bench and the health board)."""

    polls: int = 0
    failures: int = 0
    late_polls: int = 0
    # Polls whose timeout waited for the agent's own busy loop (drivers.patient_timeout).
    patient_polls: int = 0
    readings: int = 0
    poll_ms: deque[float] = field(default_factory=lambda: deque(maxlen=DURATIONS_KEPT))
    rejected: dict[str, str] = field(default_factory=dict)
    # Failed polls by "family: reason" (numbers as N), so a bench or an operator sees why.
    failed_by: dict[str, int] = field(default_factory=dict)

    def count_failure(self, family: str, reason: str) -> None:
        """One failed poll of a device of ``family``, for ``reason``."""
        key = f"{family}: {_NUMBERS.sub('N', reason)[:80]}"
        if key not in self.failed_by and len(self.failed_by) >= FAILURE_KINDS_KEPT:
            key = f"{family}: other"
        self.failed_by[key] = self.failed_by.get(key, 0) + 1


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
        parent_id=record.parent_id,
    )


def read_by_parent_protocols(families: Mapping[str, DriverFamily]) -> frozenset[str]:
    """Protocols of the declared types whose devices their parent's poll reads."""
    return frozenset(
        spec.protocol
        for family in families.values()
        for spec in family.device_types
        if spec.read_by_parent
    )


def plan_devices(
    records: list[DeviceRecord], families: Mapping[str, DriverFamily], stats: AgentStats
) -> dict[str, PlannedDevice]:
    """Validate every device's config (no network); reject bad ones with a reason, keep the rest."""
    by_protocol = families_by_protocol(families)
    read_by_parent = read_by_parent_protocols(families)
    planned: dict[str, PlannedDevice] = {}
    for record in records:
        if record.state not in POLLED_STATES:
            continue
        if record.protocol in read_by_parent:
            if record.parent_id is None:
                reason = f"a {record.protocol} device is read by its parent's poll; it has none"
                stats.rejected[record.device_id] = reason
                log.error("device %s rejected: %s", record.device_id, reason)
            else:
                stats.rejected.pop(record.device_id, None)
            continue  # the parent's poll publishes for it (a controller's detectors)
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
        restart_policy: RestartPolicy | None = None,
        spread_first_polls: bool = True,
    ) -> None:
        """``spread_first_polls=False`` starts every device's first poll at once (a burst)."""
        self.settings = settings
        self.spread_first_polls = spread_first_polls
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
        # Least privilege: the gateway's own identity (its ACL allows its gw/ topics only).
        username, password = agent_login(settings, gateway_id)
        host, port, tls = mqtt_endpoint(settings)
        self.publisher = MqttPublisher(
            gateway_id=gateway_id,
            host=host,
            port=port,
            tls=tls,
            username=username,
            password=password,
            outbox=self.outbox,
            keepalive_s=settings.mqtt.keepalive_s,
            connect_timeout_s=settings.mqtt.connect_timeout_s,
        )
        self.health: dict[str, DeviceHealth] = {}
        self.supervisor = TaskSupervisor(f"agent-{gateway_id}", policy=restart_policy)
        # Supervised task name -> what it runs (pollers: one device; streams: a family's).
        self._polled: dict[str, PlannedDevice] = {}
        self._streams: dict[str, list[PlannedDevice]] = {}
        self._stopping = False
        self._failing_logged: frozenset[str] = frozenset()
        # What devices say they are goes to the registry API, when the agent reads it.
        self.device_info: DeviceInfoReporter | None = (
            DeviceInfoReporter(directory.config)
            if isinstance(directory, RegistryFeedDirectory)
            else None
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; then stop every task and say offline on purpose.

        A task that fails fatally stops the agent the same orderly way (noticed within one
        ``refresh_interval_s``), and then ``AgentFatalError`` says which task and why.
        """
        loop = asyncio.get_running_loop()
        _RUNNING[loop] = _RUNNING.get(loop, 0) + 1
        try:
            async with asyncio.TaskGroup() as group:
                try:
                    self.supervisor.start(group, PUBLISHER_TASK, self._publish_forever)
                    if self.device_info is not None:
                        self.supervisor.start(group, DEVICE_INFO_TASK, self.device_info.run)
                    await self._sync_devices(group)
                    while not stop.is_set() and self.supervisor.fatal is None:
                        try:
                            async with asyncio.timeout(self.settings.agent.refresh_interval_s):
                                await stop.wait()
                        except TimeoutError:
                            await self._refresh(group)
                            self._log_task_health()
                finally:
                    # In order, even when the loop above raised: the TaskGroup would cancel
                    # each task once only, and a swallowed cancel would hang it.
                    await self._stop_all()
        finally:
            self.outbox.close()
            if self.device_info is not None:
                self.device_info.close()
            self._leave_loop(loop)
        fatal = self.supervisor.fatal
        if fatal is not None:
            raise AgentFatalError(f"agent {self.gateway_id} stopped: {fatal}") from fatal.error

    def _leave_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """The last agent to stop on ``loop`` runs the families' close hooks there."""
        _RUNNING[loop] -= 1
        if _RUNNING[loop] > 0:
            return
        del _RUNNING[loop]
        for family in self.families.values():
            if family.close is not None:
                try:
                    family.close()
                except Exception:  # one family's failure must not keep the others open
                    log.exception("family %s: close failed", family.name)

    async def _stop_all(self) -> None:
        """Stop every device task, then the publisher (it says offline on its way out)."""
        self._stopping = True
        await self.supervisor.stop([n for n in self.supervisor.names() if n != PUBLISHER_TASK])
        self._polled.clear()
        self._streams.clear()
        await self.supervisor.stop()
        # A publisher that failed for good was not running to be cancelled: say offline.
        await self.publisher.stop()

    def health_report(self) -> dict[str, Any]:
        """The agent's own health: its tasks (up, failing and why, restarts) and outbox."""
        return {
            "gateway": self.gateway_id,
            **self.supervisor.report(),
            "outbox": {"queued": len(self.outbox), "dropped": self.outbox.dropped},
            "broker_connected": self.publisher.connected,
        }

    def _log_task_health(self) -> None:
        """Log the tasks' health once each time the set of failing tasks changes."""
        report = self.supervisor.report()
        failing = frozenset(report["failing"])
        if failing == self._failing_logged:
            return
        self._failing_logged = failing
        if failing:
            log.warning(
                "agent %s: %d of %d task(s) failing: %s",
                self.gateway_id,
                len(failing),
                report["tasks"],
                "; ".join(
                    f"{name} ({row['state']}, {row['restarts']} restart(s)): {row['last_error']}"
                    for name, row in sorted(report["failing"].items())
                ),
            )
        else:
            log.info(
                "agent %s: all %d task(s) healthy (%d restart(s) so far)",
                self.gateway_id,
                report["tasks"],
                report["restarts"],
            )

    async def _publish_forever(self) -> None:
        """The outbox publisher; a damaged outbox file is fatal, since no restart can read it."""
        try:
            await self.publisher.run()
        except sqlite3.DatabaseError as err:
            if getattr(err, "sqlite_errorname", "") not in DAMAGED_DATABASE:
                raise  # disk full, I/O error, locked: may pass, so the supervisor retries
            raise FatalTaskError(
                f"outbox {self.outbox.path} is damaged ({err}): move it aside and restart"
            ) from err

    async def _refresh(self, group: asyncio.TaskGroup) -> None:
        try:
            # In a thread: a directory may ask the network (the registry API, with a timeout).
            changed = await asyncio.to_thread(self.directory.refresh)
        except Exception as err:  # a bad device list keeps the last good one
            log.error("agent %s: device list not reloaded: %s", self.gateway_id, err)
            return
        if changed:
            await self._sync_devices(group)

    async def _sync_devices(self, group: asyncio.TaskGroup) -> None:
        """Start tasks for new or changed devices, stop (and await) those gone or changed."""
        planned = plan_devices(
            self.directory.devices_for_gateway(self.gateway_id), self.families, self.stats
        )
        polled = {
            poll_task(p.spec.device_id): p
            for p in planned.values()
            if p.family.create_poller is not None
        }
        streams: dict[str, list[PlannedDevice]] = {}
        for p in planned.values():
            # A polled family may listen too (SNMP traps): its stream runs beside the polls.
            if p.family.create_stream is not None:
                streams.setdefault(stream_task(p.family.name), []).append(p)
        gone = [
            name
            for name, old in self._polled.items()
            if name not in polled or polled[name].record != old.record
        ]
        gone += [
            name
            for name, old_devices in self._streams.items()
            if [d.record for d in streams.get(name, [])] != [d.record for d in old_devices]
        ]
        await self.supervisor.stop(gone)
        for name in gone:
            self._polled.pop(name, None)
            self._streams.pop(name, None)
        new_ones = [(name, p) for name, p in polled.items() if name not in self._polled]
        for index, (name, device) in enumerate(new_ones):
            # Spread first polls over one interval so 500 devices do not start at once.
            start_delay = (
                self._interval(device) * index / max(len(new_ones), 1)
                if self.spread_first_polls
                else 0.0
            )
            self.supervisor.start(group, name, partial(self._poll_forever, device, start_delay))
            self._polled[name] = device
        for name, devices in streams.items():
            if name not in self._streams:
                self.supervisor.start(group, name, partial(self._stream_forever, devices))
                self._streams[name] = devices

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
            # stop_requested: a cancel swallowed inside the driver still ends the loop.
            while not (self._stopping or stop_requested()):
                await asyncio.sleep(max(0.0, due - loop.time()))
                started = loop.time()
                if started - due > late_tolerance:
                    self.stats.late_polls += 1
                self.stats.polls += 1
                patience = Patience()
                try:
                    # The timeout counts the device's time, not the loop's backlog.
                    async with patient_timeout(policy.timeout_s) as patience:
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
                    if self.device_info is not None and isinstance(driver, DescribesDevice):
                        info = driver.device_info()
                        if info is not None:
                            self.device_info.observe(device_id, info)
                self.stats.poll_ms.append((loop.time() - started) * 1000)
                if patience.extensions:
                    self.stats.patient_polls += 1
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
                    self.stats.count_failure(device.family.name, health.last_error)
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
        """A listening family (BLE): publish what arrives; a device is online once heard.

        When the stream fails (a scanner that cannot start) or ends, each of its devices
        counts one failure, so after ``offline_after_failures`` restarts they are reported
        offline with the cause; the error goes on to the supervisor, which restarts it.
        """
        family = devices[0].family
        assert family.create_stream is not None
        try:
            stream = family.create_stream([(d.spec, d.config) for d in devices])
            async for reading in stream.stream():
                self._publish_readings([reading])
                if family.create_poller is not None:
                    continue  # the polls own a polled device's online state, not its traps
                health = self.health.setdefault(
                    reading.device_id, DeviceHealth(self._policy(devices[0]))
                )
                outcome = health.succeeded()
                if outcome.change is not None:
                    self._report(reading.device_id, outcome.change, "")
            raise TaskEndedError(f"{family.name} stream ended")
        except Exception as err:
            reason = f"{family.name} stream failed: {describe(err)}"
            for device in devices:
                device_id = device.spec.device_id
                health = self.health.setdefault(device_id, DeviceHealth(self._policy(device)))
                if health.failed(reason).change is not None:
                    self._report(device_id, "offline", reason)
            raise

    def _publish_readings(self, readings: list[Reading]) -> None:
        for reading in readings:
            self.stats.readings += 1
            topic = gateway_topic(self.gateway_id, reading.device_id, reading.kind)
            self.publisher.enqueue(topic, reading.payload())

    def _report(self, device_id: str, status: str, reason: str) -> None:
        """A status change, logged and published (retained) once each way."""
        if status == "offline":
            log.warning("device %s offline: %s", device_id, reason)
        else:
            log.info("device %s online", device_id)
        topic = gateway_topic(self.gateway_id, device_id, "status")
        self.publisher.enqueue(topic, status_payload(status, status_reason(reason)), retain=True)
