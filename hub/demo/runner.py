"""``kotahub demo``: the local stack, a registered simulated Semarang, its simulators, one
agent per gateway, the hub and the registry API, with a live summary, in one process.

Start-up, in order: the stack (what was not running already), the fleet (registered once,
in one transaction, kept across runs), the hub ingest, the simulators (their servers
listen before any agent polls), one link and agent per gateway, the registry API, and
the control channel that ``kotahub demo fault`` talks to. ``stop`` undoes it all in
reverse, and stops the stack parts this run started unless ``keep_stack``.

Simulated time runs ``speed`` times real time, and so do the devices' reporting
intervals: the hub and the agents see each device's registered interval divided by the
speed (``DemoTimeDirectory``), so a gauge that reports every 5 minutes is polled every
5 s at ``--speed 60`` and counted offline after 3 silent intervals, as it would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shlex
import socket
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from device_registry.database import RegistryDatabase, open_database
from drivers.simulation import (
    FamilySimulator,
    FaultBoard,
    SimClock,
    SimulatedDevice,
    SimulatorContext,
)
from hub.demo.control import ControlError, ControlServer, fault_from_message
from hub.demo.demo_time import AGENT_GATEWAY, DemoTimeDirectory, route_ble_by_gateway
from hub.demo.fault_injector import FaultInjector, StackParts
from hub.demo.gateway_links import GatewayLink
from hub.demo.summary import (
    DemoDevice,
    DemoSnapshot,
    DemoSummary,
    GatewayState,
    HubCounters,
    SummarySources,
)
from hub.local_stack import LocalStack, PartName, mqtt_endpoint, mqtt_password, tls_files
from hub.settings import Settings

log = logging.getLogger(__name__)
Scale = Literal["sample", "city"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
# The highest water level per area over the last 5 minutes: what a rising flood changes.
LEVELS_QUERY = 'SELECT max("level_m") FROM "flood" WHERE time > now() - 5m GROUP BY "kecamatan"'
EXAMPLE_QUERIES = (
    "SELECT last(level_m) FROM flood GROUP BY kecamatan",
    "SELECT count(*) FROM /.*/ WHERE time > now() - 5m",
)
Progress = Callable[[str], None]
ALL_PARTS = frozenset({"hub", "simulators", "agents", "api", "control"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    """How the demo runs (the CLI's options)."""

    speed: float = 60.0
    scale: Scale = "sample"
    keep_stack: bool = False
    # False: the stack belongs to someone else (a test's), so it is neither started nor
    # stopped here; the broker and InfluxDB faults still act on it.
    manage_stack: bool = True
    with_api: bool = True
    fleet_file: Path | None = None
    # Which parts run in this process: all of them for ``kotahub demo``; the city bench
    # runs each in a process of its own to measure its CPU share.
    parts: frozenset[str] = ALL_PARTS
    # First TCP port of the simulated protocol servers (unset: the fleet module's default).
    first_port: int | None = None
    # (index, count): this process simulates one share of the fleet (the city bench splits
    # the devices with an MQTT connection each over several processes, see sim_share).
    sim_shard: tuple[int, int] = (0, 1)
    # (index, count): this process runs every count-th gateway's agent from index (the
    # city bench spreads the agents over processes, as a city runs one per gateway).
    agent_shard: tuple[int, int] = (0, 1)


@dataclass(frozen=True, slots=True)
class DemoGateway:
    """A gateway of the fleet and the identity its agent logs in with."""

    gateway_id: str
    area: str
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class DemoFleet:
    """The registered fleet: its simulated devices and its gateways."""

    devices: tuple[SimulatedDevice, ...]
    gateways: tuple[DemoGateway, ...]
    registered_now: bool


def grafana_note() -> str:
    """Where the Grafana provisioning files are, or that they are still to come."""
    path = PROJECT_ROOT / "dashboards" / "grafana"
    if path.is_dir():
        return f"provision Grafana from {path}/ (datasource: InfluxDB, InfluxQL)"
    return "dashboards/grafana/ (Grafana provisioning) arrives with the dashboards issue"


@dataclass
class DemoRunner:
    """Everything ``kotahub demo`` runs; ``start``, then ``wait`` or ``stop``."""

    settings: Settings
    options: DemoOptions = field(default_factory=DemoOptions)
    progress: Progress = field(default=lambda _msg: None)
    stack: LocalStack = field(init=False)
    board: FaultBoard = field(init=False, default_factory=FaultBoard)
    clock: SimClock = field(init=False)
    fleet: DemoFleet | None = field(init=False, default=None)
    summary: DemoSummary | None = field(init=False, default=None)
    injector: FaultInjector | None = field(init=False, default=None)
    sign_in_link: str = field(init=False, default="")
    stopped_parts: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.stack = LocalStack(self.settings)
        self.clock = SimClock(self.options.speed, datetime.now(UTC))
        self._started_parts: list[PartName] = []
        self._database: RegistryDatabase | None = None
        self._ingest: Any = None
        self._status_sink: Any = None
        self._simulators: dict[str, FamilySimulator] = {}
        self._sim_tasks: list[asyncio.Task[None]] = []
        self._links: dict[str, GatewayLink] = {}
        self._agents: list[Any] = []
        self._agent_tasks: list[asyncio.Task[None]] = []
        self._agent_stop = asyncio.Event()
        self._api_server: Any = None
        self._api_task: asyncio.Task[None] | None = None
        self._api_socket: socket.socket | None = None
        self._readings_influx: Any = None
        self._levels_influx: Any = None
        self._dynsec: Any = None
        self._control: ControlServer | None = None
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False
        self._undo_ble: Callable[[], None] | None = None
        self._alerts: Any = None  # the shipped rules and a webhook receiver (demo_pages.py)
        # The simulators' folder: the BLE simulator finds each gateway's FAKE radio here.
        self._sim_state_dir = self.settings.state_dir / "demo" / "simulators"

    # -- start ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start every part in order; on failure, stop what had started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        from hub.start_checks import check_before_start

        if "hub" in self.options.parts:
            with_api = self.options.with_api and "api" in self.options.parts
            check_before_start(self.settings, with_api=with_api)
        if self.options.manage_stack:
            self.progress("starting Mosquitto and InfluxDB")
            before = {part.name for part in self.stack.status() if part.state == "running"}
            await asyncio.to_thread(self.stack.up)
            self._started_parts = [name for name in ("mosquitto", "influxdb") if name not in before]
        self.progress(f"registering the {self.options.scale} fleet (once; kept across runs)")
        database = open_database(
            self.settings.registry.resolved_database_url(self.settings.state_dir)
        )
        self._database = database
        service = self._registry_service(database)
        fleet = await asyncio.to_thread(self._load_fleet, service)
        self.fleet = fleet
        parts = self.options.parts
        if "hub" in parts:
            self.progress(f"starting the hub ({len(fleet.devices):,} devices)")
            await self._start_ingest(database, service)
            self._build_summary(fleet)
        if "simulators" in parts:
            self.progress("starting the simulators")
            await self._start_simulators(fleet)
        if "agents" in parts:
            self.progress(f"starting {len(fleet.gateways)} agent(s), one per gateway")
            await self._start_agents(database, fleet)
        if "api" in parts and self.options.with_api:
            self.progress("starting the registry API and technician page")
            await self._start_api(service)
        self.injector = FaultInjector(
            board=self.board,
            device_ids=frozenset(d.device_id for d in fleet.devices),
            areas=sorted({d.kecamatan for d in fleet.devices}),
            links=self._links,
            parts=StackParts(self.stack),
        )
        if "control" in parts:
            self._control = ControlServer(self.settings.state_dir, self._handle)
            await self._control.start()
        if self.summary is not None:
            # Now that the API's sign-in link exists.
            self.summary.sources.next_steps = self.next_steps(fleet)
            self._background.append(asyncio.create_task(self._refresh_levels(), name="demo-levels"))

    def _registry_service(self, database: RegistryDatabase) -> Any:
        from device_registry.mqtt_identities import DynamicSecurityClient, DynsecIdentities
        from device_registry.registry_service import RegistryService
        from hub.local_stack import broker_admin

        registry = self.settings.registry
        if registry.mqtt_identities:
            self._dynsec = DynamicSecurityClient(
                broker_admin(self.settings, mqtt_password(self.settings)),
                batch_size=registry.dynsec_batch,
            )
        identities = DynsecIdentities(self._dynsec) if self._dynsec else None
        service = RegistryService(database, identities)
        service.seed_types(actor="kotahub-demo")
        return service

    def _load_fleet(self, service: Any) -> DemoFleet:
        """Register the fleet (once; kept across runs) and take each gateway's login."""
        from hub.demo import fleet as fleet_module

        extra = {"first_port": self.options.first_port} if self.options.first_port else {}
        loaded = fleet_module.register_fleet(
            service,
            scale=self.options.scale,
            fleet_file=self.options.fleet_file,
            state_dir=self.settings.state_dir,
            **extra,
        )
        gateways = []
        for gateway in loaded.gateways:
            gateways.append(
                DemoGateway(
                    gateway_id=gateway.gateway_id,
                    area=gateway.kecamatan,
                    username=gateway.mqtt_username or gateway.gateway_id,
                    password=gateway.mqtt_password or "",
                )
            )
        return DemoFleet(
            devices=tuple(loaded.devices),
            gateways=tuple(gateways),
            registered_now=bool(loaded.registered_now),
        )

    async def _start_ingest(self, database: RegistryDatabase, service: Any) -> None:
        from hub.ingest.ingest_service import IngestService
        from hub.one_machine import StatusToRegistry

        directory = DemoTimeDirectory(database, self.options.speed)
        ingest = IngestService(self.settings, mqtt_password(self.settings), directory=directory)
        self._status_sink = StatusToRegistry(service)
        ingest.status.subscribe(self._status_sink)
        ingest.status.subscribe(
            lambda change: (
                self.summary.note_change(change.device_id, change.online, change.reason)
                if self.summary is not None
                else None
            )
        )
        from hub.alerts.demo_pages import attach_demo_alerts

        areas = sorted({d.kecamatan for d in self.fleet.devices}) if self.fleet else []
        self._alerts = attach_demo_alerts(ingest, self.settings, areas)
        self.progress(f"alert pages go to the demo's webhook receiver: {self.pages_url}")
        await asyncio.to_thread(ingest.start)
        self._ingest = ingest
        self._background.append(
            asyncio.create_task(self._status_sink.run(self._agent_stop), name="demo-status")
        )

    async def _start_simulators(self, fleet: DemoFleet) -> None:
        from hub.demo.fleet import all_simulators

        # Each family's simulator, and MQTT-level stand-ins for families without one yet.
        self._simulators = all_simulators()
        by_family: dict[str, list[SimulatedDevice]] = {}
        for device in fleet.devices:
            if sim_share(device, self.options.sim_shard):
                by_family.setdefault(device.family, []).append(device)
        missing = sorted(set(by_family) - set(self._simulators))
        if missing:
            log.warning("no simulator for family(ies) %s: their devices stay silent", missing)
        host, port = self.settings.mqtt.host, self.settings.mqtt.port
        ca_file = None
        if self.settings.mqtt.tls:
            _h, port, _t = mqtt_endpoint(self.settings)
            ca_file = tls_files(self.settings).ca_file
        ctx = SimulatorContext(
            clock=self.clock,
            faults=self.board,
            mqtt_host=host,
            mqtt_port=port,
            mqtt_ca_file=ca_file,
            state_dir=self._sim_state_dir,
        )
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
        for family, devices in sorted(by_family.items()):
            simulator = self._simulators.get(family)
            if simulator is None:
                continue
            simulator.stats.reset()
            self._sim_tasks.append(
                asyncio.create_task(self._simulate(simulator, devices, ctx), name=f"sim-{family}")
            )
        # Protocol servers listen before the agents' first polls.
        await asyncio.sleep(1.0)

    async def _simulate(
        self, simulator: FamilySimulator, devices: Sequence[SimulatedDevice], ctx: SimulatorContext
    ) -> None:
        try:
            await simulator.run(devices, ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulator of %s failed; its devices go silent", simulator.family)

    async def _start_agents(self, database: RegistryDatabase, fleet: DemoFleet) -> None:
        from hub.agent.agent import Agent

        if any(d.family == "ble" for d in fleet.devices):
            self._undo_ble = route_ble_by_gateway(self._sim_state_dir)
        host, port, _tls = mqtt_endpoint(self.settings)
        index, count = self.options.agent_shard
        for gateway in fleet.gateways[index::count]:
            link = GatewayLink(gateway.gateway_id, host, port)
            await link.start()
            self._links[gateway.gateway_id] = link
            mq = self.settings.mqtt
            mqtt = mq.model_copy(update={"tls_port": link.port} if mq.tls else {"port": link.port})
            agent_cfg = self.settings.agent.model_copy(
                update={
                    "gateway_id": gateway.gateway_id,
                    "mqtt_username": gateway.username,
                    "mqtt_password": SecretStr(gateway.password) if gateway.password else None,
                }
            )
            settings = self.settings.model_copy(update={"mqtt": mqtt, "agent": agent_cfg})
            agent = Agent(
                settings=settings,
                gateway_id=gateway.gateway_id,
                directory=DemoTimeDirectory(database, self.options.speed),
            )
            self._agents.append(agent)
            self._agent_tasks.append(
                asyncio.create_task(self._run_agent(agent), name=f"agent-{gateway.gateway_id}")
            )

    async def _run_agent(self, agent: Any) -> None:
        AGENT_GATEWAY.set(agent.gateway_id)  # its tasks inherit it: see route_ble_by_gateway
        try:
            await agent.run(self._agent_stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("agent %s stopped", agent.gateway_id)

    async def _start_api(self, service: Any) -> None:
        import uvicorn

        from device_registry.api_tokens import create_token
        from device_registry.cli import sign_in_link
        from device_registry.technician_page import set_alerts_url
        from device_registry.web_api import create_app
        from hub.one_machine import readings_from_influx
        from hub.start_checks import bind_listener

        registry = self.settings.registry
        self._api_socket = bind_listener(registry.api_host, registry.api_port, "registry.api_port")
        self._readings_influx, readings_source = readings_from_influx(self.settings, service)
        app = create_app(
            service,
            readings_source=readings_source,
            tiles=registry.tile_settings(),
            max_body_bytes=registry.max_body_bytes,
            max_import_bytes=registry.max_import_bytes,
            max_import_rows=registry.max_import_rows,
        )
        # The technician page's Alerts tab calls the demo's alert API (demo_pages.py).
        set_alerts_url(app, self._alerts.page_url if self._alerts is not None else "")
        self._api_server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=registry.api_host,
                port=registry.api_port,
                log_level="warning",
            )
        )
        # _serve, not serve: serve() installs uvicorn's own signal handlers.
        self._api_task = asyncio.create_task(
            self._api_server._serve([self._api_socket]), name="demo-api"
        )
        assert self._database is not None
        token = create_token(
            self._database,
            name="demo",
            role="technician",
            actor="kotahub-demo",
            expires_in_s=24 * 3600,
        )
        self.sign_in_link = sign_in_link(self.api_url, token.token)

    @property
    def api_url(self) -> str:
        """The registry API's base address."""
        registry = self.settings.registry
        host = "127.0.0.1" if registry.api_host in ("0.0.0.0", "") else registry.api_host
        return f"http://{host}:{registry.api_port}"

    @property
    def pages_url(self) -> str:
        """Where the demo's webhook receiver lists the pages it got ("" without the hub)."""
        return self._alerts.receiver.url if self._alerts is not None else ""

    # -- summary -------------------------------------------------------------------
    def _build_summary(self, fleet: DemoFleet) -> None:
        ingest = self._ingest
        devices = [
            DemoDevice(d.device_id, d.family, d.kecamatan, d.gateway_id) for d in fleet.devices
        ]
        has_flood = any(d.family == "flood" for d in fleet.devices)
        self._levels_influx = self._influx_client() if has_flood else None
        self.summary = DemoSummary(
            devices,
            SummarySources(
                hub=self._hub_counters,
                online=ingest.status.online,
                gateways=self._gateway_states,
                produced=lambda: {f: s.stats.total for f, s in self._simulators.items()},
                faults=lambda: self.injector.active() if self.injector else [],
                flood_levels=self._flood_levels if has_flood else None,
                sim_time=self.clock.now,
                speed=self.options.speed,
                next_steps=self.next_steps(fleet),
            ),
        )

    def _influx_client(self) -> Any:
        from hub.influxql import InfluxQL

        ix = self.settings.influx
        return InfluxQL(
            ix.url,
            username=ix.username,
            password=ix.password.get_secret_value() if ix.password else None,
            timeout_s=3.0,
        )

    def _hub_counters(self) -> HubCounters:
        ingest = self._ingest
        stats = ingest.stats
        intake = getattr(ingest, "_intake", None)
        return HubCounters(
            messages_in=stats.messages_in,
            lines_written=stats.lines_written,
            deadletters=dict(stats.deadletters),
            wal_depth_bytes=stats.wal_depth_bytes,
            broker_connected=bool(intake is not None and intake.connected),
        )

    def _gateway_states(self) -> dict[str, GatewayState]:
        out = {}
        for agent in self._agents:
            link = self._links.get(agent.gateway_id)
            out[agent.gateway_id] = GatewayState(
                cut=bool(link and link.cut),
                connected=agent.publisher.connected,
                outbox=len(agent.outbox),
            )
        return out

    def _flood_levels(self) -> dict[str, float]:
        ix = self.settings.influx
        series = self._levels_influx.query(LEVELS_QUERY, database=ix.database)
        out: dict[str, float] = {}
        for item in series:
            area = (item.tags or {}).get("kecamatan", "")
            for row in item.values:
                if row[1] is not None:
                    out[area] = float(row[1])
        return out

    async def _refresh_levels(self) -> None:
        while True:
            if self.summary is not None:
                await asyncio.to_thread(self.summary.refresh_levels)
            await asyncio.sleep(5.0)

    def next_steps(self, fleet: DemoFleet) -> list[tuple[str, str]]:
        """Where to look next: the API, the page, InfluxDB, Grafana, the fault commands."""
        ix = self.settings.influx
        example = next((d.device_id for d in fleet.devices if d.gateway_id), "DEVICE")
        gateway = fleet.gateways[0].gateway_id if fleet.gateways else "GATEWAY"
        area = fleet.devices[0].kecamatan if fleet.devices else "AREA"
        steps = []
        if self.options.with_api:
            steps += [
                ("registry API", f"{self.api_url}/docs"),
                ("technician page", f"{self.sign_in_link} (signs in, valid 24 h)"),
            ]
        steps += [
            *(
                (
                    "InfluxDB" if i == 0 else "",
                    f"curl -sG {ix.url}/query --data-urlencode db={ix.database} "
                    f"--data-urlencode {shlex.quote('q=' + query)}",
                )
                for i, query in enumerate(EXAMPLE_QUERIES)
            ),
            ("Grafana", grafana_note()),
            *(
                [("alert pages", f"{self.pages_url} (each area's team is paged here)")]
                if self.pages_url
                else []
            ),
            (
                "faults",
                f"kotahub demo fault device-dies {example} | gateway-cut {gateway} | "
                f'flood-rises "{area}" | broker-restart | influx-outage 60s; kotahub demo heal',
            ),
        ]
        return steps

    def snapshot(self) -> DemoSnapshot:
        """The summary now (after ``start``)."""
        assert self.summary is not None, "start() first"
        return self.summary.snapshot()

    # -- control -------------------------------------------------------------------
    async def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        assert self.injector is not None
        if command == "fault":
            fault = fault_from_message(request)
            message = await self.injector.apply(fault)
            log.warning("fault: %s", message)
            return {"ok": True, "message": message}
        if command == "heal":
            message = await self.injector.heal()
            log.warning("heal: %s", message)
            return {"ok": True, "message": message}
        if command == "status":
            snap = self.snapshot()
            return {"ok": True, "message": "running", "snapshot": _jsonable(snap)}
        raise ControlError(f"unknown command {command!r}")

    async def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one control request in-process (what the channel does), for tests."""
        try:
            return await self._handle(request)
        except ControlError as err:
            return {"ok": False, "message": str(err)}

    # -- stop ----------------------------------------------------------------------
    async def stop(self) -> None:
        """Stop everything this run started, in reverse order; safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        if self._control is not None:
            await self._control.close()
        if self.injector is not None:
            await self.injector.close()
        self._agent_stop.set()
        if self._agent_tasks:
            await asyncio.wait(self._agent_tasks, timeout=30)
        for task in self._sim_tasks + self._background:
            task.cancel()
        for task in self._sim_tasks + self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for link in self._links.values():
            await link.close()
        # The SNMP families' shared engines were closed by the last agent to stop (their
        # DriverFamily.close hooks): nothing of theirs is left here to close.
        if self._undo_ble is not None:
            self._undo_ble()
        if self._api_server is not None:
            self._api_server.should_exit = True
        if self._api_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._api_task, 10)
        if self._ingest is not None:
            await asyncio.to_thread(self._ingest.stop)
        if self._alerts is not None:
            await asyncio.to_thread(self._alerts.stop)
        if self._status_sink is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._status_sink.flush)
        for closable in (self._readings_influx, self._levels_influx, self._dynsec):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        if self._api_socket is not None:
            self._api_socket.close()
        if self._database is not None:
            self._database.close()
        if self.options.manage_stack and not self.options.keep_stack:
            parts = StackParts(self.stack)
            for name in reversed(self._started_parts):
                self.progress(f"stopping {name}")
                await asyncio.to_thread(parts.stop, name)
                self.stopped_parts.append(name)


def sim_share(device: SimulatedDevice, shard: tuple[int, int]) -> bool:
    """Whether ``device`` is simulated by shard ``(index, count)``.

    Shard 0 serves every device behind a gateway (their servers share ports); devices with
    a broker connection of their own are spread over shards 1..count-1. paho's network loop
    uses select(), which takes no descriptor above 1023: about 300 connections per process.
    """
    index, count = shard
    if count <= 1:
        return True
    if device.gateway_id is not None:
        return index == 0
    return index > 0 and zlib.crc32(device.device_id.encode()) % (count - 1) == index - 1


def _jsonable(snap: DemoSnapshot) -> dict[str, Any]:
    data = dataclasses.asdict(snap)
    data["sim_time"] = snap.sim_time.isoformat() if snap.sim_time else None
    return data
