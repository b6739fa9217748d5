"""``kotahub devices|teams|sites|registry`` commands: they work on the database directly.

The hub's CLI registers these Typer apps and installs a loader that turns ``--config``
into a ``RegistryRuntime`` (database URL, broker admin login); the registry never imports
the hub. Writes are audited as ``cli:<login>``.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from device_registry.api_tokens import create_token, list_tokens, revoke_token
from device_registry.bulk_import import (
    ImportFileError,
    ImportFormat,
    export_csv,
    export_geojson,
    import_devices,
    parse_file,
)
from device_registry.database import open_database
from device_registry.errors import RegistryError
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from device_registry.schemas import (
    DeviceCreate,
    DevicePublic,
    DeviceQuery,
    DeviceUpdate,
    DeviceWritten,
    Role,
    SiteCreate,
    TeamCreate,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryRuntime:
    """What the registry commands need from the settings."""

    database_url: str
    broker: BrokerAdmin | None
    dynsec_batch: int = 50
    api_host: str = "127.0.0.1"
    api_port: int = 18090


RuntimeLoader = Callable[[Path | None], RegistryRuntime]
_loader: list[RuntimeLoader] = []

console = Console()
err_console = Console(stderr=True)
devices_app = typer.Typer(help="Register, find, change and retire devices.", no_args_is_help=True)
teams_app = typer.Typer(help="Field teams.", no_args_is_help=True)
sites_app = typer.Typer(help="Sites.", no_args_is_help=True)
registry_app = typer.Typer(help="The registry service and its API tokens.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
registry_app.add_typer(token_app, name="token")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Settings file.", envvar="KOTAHUB_CONFIG", show_envvar=False
    ),
]


def set_runtime_loader(loader: RuntimeLoader) -> None:
    """Install how ``--config`` becomes a RegistryRuntime (done by the hub's CLI)."""
    _loader[:] = [loader]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:
        return f"cli:uid{os.getuid()}"


@contextmanager
def _service(config: Path | None, *, broker: bool = True) -> Iterator[RegistryService]:
    if not _loader:
        raise RuntimeError("no runtime loader installed (use the `kotahub` command)")
    runtime = _loader[0](config)
    dynsec: DynamicSecurityClient | None = None
    try:
        database = open_database(runtime.database_url)
        if broker and runtime.broker is not None:
            dynsec = DynamicSecurityClient(runtime.broker, batch_size=runtime.dynsec_batch)
        yield RegistryService(database, DynsecIdentities(dynsec) if dynsec else None)
    except (RegistryError, ImportFileError) as err:
        err_console.print(f"[red]error[/red]: {err}", highlight=False)
        raise typer.Exit(1) from err
    except ValidationError as err:
        for item in err.errors():
            where = ".".join(str(p) for p in item["loc"]) or "(input)"
            err_console.print(f"[red]invalid[/red] {where}: {item['msg']}", highlight=False)
        raise typer.Exit(2) from err
    finally:
        if dynsec is not None:
            dynsec.close()


def _device_table(devices: list[DevicePublic], title: str) -> Table:
    table = Table(title=title)
    for column in (
        "id",
        "type",
        "state",
        "kecamatan",
        "kelurahan",
        "RW/RT",
        "team",
        "gateway",
        "serial",
    ):
        table.add_column(column)
    colours = {"active": "green", "maintenance": "yellow", "planned": "cyan", "retired": "dim"}
    for d in devices:
        colour = colours.get(d.state, "white")
        table.add_row(
            d.id,
            d.device_type,
            f"[{colour}]{d.state}[/{colour}]",
            d.kecamatan or "-",
            d.kelurahan or "-",
            f"{d.rw or '-'}/{d.rt or '-'}",
            d.team_id or "-",
            d.gateway_id or "-",
            d.serial or "-",
        )
    return table


def _print_written(written: DeviceWritten) -> None:
    console.print_json(written.device.model_dump_json(exclude={"created_at", "updated_at"}))
    if written.credentials:
        console.print(
            "[bold yellow]MQTT credentials (shown once, store them on the device now):[/]\n"
            f"  username/client id: {written.credentials.username}\n"
            f"  password:           {written.credentials.password}\n"
            f"  publish under:      {written.credentials.publish_prefix}",
            highlight=False,
        )


def _parse_tags(tags: list[str] | None) -> dict[str, str] | None:
    if not tags:
        return None
    out = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--tag {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


@devices_app.command("add")
def devices_add(
    device_id: Annotated[str, typer.Argument(help="Device id (also its MQTT username).")],
    device_type: Annotated[str, typer.Option("--type", help="Device type name.")],
    state: str = "planned",
    serial: str | None = None,
    vendor: str | None = None,
    model: str | None = None,
    gateway: str | None = None,
    parent: str | None = None,
    site: str | None = None,
    team: str | None = None,
    kota: str | None = None,
    kecamatan: str | None = None,
    kelurahan: str | None = None,
    rw: str | None = None,
    rt: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    owner: str = "city",
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    no_credentials: bool = False,
    config: ConfigOption = None,
) -> None:
    """Register a device; a live MQTT device or gateway gets credentials (shown once)."""
    fields: dict[str, Any] = {
        "id": device_id,
        "device_type": device_type,
        "state": state,
        "serial": serial,
        "vendor": vendor,
        "model": model,
        "gateway_id": gateway,
        "parent_id": parent,
        "site_id": site,
        "team_id": team,
        "kota": kota,
        "kecamatan": kecamatan,
        "kelurahan": kelurahan,
        "rw": rw,
        "rt": rt,
        "latitude": lat,
        "longitude": lon,
        "owner_kind": owner,
        "tags": _parse_tags(tag),
    }
    with _service(config) as service:
        data = DeviceCreate.model_validate({k: v for k, v in fields.items() if v is not None})
        _print_written(
            service.create_device(data, actor=_actor(), issue_credentials=not no_credentials)
        )


@devices_app.command("list")
def devices_list(
    q: str | None = None,
    family: str | None = None,
    state: str | None = None,
    team: str | None = None,
    kecamatan: str | None = None,
    kelurahan: str | None = None,
    online: bool | None = None,
    limit: int = 50,
    offset: int = 0,
    config: ConfigOption = None,
) -> None:
    """Search and filter devices."""
    with _service(config, broker=False) as service:
        query = DeviceQuery.model_validate(
            {
                k: v
                for k, v in {
                    "q": q,
                    "family": family,
                    "state": state,
                    "team_id": team,
                    "kecamatan": kecamatan,
                    "kelurahan": kelurahan,
                    "online": online,
                    "limit": limit,
                    "offset": offset,
                }.items()
                if v is not None
            }
        )
        page = service.list_devices(query)
        shown = f"{offset + 1}-{offset + len(page.items)}" if page.items else "0"
        console.print(_device_table(page.items, f"Devices {shown} of {page.total}"))


@devices_app.command("show")
def devices_show(device_id: str, config: ConfigOption = None) -> None:
    """One device, its status and its history."""
    with _service(config, broker=False) as service:
        device = service.get_device(device_id)
        console.print_json(device.model_dump_json())
        console.print_json(service.get_status(device_id).model_dump_json())
        audit, swaps = service.history(device_id)
        table = Table(title="History")
        for column in ("when", "who", "action"):
            table.add_column(column)
        for entry in audit:
            table.add_row(entry.at.isoformat(timespec="seconds"), entry.actor, entry.action)
        console.print(table)
        for swap in swaps:
            console.print(f"replaced {swap.old_unit} -> {swap.new_unit} ({swap.reason})")


@devices_app.command("update")
def devices_update(
    device_id: str,
    state: str | None = None,
    serial: str | None = None,
    firmware: str | None = None,
    gateway: str | None = None,
    site: str | None = None,
    team: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    config: ConfigOption = None,
) -> None:
    """Change some fields of a device."""
    fields = {
        "state": state,
        "serial": serial,
        "firmware_version": firmware,
        "gateway_id": gateway,
        "site_id": site,
        "team_id": team,
        "latitude": lat,
        "longitude": lon,
        "tags": _parse_tags(tag),
    }
    with _service(config) as service:
        data = DeviceUpdate.model_validate({k: v for k, v in fields.items() if v is not None})
        _print_written(service.update_device(device_id, data, actor=_actor()))


@devices_app.command("retire")
def devices_retire(device_id: str, reason: str = "", config: ConfigOption = None) -> None:
    """Retire a device and revoke its MQTT identity at once."""
    with _service(config) as service:
        device = service.retire_device(device_id, actor=_actor(), reason=reason)
        console.print(f"retired {device.id}")


@devices_app.command("rotate-credentials")
def devices_rotate(device_id: str, config: ConfigOption = None) -> None:
    """Issue a new MQTT secret; the old one stops working at once."""
    with _service(config) as service:
        _print_written(service.rotate_credentials(device_id, actor=_actor()))


@devices_app.command("import")
def devices_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    apply: Annotated[bool, typer.Option("--apply", help="Write (default: dry run).")] = False,
    all_or_nothing: bool = False,
    no_credentials: Annotated[
        bool, typer.Option(help="Create no MQTT identities now (they come on activation).")
    ] = False,
    secrets_out: Annotated[
        Path | None, typer.Option(help="Write new MQTT credentials here (mode 600).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Import devices from CSV or GeoJSON (by suffix); a dry run unless --apply."""
    file_format: ImportFormat = "geojson" if file.suffix.lower() in (".geojson", ".json") else "csv"
    with _service(config, broker=not no_credentials) as service:
        rows = parse_file(file.read_text(encoding="utf-8-sig"), file_format)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
        ) as bar:
            task = bar.add_task("dry run" if not apply else "importing", total=len(rows))
            report = import_devices(
                service,
                rows,
                actor=_actor(),
                dry_run=not apply,
                all_or_nothing=all_or_nothing,
                issue_credentials=not no_credentials,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            bar.update(task, completed=len(rows))
    table = Table(title=f"{file.name}: {'applied' if report.applied else 'not applied'}")
    for column in ("rows", "created", "updated", "unchanged", "errors"):
        table.add_column(column)
    table.add_row(
        *(
            str(v)
            for v in (
                report.rows,
                report.created,
                report.updated,
                report.unchanged,
                len(report.errors),
            )
        )
    )
    console.print(table)
    for error in report.errors[:50]:
        err_console.print(f"  line {error.line}: {error.field}: {error.message}", highlight=False)
    if len(report.errors) > 50:
        err_console.print(f"  ... and {len(report.errors) - 50} more")
    if report.credentials:
        target = secrets_out or file.with_suffix(".credentials.json")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump([c.model_dump() for c in report.credentials], handle, indent=1)
        console.print(f"{len(report.credentials)} MQTT credential(s) written to {target}")
    if report.errors:
        raise typer.Exit(1)


@devices_app.command("export")
def devices_export(
    output: Annotated[Path, typer.Argument(help="File to write (.csv or .geojson).")],
    family: str | None = None,
    state: str | None = None,
    config: ConfigOption = None,
) -> None:
    """Export devices as CSV or GeoJSON (by suffix)."""
    with _service(config, broker=False) as service:
        query = DeviceQuery.model_validate({"family": family, "state": state})
        geo = output.suffix.lower() in (".geojson", ".json")
        text = export_geojson(service, query) if geo else export_csv(service, query)
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")


@teams_app.command("add")
def teams_add(
    team_id: str,
    name: str,
    channel: Annotated[list[str] | None, typer.Option(help="KIND=ADDRESS, repeatable.")] = None,
    config: ConfigOption = None,
) -> None:
    """Register a team."""
    channels = [
        dict(zip(("kind", "address"), c.split("=", 1), strict=False)) for c in channel or []
    ]
    with _service(config, broker=False) as service:
        data = TeamCreate.model_validate(
            {"id": team_id, "name": name, "contact_channels": channels}
        )
        console.print_json(service.create_team(data, actor=_actor()).model_dump_json())


@teams_app.command("list")
def teams_list(config: ConfigOption = None) -> None:
    """Every team."""
    with _service(config, broker=False) as service:
        table = Table(title="Teams")
        for column in ("id", "name", "members", "channels"):
            table.add_column(column)
        for team in service.list_teams():
            table.add_row(
                team.id,
                team.name,
                str(len(team.members)),
                ", ".join(f"{c.kind}:{c.address}" for c in team.contact_channels),
            )
        console.print(table)


@sites_app.command("add")
def sites_add(
    site_id: str,
    name: str,
    lat: float | None = None,
    lon: float | None = None,
    kecamatan: str | None = None,
    kelurahan: str | None = None,
    config: ConfigOption = None,
) -> None:
    """Register a site."""
    with _service(config, broker=False) as service:
        data = SiteCreate.model_validate(
            {
                k: v
                for k, v in {
                    "id": site_id,
                    "name": name,
                    "latitude": lat,
                    "longitude": lon,
                    "kecamatan": kecamatan,
                    "kelurahan": kelurahan,
                }.items()
                if v is not None
            }
        )
        console.print_json(service.create_site(data, actor=_actor()).model_dump_json())


@sites_app.command("list")
def sites_list(config: ConfigOption = None) -> None:
    """Every site."""
    with _service(config, broker=False) as service:
        table = Table(title="Sites")
        for column in ("id", "name", "lat", "lon", "kecamatan", "kelurahan"):
            table.add_column(column)
        for site in service.list_sites():
            table.add_row(
                site.id,
                site.name,
                str(site.latitude),
                str(site.longitude),
                site.kecamatan or "-",
                site.kelurahan or "-",
            )
        console.print(table)


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, technician, viewer or provisioner")],
    config: ConfigOption = None,
) -> None:
    """Make an API token; its secret is printed once."""
    with _service(config, broker=False) as service:
        if role not in ("admin", "technician", "viewer", "provisioner"):
            raise typer.BadParameter(
                f"--role {role!r}: not one of admin, technician, viewer, provisioner"
            )
        created = create_token(service.database, name=name, role=role_name(role), actor=_actor())
        console.print(f"token {created.id} ({created.role}): {created.token}", highlight=False)


def role_name(value: str) -> Role:
    """Narrow a checked string to a Role."""
    return value  # type: ignore[return-value]


@token_app.command("list")
def token_list(config: ConfigOption = None) -> None:
    """Every token's metadata."""
    with _service(config, broker=False) as service:
        table = Table(title="API tokens")
        for column in ("id", "name", "role", "created", "revoked"):
            table.add_column(column)
        for t in list_tokens(service.database):
            table.add_row(
                t.id,
                t.name,
                t.role,
                t.created_at.isoformat(timespec="seconds"),
                t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "-",
            )
        console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str, config: ConfigOption = None) -> None:
    """Revoke a token at once."""
    with _service(config, broker=False) as service:
        revoke_token(service.database, token_id, actor=_actor())
        console.print(f"revoked {token_id}")


@registry_app.command("serve")
def registry_serve(config: ConfigOption = None) -> None:
    """Serve the REST API (OpenAPI at /docs) with uvicorn."""
    import uvicorn

    from device_registry.web_api import create_app

    if not _loader:
        raise RuntimeError("no runtime loader installed")
    runtime = _loader[0](config)
    with _service(config) as service:
        uvicorn.run(create_app(service), host=runtime.api_host, port=runtime.api_port)
