"""The demo's simulated devices: clock, faults, the device record and the family simulator seam.

A family adds a simulator the way it adds a driver: a module ``drivers/<family>/simulator.py``
exposing ``SIMULATOR: FamilySimulator``. ``discover_simulators()`` walks the ``drivers``
package, so no central list is touched. A simulator speaks the family's real protocol
(a pymodbus server, MQTT under the device's own identity, BLE adverts through the named
fake radio) so that the agent and the hub read simulated devices as they read real ones.

Protocol-level families serve devices at addresses that must be in the registry before
the agent starts. Such a simulator also implements ``AddressAssigner``:
``assign_addresses(devices, first_port, host="127.0.0.1") -> dict[device_id, SimulatedDevice]``
returns each device with ``address`` (and any ``driver_config`` the driver needs, such as
a unit id) filled in, using ports ``first_port`` upwards; ``ports_used(assigned)`` says
which. The fleet loader calls it before registration, so a registered fleet keeps its
addresses across runs.

Time is simulated (``SimClock``, ``--speed 60`` runs an hour a minute) and faults are set
from outside while simulators run (``FaultBoard``, thread-safe); only faults that act on
devices live here (a device dies, a flood rises in an area). Cutting a gateway, restarting
the broker or stopping InfluxDB act on processes and belong to the demo runner.

This module imports nothing of ``hub`` or ``device_registry`` (drivers may not).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pkgutil
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

SIMULATOR_MODULE = "simulator"
_log = logging.getLogger(__name__)


class SimClock:
    """Simulated time: starts at ``start`` (default now) and runs ``speed`` times real time."""

    def __init__(self, speed: float = 1.0, start: datetime | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be greater than 0, not {speed!r}")
        self.speed = float(speed)
        start = start or datetime.now(UTC)
        if start.tzinfo is None:
            raise ValueError("SimClock start must be timezone-aware")
        self.start = start
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        """The simulated time now, timezone-aware."""
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def elapsed_s(self) -> float:
        """Simulated seconds since the clock started."""
        return (time.monotonic() - self._t0) * self.speed

    def wall_seconds(self, sim_seconds: float) -> float:
        """Real seconds that ``sim_seconds`` of simulated time take."""
        return max(0.0, sim_seconds) / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        """Sleep for ``sim_seconds`` of simulated time."""
        await asyncio.sleep(self.wall_seconds(sim_seconds))


class FaultBoard:
    """Faults set while the simulators run (from the CLI through the runner); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dead: set[str] = set()
        self._flooding: set[str] = set()
        self._revision = 0

    def device_dies(self, device_id: str) -> None:
        """The device stops answering / publishing until ``heal``."""
        with self._lock:
            self._dead.add(device_id)
            self._revision += 1

    def flood_rises(self, area: str) -> None:
        """Levels in an area (a kecamatan name, compared case-insensitively) rise fast."""
        with self._lock:
            self._flooding.add(area.casefold())
            self._revision += 1

    def heal(self) -> None:
        """Every fault on this board ends."""
        with self._lock:
            self._dead.clear()
            self._flooding.clear()
            self._revision += 1

    def is_dead(self, device_id: str) -> bool:
        """Whether a fault killed the device."""
        with self._lock:
            return device_id in self._dead

    def is_flooding(self, area: str | None) -> bool:
        """Whether a flood was raised in the area."""
        if area is None:
            return False
        with self._lock:
            return area.casefold() in self._flooding

    @property
    def revision(self) -> int:
        """Bumped by every change, so a poller of the board sees that something changed."""
        with self._lock:
            return self._revision

    def snapshot(self) -> dict[str, Any]:
        """``{"dead_devices": [...], "flooding_areas": [...]}``, sorted (JSON-ready)."""
        with self._lock:
            return {"dead_devices": sorted(self._dead), "flooding_areas": sorted(self._flooding)}

    def apply_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the faults with a ``snapshot()`` (as read from a file by another process)."""
        dead = snapshot.get("dead_devices", [])
        flooding = snapshot.get("flooding_areas", [])
        if not isinstance(dead, list | tuple) or not isinstance(flooding, list | tuple):
            raise ValueError("fault snapshot: dead_devices and flooding_areas must be lists")
        with self._lock:
            new_dead = {str(d) for d in dead}
            new_flooding = {str(a).casefold() for a in flooding}
            if new_dead != self._dead or new_flooding != self._flooding:
                self._dead, self._flooding = new_dead, new_flooding
                self._revision += 1


def _frozen_mapping(value: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedDevice:
    """One device as its simulator sees it: registry facts plus simulation parameters."""

    device_id: str
    family: str
    device_type: str
    gateway_id: str | None
    kecamatan: str
    kelurahan: str | None
    lat: float
    lon: float
    # Where a protocol-level simulator serves the device (host:port, a MAC); None: MQTT.
    address: str | None = None
    driver_config: Mapping[str, Any] = field(default_factory=_frozen_mapping)
    # Native-MQTT devices publish under their own broker identity.
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    # Per-device simulation knobs: coastal, drift, sticks, dies_at, sleeps, detour, ...
    params: Mapping[str, Any] = field(default_factory=_frozen_mapping)
    # The registry tags a simulator reads as a real device would know them (a vehicle's route).
    tags: Mapping[str, str] = field(default_factory=_frozen_mapping)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatorContext:
    """What every simulator gets: time, faults, the broker endpoint and a folder of its own."""

    clock: SimClock
    faults: FaultBoard
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_ca_file: Path | None = None  # set: TLS to the broker, trusting this CA
    state_dir: Path = Path(".")

    def mqtt_tls(self) -> ssl.SSLContext | None:
        """The client TLS context for the broker, or None for plain MQTT on loopback."""
        if self.mqtt_ca_file is None:
            return None
        context = ssl.create_default_context(cafile=str(self.mqtt_ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


class SimulatorStats:
    """Readings produced per device (and failures), thread-safe: the bench compares totals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._produced: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._polls_failed: dict[str, int] = {}

    def produced(self, device_id: str, count: int = 1) -> None:
        """Count readings (points) a device produced: published, or made readable."""
        with self._lock:
            self._produced[device_id] = self._produced.get(device_id, 0) + count

    def failed(self, device_id: str) -> None:
        """Count a simulation error of one device (the others go on)."""
        with self._lock:
            self._errors[device_id] = self._errors.get(device_id, 0) + 1

    def poll_failed(self, device_id: str) -> None:
        """Count a poll the agent started but the device left unanswered (no point made)."""
        with self._lock:
            self._polls_failed[device_id] = self._polls_failed.get(device_id, 0) + 1

    def polls_failed(self) -> dict[str, int]:
        """Failed polls, by device id."""
        with self._lock:
            return dict(self._polls_failed)

    @property
    def total_polls_failed(self) -> int:
        """Failed polls of every device of the family."""
        with self._lock:
            return sum(self._polls_failed.values())

    def by_device(self) -> dict[str, int]:
        """Readings produced, by device id."""
        with self._lock:
            return dict(self._produced)

    def errors(self) -> dict[str, int]:
        """Simulation errors, by device id."""
        with self._lock:
            return dict(self._errors)

    @property
    def total(self) -> int:
        """Readings produced by every device of the family."""
        with self._lock:
            return sum(self._produced.values())

    def reset(self) -> None:
        """Forget the counts (a new run)."""
        with self._lock:
            self._produced.clear()
            self._errors.clear()
            self._polls_failed.clear()


class PollCounter:
    """One polled device's requests grouped into the agent's polls, each counted once.

    A poll is every request that arrives within ``span_s`` of the poll's first one (the
    longest an agent's poll lasts: its timeout, stretched by the agent's own lateness up
    to twice that, ``drivers.patient_timeout.longest_s``; the agent waits at least an
    interval before the next). A poll whose last request was answered yields one point,
    however many requests, walk steps or retries it took; one whose last request went
    unanswered (a dead device, one the simulator was told to leave silent) is a failed
    poll, no point. Polls are counted when they end: ``flush`` closes the ones older than
    ``span_s`` (``force``: every open one, at the end of a run). Not thread-safe: one
    event loop calls it.
    """

    __slots__ = ("_answered", "_clock", "_started", "device_id", "span_s", "stats")

    def __init__(
        self,
        stats: SimulatorStats,
        device_id: str,
        span_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.device_id = device_id
        self.span_s = span_s
        self._clock = clock
        self._started: float | None = None
        self._answered = False

    def request(self, answered: bool) -> None:
        """One request of the agent's arrived; ``answered``: the device answered it."""
        now = self._clock()
        if self._started is not None and now - self._started > self.span_s:
            self._close()
        if self._started is None:
            self._started = now
        self._answered = answered

    def flush(self, *, force: bool = False) -> None:
        """Count the open poll if it is over (``force``: whatever its age)."""
        if self._started is not None and (force or self._clock() - self._started > self.span_s):
            self._close()

    def _close(self) -> None:
        if self._answered:
            self.stats.produced(self.device_id)
        else:
            self.stats.poll_failed(self.device_id)
        self._started = None
        self._answered = False


@runtime_checkable
class FamilySimulator(Protocol):
    """Simulates every device of one family; ``run`` serves or publishes until cancelled."""

    family: str
    stats: SimulatorStats

    async def run(self, devices: Sequence[SimulatedDevice], ctx: SimulatorContext) -> None:
        """Simulate ``devices`` until cancelled; one device's failure never stops the others."""
        ...


@runtime_checkable
class AddressAssigner(Protocol):
    """A protocol-level simulator that decides where its devices are served."""

    def assign_addresses(
        self, devices: Sequence[SimulatedDevice], first_port: int, host: str = "127.0.0.1"
    ) -> dict[str, SimulatedDevice]:
        """Each device with ``address`` (and driver_config) set, ports from ``first_port``."""
        ...

    def ports_used(self, devices: Sequence[SimulatedDevice]) -> set[int]:
        """The TCP ports the (assigned) devices are served on."""
        ...


@runtime_checkable
class ChildMapper(Protocol):
    """A simulator whose devices read their children in their own poll (ATCS detectors).

    The city fleet registers such children as stand-ins; when the family's real simulator
    exists, the fleet loader gives them ``child_device_type`` and maps them into their
    parent's ``driver_config`` with ``map_children`` (a controller's ``detectors``).
    """

    child_device_type: str

    def map_children(
        self, driver_config: Mapping[str, Any], child_ids: Sequence[str]
    ) -> dict[str, Any]:
        """The parent's ``driver_config`` with ``child_ids`` (in order) mapped in."""
        ...


def produced_points(
    simulators: Mapping[str, FamilySimulator],
) -> tuple[dict[str, int], dict[str, int]]:
    """Points produced, by measurement and by device, over every simulator.

    A family's ``stats`` count its own measurement; a simulator may also make points
    readable for other measurements (``measurement_stats``, measurement -> stats: an ATCS
    controller's detectors go to ``atcs_detector``).
    """
    by_measurement: dict[str, int] = {}
    by_device: dict[str, int] = {}
    for family, simulator in simulators.items():
        parts: list[tuple[str, SimulatorStats]] = [(family, simulator.stats)]
        extra = getattr(simulator, "measurement_stats", None)
        if isinstance(extra, Mapping):
            parts += [(m, s) for m, s in extra.items() if isinstance(s, SimulatorStats)]
        for measurement, stats in parts:
            by_measurement[measurement] = by_measurement.get(measurement, 0) + stats.total
            for device_id, count in stats.by_device().items():
                by_device[device_id] = by_device.get(device_id, 0) + count
    return by_measurement, by_device


def failed_polls(simulators: Mapping[str, FamilySimulator]) -> dict[str, int]:
    """Polls the simulated devices left unanswered (no point produced), by family."""
    return {
        family: simulator.stats.total_polls_failed
        for family, simulator in simulators.items()
        if simulator.stats.total_polls_failed
    }


def discover_simulators() -> dict[str, FamilySimulator]:
    """Every family's ``SIMULATOR`` from ``drivers/<family>/simulator.py``, by family name."""
    import drivers

    found: dict[str, FamilySimulator] = {}
    for module_info in pkgutil.iter_modules(drivers.__path__):
        if not module_info.ispkg:
            continue
        name = f"drivers.{module_info.name}.{SIMULATOR_MODULE}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:
                continue  # this family has no simulator yet
            raise
        simulator = getattr(module, "SIMULATOR", None)
        if isinstance(simulator, FamilySimulator):
            found[simulator.family] = simulator
    return found


class SimulatedMqttLink:
    """One simulated device's (or stand-in gateway's) own MQTT connection, QoS 1.

    paho runs the network loop in its own thread and reconnects by itself with capped
    backoff, as a tracker's firmware does; what is published while the link is down waits
    in paho's queue and goes out after the reconnect (counted in ``queued``).
    """

    def __init__(
        self,
        ctx: SimulatorContext,
        *,
        username: str,
        password: str | None,
        will: tuple[str, bytes] | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.username = username
        # The broker pins the client id to the username (dynamic security), as a device's.
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=username,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.username_pw_set(username, password)
        tls = ctx.mqtt_tls()
        if tls is not None:
            client.tls_set_context(tls)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        self._host, self._port = ctx.mqtt_host, ctx.mqtt_port
        self.connected = threading.Event()
        self.refused = ""
        self.published = 0

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if getattr(reason, "is_failure", False):
            if not self.refused:  # once per refusal, not once per reconnect attempt
                _log.warning("simulated device %s: broker refused login: %s", self.username, reason)
            self.refused = str(reason)
            return
        self.refused = ""
        self.connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self.connected.clear()

    def start(self) -> None:
        """Connect in the background (and keep reconnecting)."""
        self._client.connect_async(self._host, self._port, keepalive=60)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish with QoS 1 (queued by paho while disconnected)."""
        self._client.publish(topic, payload, qos=1, retain=retain)
        self.published += 1

    def stop(self, last_words: tuple[str, bytes] | None = None) -> None:
        """Say ``last_words`` (a retained status) if connected, then disconnect."""
        if last_words is not None and self.connected.is_set():
            info = self._client.publish(last_words[0], last_words[1], qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()
