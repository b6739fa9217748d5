"""``kotahub run``: the whole of Kotahub for one machine, in one process.

It runs the hub ingest (MQTT -> write-ahead log -> InfluxDB), the registry's REST API and
technician page, and, when ``agent.gateway_id`` is set, the field agent (logged in as
its gateway, whose identity it creates: ``hub.agent.gateway_credential``). The hub and
the agent read devices from the registry database (or from a JSON file when one is
configured), and the hub's online/offline changes flow back into the registry so that
the API's ``online`` filter and the technician page show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from device_registry.database import RegistryDatabase, open_database
from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.directory import DeviceDirectory, DirectoryError, FileDeviceDirectory
from device_registry.errors import FieldError, RegistryError
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceStatusUpdate
from device_registry.web_api import ReadingsSource, TimedReadings
from hub.influxql import InfluxQL
from hub.ingest.device_status import StatusChange
from hub.last_readings import InfluxLastReadings
from hub.settings import ConfigError, Settings
from hub.start_checks import bind_listener

log = logging.getLogger(__name__)
STATUS_FLUSH_INTERVAL_S = 1.0
STATUS_BATCH = 500
READINGS_TIMEOUT_S = 3.0


def open_directory(
    settings: Settings, devices_file: Path | None, database: RegistryDatabase | None
) -> DeviceDirectory:
    """A JSON file when one is configured, else the registry database."""
    if devices_file is not None:
        return FileDeviceDirectory(devices_file)
    if database is None:
        database = open_database(settings.registry.resolved_database_url(settings.state_dir))
    return DatabaseDeviceDirectory(database)


def api_tls_files(settings: Settings) -> tuple[str | None, str | None]:
    """Certificate and key for ``registry.api_tls`` (the broker's), or (None, None)."""
    if not settings.registry.api_tls:
        return None, None
    from hub.local_stack import tls_files

    files = tls_files(settings)
    for path in (files.cert_file, files.key_file):
        if not path.is_file():
            raise ConfigError(
                f"registry.api_tls: {path} does not exist (run `kotahub stack up` first, "
                "or set stack.tls_cert_file and stack.tls_key_file)"
            )
    return str(files.cert_file), str(files.key_file)


def hub_directory(settings: Settings) -> DeviceDirectory:
    """The devices of ``kotahub hub run``: the first of these that is configured.

    ``ingest.devices_file`` (a JSON file); the registry API at ``ingest.registry_url`` (a
    hub worker on another machine: a token that may read, the list cached on disk for an
    outage); else the registry database (``registry.database_url``, PostgreSQL in
    production, the state folder's SQLite file by default).
    """
    ingest = settings.ingest
    if ingest.devices_file is not None:
        log.info("devices from %s", ingest.devices_file)
        return FileDeviceDirectory(ingest.devices_file)
    if ingest.registry_url is not None:
        from hub.agent.registry_feed import RegistryFeedDirectory, hub_feed_config

        log.info("devices from the registry API at %s", ingest.registry_url)
        return RegistryFeedDirectory(hub_feed_config(settings))
    url = settings.registry.resolved_database_url(settings.state_dir)
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        database = open_database(url)
        directory = DatabaseDeviceDirectory(database)
    except RegistryError as err:
        # One line: the driver's message spans several (psycopg adds a hint line).
        raise DirectoryError(f"registry database {shown}: {' '.join(str(err).split())}") from err
    log.info("devices from the registry database %s", shown)
    return directory


class StatusToRegistry:
    """Carries the hub's online/offline changes into the registry, in batches.

    The hub calls ``__call__`` from its own threads, so it only enqueues; ``run`` writes
    a batch a second, keeping database latency off the ingest path.
    """

    def __init__(self, service: RegistryService) -> None:
        self.service = service
        self._pending: queue.SimpleQueue[StatusChange] = queue.SimpleQueue()
        self.written = 0
        self.refused = 0

    def __call__(self, change: StatusChange) -> None:
        """Queue one change (thread-safe, never blocks)."""
        self._pending.put(change)

    def flush(self) -> None:
        """Write what is queued; a device the registry no longer knows is skipped."""
        latest: dict[str, StatusChange] = {}
        while True:
            try:
                change = self._pending.get_nowait()
            except queue.Empty:
                break
            latest[change.device_id] = change
        reports = [
            DeviceStatusUpdate(
                device_id=c.device_id,
                online=c.online,
                reason=c.reason[:200],
                last_seen=datetime.fromtimestamp(c.time_ms / 1000, tz=UTC),
            )
            for c in latest.values()
        ]
        for start in range(0, len(reports), STATUS_BATCH):
            self._write(reports[start : start + STATUS_BATCH])

    def _write(self, batch: list[DeviceStatusUpdate]) -> None:
        while batch:
            try:
                self.written += self.service.set_status(batch)
                return
            except FieldError as err:
                # "[i].device_id: unknown device": drop that one report, keep the others.
                index = _index_of(err.field)
                if index is None or index >= len(batch):
                    raise
                self.refused += 1
                log.info("status of %s not stored: %s", batch[index].device_id, err)
                batch = batch[:index] + batch[index + 1 :]

    async def run(self, stop: asyncio.Event) -> None:
        """Flush once a second until ``stop``, then once more."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATUS_FLUSH_INTERVAL_S)
            try:
                await asyncio.to_thread(self.flush)
            except RegistryError as err:
                log.warning("device status not stored in the registry: %s", err)


def _index_of(field: str) -> int | None:
    if field.startswith("[") and "]" in field:
        with contextlib.suppress(ValueError):
            return int(field[1 : field.index("]")])
    return None


def timed_readings(source: InfluxLastReadings) -> ReadingsSource:
    """The web app's readings source over InfluxDB: each metric's value and its time."""

    def read(device_id: str) -> TimedReadings | None:
        found = source.readings(device_id)
        if not found:
            return None  # the web app keeps what the hub pushed
        return TimedReadings(
            values={name: r.value for name, r in found.items()},
            times={name: r.time for name, r in found.items()},
        )

    return read


def readings_from_influx(
    settings: Settings, service: RegistryService
) -> tuple[InfluxQL | None, ReadingsSource | None]:
    """The registry page's source of last readings: the InfluxDB the hub writes to.

    Only the v1 query API is asked (InfluxDB 1.x, and 2.x/3.x through their v1
    compatibility with a username and password); a v2-only setup shows what was pushed.
    """
    ix = settings.influx
    if ix.api != "v1":
        log.info("last readings on the registry page need influx.api = v1; not shown")
        return None, None
    # A page load waits for this query: a short timeout keeps a slow InfluxDB from
    # holding the page, which then shows the pushed readings and says why.
    influx = InfluxQL(
        ix.url,
        username=ix.username,
        password=ix.password.get_secret_value() if ix.password else None,
        timeout_s=min(ix.timeout_s, READINGS_TIMEOUT_S),
    )
    return influx, timed_readings(InfluxLastReadings(service, influx, database=ix.database))


async def run_one_machine(settings: Settings, *, with_api: bool = True) -> None:
    """Run ingest, the registry API and (if configured) the agent until SIGINT/SIGTERM."""
    import signal

    import uvicorn

    from device_registry.mqtt_identities import DynamicSecurityClient, DynsecIdentities
    from device_registry.technician_page import set_alerts_url
    from device_registry.web_api import create_app
    from hub.agent.agent import Agent
    from hub.agent.gateway_credential import ensure_gateway_credential
    from hub.ingest.ingest_service import IngestService
    from hub.local_stack import broker_admin, mqtt_password

    # Local checks first (device lists, database), so a bad file is named before the
    # network is touched.
    database = open_database(settings.registry.resolved_database_url(settings.state_dir))
    ingest_directory = open_directory(settings, settings.ingest.devices_file, database)
    agent_directory = (
        open_directory(settings, settings.agent.devices_file, database)
        if settings.agent.gateway_id
        else None
    )
    password = mqtt_password(settings)
    dynsec: DynamicSecurityClient | None = None
    if settings.registry.mqtt_identities:
        dynsec = DynamicSecurityClient(
            broker_admin(settings, password),
            batch_size=settings.registry.dynsec_batch,
        )
    service = RegistryService(database, DynsecIdentities(dynsec) if dynsec else None)
    # The driver families' device types, with their metric tables as the schema, exist
    # before the first device is registered (idempotent; an operator's interval stays).
    seeded = [name for name, action in service.seed_types(actor="kotahub") if action != "unchanged"]
    if seeded:
        log.info("device types from the driver families: %s", ", ".join(seeded))
    # The agent logs in as its gateway: registered (with its broker identity) on first
    # start, its secret kept 0600 in the state folder and never printed.
    agent_settings = settings
    if settings.agent.gateway_id:
        agent_settings = await asyncio.to_thread(
            ensure_gateway_credential, settings, service, settings.agent.gateway_id
        )
    status_sink = StatusToRegistry(service)

    ingest = IngestService(settings, password, directory=ingest_directory)
    ingest.status.subscribe(status_sink)
    from hub.alerts.alert_runtime import attach_alerts
    from hub.alerts.alert_store import AlertStoreError
    from hub.alerts.engine_process import AlertEngineError
    from hub.alerts.page_cors import alerts_page_url
    from hub.alerts.rule_model import RuleError
    from hub.start_checks import StartError

    try:
        alerts = attach_alerts(ingest, settings)  # None without [alerts] rules
    except (RuleError, AlertStoreError, AlertEngineError) as err:
        raise StartError(str(err)) from err  # one line naming the file, rule and key

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server: uvicorn.Server | None = None
    api_socket: socket.socket | None = None
    readings_influx: InfluxQL | None = None
    if with_api:
        # Bound before ingest starts, so a port in use stops the start with one line
        # (uvicorn's own bind failure exits from inside its task, with a traceback).
        api_cert, api_key = api_tls_files(settings)
        api_socket = bind_listener(
            settings.registry.api_host, settings.registry.api_port, "registry.api_port"
        )
        readings_influx, readings_source = readings_from_influx(settings, service)
        app = create_app(
            service,
            readings_source=readings_source,
            tiles=settings.registry.tile_settings(),
            max_body_bytes=settings.registry.max_body_bytes,
            max_import_bytes=settings.registry.max_import_bytes,
            max_import_rows=settings.registry.max_import_rows,
        )
        set_alerts_url(app, alerts_page_url(settings))  # the page's "Open alerts" view
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=settings.registry.api_host,
                port=settings.registry.api_port,
                log_level="warning",
                ssl_certfile=api_cert,
                ssl_keyfile=api_key,
            )
        )
    try:
        await asyncio.to_thread(ingest.start)
    except BaseException:
        if api_socket is not None:
            api_socket.close()
        raise
    from hub.ota_campaigns import start_campaign_daemon

    # Campaigns started with --background run here, no terminal held open.
    campaigns = start_campaign_daemon(settings, password)
    from hub.registry_thresholds import start_threshold_writer

    # The gauges' registry stages as points the Flood board draws (docs/grafana.md).
    thresholds = start_threshold_writer(settings, ingest_directory)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(status_sink.run(stop), name="status-to-registry")
            if server is not None:
                # _serve, not serve: serve() swaps in uvicorn's own SIGINT/SIGTERM handlers,
                # and here one handler must stop ingest, agent and API together.
                sockets = [api_socket] if api_socket is not None else None
                group.create_task(server._serve(sockets), name="registry-api")
                log.info(
                    "registry API and technician page on %s://%s:%d/ (OpenAPI at /docs)",
                    "https" if settings.registry.api_tls else "http",
                    settings.registry.api_host,
                    settings.registry.api_port,
                )
            if settings.agent.gateway_id and agent_directory is not None:
                agent = Agent(
                    settings=agent_settings,
                    gateway_id=settings.agent.gateway_id,
                    directory=agent_directory,
                )
                group.create_task(agent.run(stop), name="agent")
                log.info("agent for gateway %s started", settings.agent.gateway_id)
            await stop.wait()
            if server is not None:
                server.should_exit = True
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(campaigns.stop)
        if thresholds is not None:
            await asyncio.to_thread(thresholds.stop)
        await asyncio.to_thread(ingest.stop)
        if alerts is not None:
            await asyncio.to_thread(alerts.stop)
        await asyncio.to_thread(status_sink.flush)
        if dynsec is not None:
            dynsec.close()
        if readings_influx is not None:
            readings_influx.close()
        if api_socket is not None:
            api_socket.close()
        database.close()
