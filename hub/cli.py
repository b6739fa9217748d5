"""The ``kotahub`` command line."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from device_registry import cli_runtime as registry_runtime
from device_registry.errors import CredentialsError
from firmware_tools import cli as firmware_cli
from hub.cli_lazy import LazyGroup, lazy_group_class
from hub.settings import ConfigError, Settings, load_settings, redacted

if TYPE_CHECKING:  # imported where used: `kotahub --help` loads neither (paho, HTTP, TLS)
    from hub.backup import Summary
    from hub.local_stack import LocalStack


def _install_firmware_commands() -> None:
    """Campaigns and provisioning join ``kotahub firmware`` once that group is loaded."""
    from firmware_tools.campaign_cli import set_campaign_runtime_loader
    from firmware_tools.provisioning_cli import set_provisioning_runtime_loader

    firmware_cli.add_subcommands()
    set_campaign_runtime_loader(_campaign_runtime)
    set_provisioning_runtime_loader(_provisioning_runtime)


# Imported on first use (SQLAlchemy, the alert engine, HTTP clients): `kotahub --help` and
# `kotahub stack up` do not wait for them. Help lines as the groups' own (tests/hub checks).
_REGISTRY = "device_registry.cli"
LAZY_GROUPS = {
    "devices": LazyGroup(_REGISTRY, "devices_app", "Register, find, change and retire devices."),
    "teams": LazyGroup(_REGISTRY, "teams_app", "Field teams, their members and contact channels."),
    "sites": LazyGroup(_REGISTRY, "sites_app", "Sites."),
    "registry": LazyGroup(
        _REGISTRY, "registry_app", "The registry service, device types and API tokens."
    ),
    "firmware": LazyGroup(
        "firmware_tools.cli",
        "firmware_app",
        "Firmware images: signing key, signed images, the hub's image store.",
        on_load=lambda: _install_firmware_commands(),
    ),
    "alerts": LazyGroup(
        "hub.alerts.cli", "alerts_app", "List, acknowledge, resolve and silence alerts."
    ),
    "influx": LazyGroup(
        "hub.influx_cli", "influx_app", "Prepare InfluxDB: retention policies and rollups."
    ),
    "dashboards": LazyGroup("hub.dashboards_cli", "dashboards_app", "Grafana boards: upload them."),
    "demo": LazyGroup(
        "hub.demo.cli",
        "demo_app",
        "A simulated Semarang: stack, fleet, simulators, agents, hub and a live summary.",
    ),
}

app = typer.Typer(
    name="kotahub",
    help="Kotahub: an IoT sensor and device hub for cities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=lazy_group_class(LAZY_GROUPS),
)
stack_app = typer.Typer(help="Run the local Mosquitto and InfluxDB.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
hub_app = typer.Typer(help="Run the hub (MQTT ingest to InfluxDB).", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(config_app, name="config")
app.add_typer(hub_app, name="hub")

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Settings file (default: $KOTAHUB_CONFIG, else ./kotahub.toml if present).",
        envvar="KOTAHUB_CONFIG",
        show_envvar=False,
    ),
]


def settings_or_exit(config: Path | None) -> Settings:
    """Load settings, or print the reason and exit with status 2."""
    try:
        return load_settings(config)
    except ConfigError as err:
        err_console.print(f"[red]configuration error[/red]: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from err


def _registry_runtime(
    config: Path | None, *, with_broker: bool = True
) -> registry_runtime.RegistryRuntime:
    """Registry commands: database URL and (if needed) broker login from the settings."""
    from hub.local_stack import broker_admin, mqtt_password

    settings = settings_or_exit(config)
    registry = settings.registry
    broker = None
    if registry.mqtt_identities and with_broker:
        try:
            password = mqtt_password(settings)
        except ConfigError as err:
            err_console.print(
                f"[red]configuration error[/red]: {err}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from err
        # TLS and the CA when mqtt.tls is set, else the loopback plain port.
        broker = broker_admin(settings, password)
    return registry_runtime.RegistryRuntime(
        database_url=registry.resolved_database_url(settings.state_dir),
        broker=broker,
        dynsec_batch=registry.dynsec_batch,
        api_host=registry.api_host,
        api_port=registry.api_port,
        tiles=registry.tile_settings(),
        max_body_bytes=registry.max_body_bytes,
        max_import_bytes=registry.max_import_bytes,
        max_import_rows=registry.max_import_rows,
    )


registry_runtime.set_runtime_loader(_registry_runtime)


def _firmware_runtime(config: Path | None) -> firmware_cli.FirmwareRuntime:
    """Firmware commands: the image store under the state folder, the registry's database."""
    settings = settings_or_exit(config)
    return firmware_cli.FirmwareRuntime(
        store_dir=settings.state_dir / "firmware",
        database_url=settings.registry.resolved_database_url(settings.state_dir),
    )


firmware_cli.set_runtime_loader(_firmware_runtime)


def _campaign_runtime(config: Path | None) -> Any:
    """Campaign commands: the store, the state folder, the registry and the OTA sender's login."""
    from firmware_tools.campaign_cli import CampaignRuntime
    from firmware_tools.ota_identity import ensure_ota_identity
    from hub.local_stack import broker_admin
    from hub.ota_campaigns import alert_gate

    settings = settings_or_exit(config)
    try:
        broker = ensure_ota_identity(broker_admin(settings), settings.state_dir)
    except (ConfigError, CredentialsError) as err:
        err_console.print(f"[red]broker[/red]: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from err
    return CampaignRuntime(
        store_dir=settings.state_dir / "firmware",
        state_dir=settings.state_dir,
        database_url=settings.registry.resolved_database_url(settings.state_dir),
        broker=broker,
        alerts=alert_gate(settings),  # the health gate's "no new alerts on updated devices"
    )


def _provisioning_runtime(config: Path | None) -> Any:
    """BLE provisioning: a registry that creates broker identities, and the broker's address."""
    from device_registry.database import open_database
    from device_registry.mqtt_identities import DynamicSecurityClient, DynsecIdentities
    from device_registry.registry_service import RegistryService
    from firmware_tools.provisioning_cli import ProvisioningRuntime
    from hub.local_stack import broker_admin

    settings = settings_or_exit(config)

    def make_service() -> RegistryService:
        database = open_database(settings.registry.resolved_database_url(settings.state_dir))
        dynsec = DynamicSecurityClient(
            broker_admin(settings), batch_size=settings.registry.dynsec_batch
        )
        return RegistryService(database, DynsecIdentities(dynsec))

    mq = settings.mqtt
    return ProvisioningRuntime(
        make_service=make_service,
        mqtt_host=mq.host,
        mqtt_port=mq.resolved_tls_port if mq.tls else mq.port,
        mqtt_tls=mq.tls,
    )


def _stack(config: Path | None) -> LocalStack:
    from hub.local_stack import LocalStack

    return LocalStack(settings_or_exit(config), log=lambda msg: console.print(f"  {msg}"))


def _print_status(stack: LocalStack) -> bool:
    from hub.service_probes import probe_services

    table = Table(title=f"Kotahub stack ({stack.state_dir})")
    for column in ("part", "state", "port", "version", "pid", "detail"):
        table.add_column(column)
    healthy = True
    for part in stack.status():
        colour = {"running": "green", "stopped": "dim", "not responding": "red"}[part.state]
        healthy &= part.state == "running"
        table.add_row(
            part.name,
            f"[{colour}]{part.state}[/{colour}]",
            str(part.port),
            part.version or "-",
            str(part.pid) if part.pid else "-",
            part.detail,
        )
    # The hub and the API are not the stack's (the operator starts them), so they do not
    # count towards its health; they are shown so that one command answers "what runs?".
    for service in probe_services(stack.settings):
        colour = {"running": "green", "not running": "dim"}.get(service.state, "red")
        table.add_row(
            service.name,
            f"[{colour}]{service.state}[/{colour}]",
            str(service.port),
            "-",
            str(service.pid) if service.pid else "-",
            service.detail,
        )
    console.print(table)
    return healthy


@stack_app.command("up")
def stack_up(config: ConfigOption = None) -> None:
    """Start Mosquitto and InfluxDB (idempotent) and wait until both answer."""
    from hub.local_stack import StackError

    stack = _stack(config)
    try:
        stack.up()
    except StackError as err:
        err_console.print(f"[red]stack up failed[/red]: {err}", highlight=False)
        raise typer.Exit(1) from err
    _print_status(stack)


@stack_app.command("down")
def stack_down(config: ConfigOption = None) -> None:
    """Stop the processes that `stack up` started, and nothing else."""
    for line in _stack(config).down():
        console.print(line)


@stack_app.command("status")
def stack_status(config: ConfigOption = None) -> None:
    """Show each part's state, port, version and PID, and the hub and API if they run.

    Exits 1 unless Mosquitto and InfluxDB run (the hub and the API do not count).
    """
    if not _print_status(_stack(config)):
        raise typer.Exit(1)


def _print_summary(title: str, summary: Summary) -> None:
    table = Table(title=title)
    for column in ("part", "what", "detail"):
        table.add_column(column)
    for row in summary.rows:
        table.add_row(*row)
    console.print(table)
    for advice in summary.advice:
        console.print(f"[yellow]note[/yellow]: {advice}", highlight=False, soft_wrap=True)


BackupDir = Annotated[Path, typer.Argument(help="The backup folder.", file_okay=False)]
ForceOption = Annotated[bool, typer.Option("--force", help="Replace what is there.")]


@app.command("backup")
def backup_command(
    target: BackupDir, force: ForceOption = False, config: ConfigOption = None
) -> None:
    """Back up InfluxDB, the registry, the broker's identities and the credentials to DIR.

    The stack must be up (InfluxDB is read over its RPC port); the hub may go on running.
    A non-empty DIR is refused unless --force.
    """
    from hub.backup import BackupError, backup
    from hub.local_stack import StackError

    settings = settings_or_exit(config)
    try:
        with console.status("backing up...") as status:
            summary = backup(settings, target, force=force, progress=status.update)
    except (BackupError, StackError, OSError, sqlite3.Error) as err:
        err_console.print(f"[red]backup failed[/red]: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from err
    _print_summary(f"Backup in {target.resolve()}", summary)


@app.command("restore")
def restore_command(
    source: BackupDir, force: ForceOption = False, config: ConfigOption = None
) -> None:
    """Restore a backup made by `kotahub backup` into this state folder.

    The hub and the registry API must be stopped. Mosquitto and InfluxDB are stopped while
    the broker's identities are replaced, then started. Existing devices or time series are
    replaced only with --force.
    """
    from hub.backup import BackupError, restore
    from hub.local_stack import StackError

    settings = settings_or_exit(config)
    try:
        with console.status("restoring...") as status:
            summary = restore(settings, source, force=force, progress=status.update)
    except (BackupError, StackError, OSError, sqlite3.Error) as err:
        err_console.print(f"[red]restore failed[/red]: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from err
    _print_summary(f"Restored from {source.resolve()}", summary)


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective settings as JSON, secrets masked."""
    console.print_json(json.dumps(redacted(settings_or_exit(config))))


@app.command("agent")
def agent_command(
    gateway: Annotated[
        str | None, typer.Option("--gateway", "-g", help="Gateway id (default: agent.gateway_id).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Poll the devices assigned to a gateway and publish them to the broker."""
    from hub.agent.cli import AgentStartError, run_agent

    try:
        run_agent(settings_or_exit(config), gateway)
    except (AgentStartError, ConfigError) as err:
        err_console.print(f"[red]agent cannot start[/red]: {err}", highlight=False)
        raise typer.Exit(2) from err


@app.command("run")
def run_command(
    config: ConfigOption = None,
    api: Annotated[
        bool, typer.Option("--api/--no-api", help="Also serve the registry API and page.")
    ] = True,
) -> None:
    """Run Kotahub on one machine: hub ingest, registry API and page, and the agent.

    The agent starts when agent.gateway_id is set. Stop with Ctrl-C or SIGTERM.
    """
    import asyncio
    import logging

    from device_registry.directory import DirectoryError
    from device_registry.errors import RegistryError
    from hub.agent.agent import AgentFatalError
    from hub.ingest.ingest_service import IngestError
    from hub.ingest.write_ahead_log import WalError
    from hub.one_machine import run_one_machine
    from hub.start_checks import StartError, check_before_start

    settings = settings_or_exit(config)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    exit_code = 0
    try:
        check_before_start(settings, with_api=api)
        asyncio.run(run_one_machine(settings, with_api=api))
    # except*: what fails inside run_one_machine's TaskGroup comes as an ExceptionGroup,
    # which a plain except would not catch (it printed a traceback).
    except* AgentFatalError as group:
        for err in group.exceptions:
            err_console.print(
                f"[red]kotahub run stopped[/red]: {err}", highlight=False, soft_wrap=True
            )
        exit_code = 1
    except* (
        StartError,
        ConfigError,
        DirectoryError,
        RegistryError,
        IngestError,
        WalError,
        OSError,
    ) as group:
        for failure in group.exceptions:
            err_console.print(
                f"[red]kotahub run cannot start[/red]: {failure}{_broker_hint(settings, failure)}",
                highlight=False,
                soft_wrap=True,
            )
        exit_code = 2
    if exit_code:
        raise typer.Exit(exit_code)


def _broker_hint(settings: Settings, err: BaseException) -> str:
    """A hint when the broker the hub waited for does not answer at all (stack not up)."""
    from hub.ingest.ingest_service import IngestError
    from hub.local_stack import port_in_use

    mq = settings.mqtt
    if isinstance(err, IngestError) and not port_in_use(mq.host, mq.port):
        return f" (nothing answers on {mq.host}:{mq.port}: is the stack up? `kotahub stack up`)"
    return ""


@hub_app.command("run")
def hub_run(config: ConfigOption = None) -> None:
    """Ingest MQTT into InfluxDB until SIGTERM or SIGINT (see docs/ingest.md)."""
    import logging

    from device_registry.directory import DirectoryError
    from hub.alerts.alert_runtime import attach_alerts
    from hub.alerts.alert_store import AlertStoreError
    from hub.alerts.engine_process import AlertEngineError
    from hub.alerts.rule_model import RuleError
    from hub.ingest import IngestError, IngestService
    from hub.ingest.write_ahead_log import WalError
    from hub.local_stack import mqtt_password
    from hub.one_machine import hub_directory
    from hub.start_checks import StartError, check_before_start

    settings = settings_or_exit(config)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        check_before_start(settings, with_api=False)
        # Devices: ingest.devices_file, else the registry API, else the registry database.
        service = IngestService(
            settings, mqtt_password(settings), directory=hub_directory(settings)
        )
        alerts = attach_alerts(service, settings)  # None without [alerts] rules
        try:
            service.run_until_signal()
        finally:
            if alerts is not None:
                alerts.stop()
    except (
        StartError,
        ConfigError,
        DirectoryError,
        IngestError,
        WalError,
        OSError,
        RuleError,
        AlertStoreError,
        AlertEngineError,
    ) as err:
        err_console.print(
            f"[red]hub failed[/red]: {err}{_broker_hint(settings, err)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from err


def main() -> None:
    """Entry point for ``python -m hub``."""
    app()
