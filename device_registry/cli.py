"""``kotahub devices|teams|sites|registry`` commands: they work on the database directly.

The hub's CLI registers these Typer apps and installs a loader that turns ``--config``
into a ``RegistryRuntime`` (database URL, broker admin login); the registry never imports
the hub. Writes are audited as ``cli:<login>``.

The options of ``devices add|update|list|export`` are derived from the pydantic models
(``DeviceCreate``, ``DeviceUpdate``, ``DeviceQuery``), so a field added to a model is a
CLI option at once, and pydantic validates every value: the CLI has no second copy of
the rules. Exit codes: 2 for invalid input (the option or field is named), 1 when the
registry refuses (unknown id, conflict, broker or database trouble, rejected rows).
"""

from __future__ import annotations

import datetime as dt
import getpass
import inspect
import json
import os
import time
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from device_registry.errors import CredentialsError, FieldError, RegistryError
from device_registry.schemas import (
    ROLES,
    ContactChannel,
    DeviceCreate,
    DevicePublic,
    DeviceQuery,
    DeviceReplace,
    DeviceTypeCreate,
    DeviceTypePublic,
    DeviceTypeUpdate,
    DeviceUpdate,
    DeviceWritten,
    Role,
    SiteCreate,
    SitePublic,
    SiteUpdate,
    TeamCreate,
    TeamMember,
    TeamPublic,
    TeamUpdate,
)

if TYPE_CHECKING:
    # SQLAlchemy and Alembic are imported when a registry command runs, not when the
    # `kotahub` command starts (every other subcommand would pay ~0.4 s for them).
    from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient
    from device_registry.registry_service import RegistryService
    from device_registry.technician_page import TileSettings

F = TypeVar("F", bound=Callable[..., Any])
ImportFormat = Literal["csv", "geojson"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryRuntime:
    """What the registry commands need from the settings."""

    database_url: str
    broker: BrokerAdmin | None
    dynsec_batch: int = 50
    api_host: str = "127.0.0.1"
    api_port: int = 18090
    # The technician page's map ([registry] map_tile_url); None: the environment, or none.
    tiles: TileSettings | None = None
    # The API's request limits ([registry] max_body_bytes, ...), as create_app's defaults.
    max_body_bytes: int = 1048576
    max_import_bytes: int = 10485760
    max_import_rows: int = 20000


class RuntimeLoader(Protocol):
    """Turns ``--config`` into a RegistryRuntime; read-only commands need no broker login."""

    def __call__(self, config: Path | None, *, with_broker: bool = True) -> RegistryRuntime:
        """Load the settings (exit 2 with the reason when they are invalid)."""
        ...


_loader: list[RuntimeLoader] = []

devices_app = typer.Typer(help="Register, find, change and retire devices.", no_args_is_help=True)
teams_app = typer.Typer(
    help="Field teams, their members and contact channels.", no_args_is_help=True
)
sites_app = typer.Typer(help="Sites.", no_args_is_help=True)
registry_app = typer.Typer(
    help="The registry service, device types and API tokens.", no_args_is_help=True
)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
types_app = typer.Typer(help="Device types (family, protocol, interval, metrics).")
registry_app.add_typer(token_app, name="token")
registry_app.add_typer(types_app, name="types", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Settings file.", envvar="KOTAHUB_CONFIG", show_envvar=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
STATE_COLOURS = {"active": "green", "maintenance": "yellow", "planned": "cyan", "retired": "dim"}


def out() -> Console:
    """Standard output (made per command, so that COLUMNS and redirection are honoured)."""
    return Console(highlight=False, soft_wrap=True)


def err() -> Console:
    """Standard error, for errors and the progress bar."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def set_runtime_loader(loader: RuntimeLoader) -> None:
    """Install how ``--config`` becomes a RegistryRuntime (done by the hub's CLI)."""
    _loader[:] = [loader]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:
        return f"cli:uid{os.getuid()}"


# -- options derived from the pydantic models --------------------------------------------
# Short spellings kept from the first CLI (and easier to type in the field).
OPTION_ALIASES: dict[str, str] = {
    "device_type": "--type",
    "gateway_id": "--gateway",
    "parent_id": "--parent",
    "site_id": "--site",
    "team_id": "--team",
    "latitude": "--lat",
    "longitude": "--lon",
    "firmware_version": "--firmware",
    "owner_kind": "--owner",
    "expected_interval_s": "--interval",
}
BOOL_FLAGS: dict[str, str] = {
    "online": "--online/--offline",
    "is_gateway": "--gateway/--no-gateway",
}
# Fields with an option of their own shape (KEY=VALUE, JSON) or given as an argument.
SPECIAL_FIELDS = frozenset({"id", "tags", "driver_config", "metrics"})
# Field -> the option that sets it, for error messages ("--lat (latitude): ...").
_FIELD_OPTIONS: dict[str, str] = {}


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, ...] | None`` -> ``X`` and the constraints found on the way."""
    metadata: list[Any] = []
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else str
    if typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            metadata += getattr(item, "metadata", [item])
    return annotation, metadata


# Help for fields whose type alone says little.
FIELD_HELP: dict[str, str] = {
    "q": "substring of id, serial, vendor or model",
    "gateway_id": "id of the gateway or agent it reports through",
    "parent_id": "id of its parent device (camera -> NVR, AP -> switch)",
    "site_id": "id of a registered site",
    "team_id": "id of the owning team",
    "device_type": "name of a device type (`kotahub registry types list`)",
    "rw": "RW number (1-3 digits); needs --kelurahan",
    "rt": "RT number (1-3 digits); needs --rw",
    "kecamatan": "needs --kota",
    "kelurahan": "needs --kecamatan",
    "family": "e.g. cctv, flood, gateway",
    "protocol": "e.g. mqtt, onvif, modbus",
    "is_gateway": "a gateway or agent: gets an MQTT identity, devices report through it",
    "expected_interval_s": "seconds between two reports",
}


def _describe(name: str, info: FieldInfo) -> tuple[Any, str]:
    """The Python type of a field's option and a short help text."""
    bare, metadata = _unwrap(info.annotation)
    metadata += info.metadata
    extra = FIELD_HELP.get(name, "")
    if typing.get_origin(bare) is Literal:
        return str, "one of: " + ", ".join(str(a) for a in typing.get_args(bare))
    if bare in (float, int):
        limits = {k: getattr(m, k) for m in metadata for k in ("ge", "gt", "le") if hasattr(m, k)}
        low = f"{limits['ge']}" if "ge" in limits else f">{limits['gt']}" if "gt" in limits else ""
        text = "number" if bare is float else "integer"
        text = f"{extra}: {text}" if extra else text
        if low or "le" in limits:
            text += f" {low}..{limits.get('le', '')}"
        return bare, text
    if bare is bool:
        return bool, extra
    if bare is dt.date:
        return str, "date YYYY-MM-DD"
    return str, extra


def model_options(
    model: type[BaseModel],
    *,
    skip: frozenset[str] = frozenset(),
    notes: dict[str, str] | None = None,
) -> Callable[[F], F]:
    """Add one ``--option`` per field of ``model`` to a command taking ``**fields``.

    Every option defaults to None (not given); the command passes the given ones to the
    model, which validates them. ``device_type`` becomes ``--type`` and so on
    (OPTION_ALIASES) next to its long name ``--device-type``. ``notes`` adds a command's
    own words to a field's help (a default that the command, not the model, sets).
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        explicit = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        # Arguments first, then the model's options (most used first), then the rest.
        params = [p for p in explicit if p.default is p.empty]
        taken = {p.name for p in explicit}
        first = ("device_type", "state")
        names = sorted(model.model_fields, key=lambda n: first.index(n) if n in first else 9)
        for name in names:
            info = model.model_fields[name]
            if name in SPECIAL_FIELDS or name in skip or name in taken:
                continue
            python_type, text = _describe(name, info)
            if notes and name in notes:
                text = f"{text}; {notes[name]}" if text else notes[name]
            if python_type is bool:
                declarations: tuple[str, ...] = (BOOL_FLAGS.get(name, f"--{name}/--no-{name}"),)
                _FIELD_OPTIONS[name] = declarations[0].split("/")[0]
            else:
                long_name = "--" + name.replace("_", "-")
                alias = OPTION_ALIASES.get(name)
                declarations = (alias, long_name) if alias else (long_name,)
                _FIELD_OPTIONS[name] = declarations[0]
            option = typer.Option(*declarations, help=text, show_default=False)
            params.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[python_type | None, option],
                )
            )
        params += [p.replace(kind=p.KEYWORD_ONLY) for p in explicit if p.default is not p.empty]
        setattr(func, "__signature__", signature.replace(parameters=params))  # noqa: B010
        return func

    return decorate


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


# -- errors ----------------------------------------------------------------------------------
def _where(loc: tuple[int | str, ...]) -> str:
    path = ".".join(str(part) for part in loc)
    if not path:
        return "(input)"
    head = str(loc[0])
    if head == "body":  # the service's name for "the device as a whole"
        return "(device)"
    option = _FIELD_OPTIONS.get(head)
    return f"{option} ({path})" if option else path


def invalid(field: str, message: str) -> typer.Exit:
    """Print 'invalid FIELD: reason' and return the exit (status 2) to raise."""
    err().print(f"[red]invalid[/red] {escape(_where((field,)))}: {escape(message)}")
    return typer.Exit(2)


def database_error_line(error: Exception, database_url: str, waited_s: float) -> str:
    """One line for a failed registry operation: the driver's message, never the SQL.

    SQLAlchemy's own text adds the statement and its parameters (a device's whole row)
    on lines of their own; an operator needs the cause and what to do.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError, OperationalError

    orig = error.orig if isinstance(error, DBAPIError) else None
    message = str(orig) if orig is not None else str(error).split("\n", 1)[0]
    if isinstance(error, OperationalError) and "database is locked" in message:
        path = make_url(database_url).database or database_url
        return (
            f"the registry database {path} is locked by another process"
            f" (waited {waited_s:.0f} s): try again when it is free"
        )
    return " ".join(message.split()) or type(error).__name__


@contextmanager
def _service(config: Path | None, *, broker: bool = True) -> Iterator[RegistryService]:
    from device_registry.database import open_database
    from device_registry.mqtt_identities import DynamicSecurityClient, DynsecIdentities
    from device_registry.registry_service import RegistryService

    if not _loader:
        raise RuntimeError("no runtime loader installed (use the `kotahub` command)")
    runtime = _loader[0](config, with_broker=broker)
    dynsec: DynamicSecurityClient | None = None
    database = None
    console = err()
    started = time.monotonic()
    try:
        database = open_database(runtime.database_url)
        if broker and runtime.broker is not None:
            dynsec = DynamicSecurityClient(runtime.broker, batch_size=runtime.dynsec_batch)
        yield RegistryService(database, DynsecIdentities(dynsec) if dynsec else None)
    except ValidationError as error:
        for item in error.errors():
            where = escape(_where(item["loc"]))
            console.print(f"[red]invalid[/red] {where}: {escape(item['msg'])}")
        raise typer.Exit(2) from error
    except FieldError as error:
        raise invalid(error.field, error.message) from error
    except RegistryError as error:
        console.print(f"[red]error[/red]: {escape(str(error))}")
        raise typer.Exit(1) from error
    except Exception as error:
        from sqlalchemy.exc import SQLAlchemyError

        from device_registry.bulk_import import ImportFileError

        if isinstance(error, ImportFileError):
            console.print(f"[red]invalid file[/red]: {escape(str(error))}")
            raise typer.Exit(2) from error
        if isinstance(error, SQLAlchemyError):
            waited_s = time.monotonic() - started
            line = database_error_line(error, runtime.database_url, waited_s)
            console.print(f"[red]database error[/red]: {escape(line)}")
            raise typer.Exit(1) from error
        raise
    finally:
        if dynsec is not None:
            dynsec.close()
        if database is not None:
            database.close()


# -- rendering ---------------------------------------------------------------------------------
def _text(value: Any) -> str:
    if value is None or value in ({}, [], ""):
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, dt.datetime):
        # SQLite hands back naive datetimes; the registry writes UTC.
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return f"{value:%Y-%m-%d %H:%M:%S} UTC"
    return str(value)


def _card(title: str, values: dict[str, Any]) -> Table:
    """A two-column table of the fields that have a value."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in values.items():
        if value is not None and value not in ({}, [], ""):
            _add(table, key, value)
    return table


def _state(state: str) -> Text:
    return Text(state, style=STATE_COLOURS.get(state, "white"))


def _add(table: Table, *values: Any) -> None:
    """Add a row; stored text is shown as is (never read as rich markup)."""
    table.add_row(*(v if isinstance(v, Text) else Text(_text(v)) for v in values))


def _device_table(devices: list[DevicePublic], title: str) -> Table:
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for column in ("type", "state", "kecamatan", "kelurahan", "RW/RT", "team", "gateway"):
        table.add_column(column)
    table.add_column("serial", overflow="fold")
    for d in devices:
        _add(
            table,
            d.id,
            d.device_type,
            _state(d.state),
            d.kecamatan or "-",
            d.kelurahan or "-",
            f"{d.rw or '-'}/{d.rt or '-'}",
            d.team_id or "-",
            d.gateway_id or "-",
            d.serial or "-",
        )
    return table


def _device_card(device: DevicePublic) -> Table:
    values = device.model_dump(exclude={"id"})
    values["state"] = _state(device.state)
    return _card(f"Device {device.id}", values)


def _print_written(written: DeviceWritten, *, as_json: bool = False) -> None:
    console = out()
    if as_json:
        console.print_json(written.model_dump_json())
        return
    console.print(_device_card(written.device))
    if written.credentials:
        console.print(
            "[bold yellow]MQTT credentials (shown once, store them on the device now):[/]\n"
            f"  username/client id: {written.credentials.username}\n"
            f"  password:           {written.credentials.password}\n"
            f"  publish under:      {written.credentials.publish_prefix}",
            soft_wrap=True,
        )
        # Said every time: the registry keeps only a hash, so this is the only chance.
        console.print(
            "This password will not be shown again (the registry keeps only its hash). "
            "Lost it? `kotahub devices rotate-credentials "
            f"{written.device.id}` issues a new one and the old one stops working.",
            markup=False,
            soft_wrap=True,
        )


def _key_values(items: list[str] | None, option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=option)
        result[key.strip()] = value.strip()
    return result


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise typer.BadParameter(f"not valid JSON: {error}", param_hint=option) from error
    if not isinstance(value, dict):
        raise typer.BadParameter("expected a JSON object {...}", param_hint=option)
    return value


def _cleared(
    fields: list[str] | None, model: type[BaseModel], created: type[BaseModel]
) -> dict[str, Any]:
    """``--clear`` values: None, or "" for a text field that is never null (an address)."""
    values: dict[str, Any] = {}
    for item in fields or []:
        name = _field_of_option(item, model)
        info = created.model_fields.get(name)
        values[name] = "" if info is not None and info.default == "" else None
    return values


def _field_of_option(text: str, model: type[BaseModel]) -> str:
    """``--lat``, ``lat``, ``latitude`` or ``--site-id`` -> the model field name."""
    bare = text.lstrip("-").replace("-", "_")
    by_alias = {alias.lstrip("-"): field for field, alias in OPTION_ALIASES.items()}
    field = by_alias.get(bare, bare)
    if field not in model.model_fields:
        known = ", ".join(sorted(model.model_fields))
        raise typer.BadParameter(f"{text!r} is not a field; fields: {known}", param_hint="--clear")
    return field


# -- devices -------------------------------------------------------------------------------------
TagOption = Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable.")]
DriverConfigOption = Annotated[
    str | None, typer.Option("--driver-config", help='JSON object, e.g. {"unit_id": 3}.')
]


# What a technician registering a device in the field expects: it is installed, so its
# MQTT identity and secret exist at once. The technician page defaults to the same state.
ADD_DEFAULT_STATE = "active"


def _no_secret_note(device: DevicePublic, device_type: DeviceTypePublic, *, asked: bool) -> str:
    """Why `devices add` printed no MQTT secret, and how the secret is got later."""
    from device_registry.registry_service import speaks_mqtt_itself

    activate = f"`kotahub devices update {device.id} --state active`"
    if not device_type.is_gateway and not speaks_mqtt_itself(device_type.protocol):
        return (
            f"No MQTT identity: type {device_type.name} speaks {device_type.protocol}, "
            "not MQTT (an agent polls it)."
        )
    if not device_type.is_gateway and device.gateway_id:
        return f"No MQTT identity of its own: it reports through gateway {device.gateway_id}."
    if device.state == "planned":
        return (
            "No MQTT secret yet: a planned device gets its identity when it goes live; "
            f"{activate} creates it and prints its secret once."
        )
    if not asked:
        # An update that changes nothing writes nothing, so the way back goes via planned.
        return (
            "No MQTT identity made (--no-credentials). To make one later: "
            f"`kotahub devices update {device.id} --state planned`, then {activate}, "
            "which prints its secret once."
        )
    return ""


@devices_app.command("add")
@model_options(
    DeviceCreate,
    notes={
        "state": (
            f"default: {ADD_DEFAULT_STATE}, or planned with --no-credentials (an active MQTT "
            "device or gateway gets its identity and its secret, printed once, at once; a "
            "planned one on activation)"
        )
    },
)
def devices_add(
    device_id: Annotated[str, typer.Argument(help="Device id (also its MQTT username).")],
    tag: TagOption = None,
    driver_config: DriverConfigOption = None,
    no_credentials: Annotated[
        bool, typer.Option("--no-credentials", help="Create no MQTT identity now.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    **fields: Any,
) -> None:
    """Register a device (state active unless --state); a live MQTT device or gateway gets
    its MQTT secret now, printed once."""
    # --no-credentials means "not live yet" unless a state is given: then the advice of
    # _no_secret_note (activate it) is one command.
    default_state = "planned" if no_credentials else ADD_DEFAULT_STATE
    values = {"state": default_state} | _given(fields) | {"id": device_id}
    if tag:
        values["tags"] = _key_values(tag, "--tag")
    config_object = _json_object(driver_config, "--driver-config")
    if config_object is not None:
        values["driver_config"] = config_object
    # A new device has no identity to revoke: without credentials the broker is not needed.
    with _service(config, broker=not no_credentials) as service:
        data = DeviceCreate.model_validate(values)
        try:
            written = service.create_device(
                data, actor=_actor(), issue_credentials=not no_credentials
            )
        except CredentialsError as error:
            # The row and its identity are one transaction: nothing was half-created.
            raise CredentialsError(
                f"{error}: device {device_id} was not created (start the broker, or add it"
                " with --no-credentials and activate it later)"
            ) from error
        _print_written(written, as_json=as_json)
        if not as_json and written.credentials is None:
            note = _no_secret_note(
                written.device, service.get_type(data.device_type), asked=not no_credentials
            )
            if note:
                out().print(note, markup=False, soft_wrap=True)


@devices_app.command("list")
@model_options(DeviceQuery)
def devices_list(as_json: JsonOption = False, config: ConfigOption = None, **fields: Any) -> None:
    """Search (--q: id, serial, vendor, model) and filter devices, a page at a time."""
    with _service(config, broker=False) as service:
        query = DeviceQuery.model_validate(_given(fields))
        page = service.list_devices(query)
        if as_json:
            out().print_json(page.model_dump_json())
            return
        shown = f"{query.offset + 1}-{query.offset + len(page.items)}" if page.items else "0"
        out().print(_device_table(page.items, f"Devices {shown} of {page.total}"))


@devices_app.command("show")
def devices_show(device_id: str, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """One device, its status and last readings, and its history."""
    with _service(config, broker=False) as service:
        device = service.get_device(device_id)
        status = service.get_status(device_id)
        audit, swaps = service.history(device_id)
    console = out()
    if as_json:
        console.print_json(
            json.dumps(
                {
                    "device": device.model_dump(mode="json"),
                    "status": status.model_dump(mode="json"),
                    "history": [a.model_dump(mode="json") for a in audit],
                    "replacements": [s.model_dump(mode="json") for s in swaps],
                }
            )
        )
        return
    console.print(_device_card(device))
    online = {
        True: Text("online", style="green"),
        False: Text("offline", style="red"),
        None: Text("unknown"),
    }
    console.print(
        _card(
            "Status",
            {
                "online": online[status.online],
                "reason": status.reason,
                "last seen": status.last_seen,
                "expected interval (s)": status.expected_interval_s,
                **{f"reading {k}": v for k, v in status.last_readings.items()},
            },
        )
    )
    table = Table(title="History", title_justify="left")
    for column in ("when", "who", "action"):
        table.add_column(column)
    for entry in audit:
        _add(table, entry.at, entry.actor, entry.action)
    console.print(table)
    for swap in swaps:
        old, new = swap.old_unit.get("serial"), swap.new_unit.get("serial")
        console.print(
            f"unit replaced {swap.at:%Y-%m-%d}: serial {old} -> {new} ({swap.reason})",
            markup=False,
        )


@devices_app.command("update")
@model_options(DeviceUpdate)
def devices_update(
    device_id: str,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Set a tag KEY=VALUE, repeatable.")
    ] = None,
    remove_tag: Annotated[
        list[str] | None, typer.Option("--remove-tag", help="Remove a tag KEY, repeatable.")
    ] = None,
    driver_config: DriverConfigOption = None,
    clear: Annotated[
        list[str] | None,
        typer.Option("--clear", help="Empty an optional field (e.g. --clear site), repeatable."),
    ] = None,
    no_credentials: Annotated[
        bool, typer.Option("--no-credentials", help="Create no MQTT identity on activation.")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    **fields: Any,
) -> None:
    """Change any field of a device; only the options given change (state: planned,
    active or maintenance; use `retire` to retire)."""
    values = _given(fields)
    cleared = _cleared(clear, DeviceUpdate, DeviceCreate)
    if set(cleared) & set(values):
        both = ", ".join(sorted(set(cleared) & set(values)))
        raise typer.BadParameter(f"{both}: both set and cleared", param_hint="--clear")
    values |= cleared
    config_object = _json_object(driver_config, "--driver-config")
    if config_object is not None:
        values["driver_config"] = config_object
    if not values and not tag and not remove_tag:
        raise typer.BadParameter("nothing to change: give at least one field option")
    set_tags = _key_values(tag, "--tag")

    def edit(current: DevicePublic) -> DeviceUpdate:
        if not tag and not remove_tag:
            return DeviceUpdate.model_validate(values)
        # Tags are one field: the changes are merged into the tags as stored, inside the
        # update's transaction, so a concurrent tag edit is not lost.
        tags = {**current.tags, **set_tags}
        for key in remove_tag or []:
            tags.pop(key, None)
        return DeviceUpdate.model_validate({**values, "tags": tags})

    with _service(config) as service:
        DeviceUpdate.model_validate(values)  # bad options are refused before any write
        written = service.edit_device(
            device_id, edit, actor=_actor(), issue_credentials=not no_credentials
        )
        _print_written(written, as_json=as_json)


@devices_app.command("replace")
@model_options(DeviceReplace)
def devices_replace(
    device_id: str, as_json: JsonOption = False, config: ConfigOption = None, **fields: Any
) -> None:
    """Swap a failed unit (--serial required): same id and history, new MQTT secret."""
    with _service(config) as service:
        data = DeviceReplace.model_validate(_given(fields))
        _print_written(service.replace_device(device_id, data, actor=_actor()), as_json=as_json)


@devices_app.command("retire")
def devices_retire(device_id: str, reason: str = "", config: ConfigOption = None) -> None:
    """Retire a device and revoke its MQTT identity at once."""
    with _service(config) as service:
        device = service.retire_device(device_id, actor=_actor(), reason=reason)
    out().print(f"retired {device.id}; its MQTT identity (if any) is revoked")


@devices_app.command("rotate-credentials")
def devices_rotate(
    device_id: str, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Issue a new MQTT secret; the old one stops working at once."""
    with _service(config) as service:
        _print_written(service.rotate_credentials(device_id, actor=_actor()), as_json=as_json)


def _file_format(path: Path, given: str | None) -> ImportFormat:
    if given is not None:
        if given not in ("csv", "geojson"):
            raise typer.BadParameter(f"{given!r}: csv or geojson", param_hint="--format")
        return "geojson" if given == "geojson" else "csv"
    return "geojson" if path.suffix.lower() in (".geojson", ".json") else "csv"


FormatOption = Annotated[
    str | None, typer.Option("--format", help="csv or geojson (default: by the file's suffix).")
]


@devices_app.command("import")
def devices_import(
    file: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False, readable=True)] = None,
    template: Annotated[
        Path | None,
        typer.Option(
            "--template",
            help="Write an example CSV (every column, a commented example row) here and stop.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run/--apply", help="Check every row and write nothing (the default), or write."
        ),
    ] = True,
    all_or_nothing: Annotated[
        bool, typer.Option("--all-or-nothing", help="Any bad row and nothing is written.")
    ] = False,
    no_credentials: Annotated[
        bool,
        typer.Option("--no-credentials", help="Create no MQTT identities now (on activation)."),
    ] = False,
    secrets_out: Annotated[
        Path | None, typer.Option(help="Write new MQTT credentials here (mode 600).")
    ] = None,
    file_format: FormatOption = None,
    config: ConfigOption = None,
) -> None:
    """Import devices from CSV or GeoJSON, upserting by id; a dry run unless --apply."""
    from device_registry.bulk_import import csv_template, import_devices, parse_file

    if template is not None:
        template.write_text(csv_template(), encoding="utf-8")
        err().print(f"wrote {template}: fill it in, then: kotahub devices import {template}")
        return
    if file is None:
        raise typer.BadParameter("give the FILE to import (or --template FILE)", param_hint="FILE")
    kind = _file_format(file, file_format)
    console = out()
    # A dry run never reaches the broker, so it needs no broker login either.
    with _service(config, broker=not (no_credentials or dry_run)) as service:
        rows = parse_file(file.read_text(encoding="utf-8-sig"), kind)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err(),
        ) as bar:
            task = bar.add_task("checking (dry run)" if dry_run else "importing", total=len(rows))
            report = import_devices(
                service,
                rows,
                actor=_actor(),
                dry_run=dry_run,
                all_or_nothing=all_or_nothing,
                issue_credentials=not no_credentials,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
            bar.update(task, completed=len(rows))
    verdict = "applied" if report.applied else "dry run, nothing written"
    if not dry_run and not report.applied:
        verdict = "NOT applied (--all-or-nothing and errors), nothing written"
    table = Table(title=f"{file.name}: {verdict}", title_justify="left")
    for column in ("rows", "created", "updated", "unchanged", "errors"):
        table.add_column(column, justify="right")
    counts = (report.rows, report.created, report.updated, report.unchanged, len(report.errors))
    _add(table, *(str(v) for v in counts))
    console.print(table)
    if report.errors:
        errors = Table(title="Rejected rows", title_justify="left")
        for column in ("line", "field", "reason"):
            errors.add_column(column)
        for error in report.errors[:50]:
            _add(errors, str(error.line), error.field, error.message)
        console.print(errors)
        if len(report.errors) > 50:
            console.print(f"... and {len(report.errors) - 50} more rejected rows")
    if report.credentials:
        target = secrets_out or file.with_suffix(".credentials.json")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump([c.model_dump() for c in report.credentials], handle, indent=1)
        console.print(f"{len(report.credentials)} MQTT credential(s) written to {target}")
    if dry_run and not report.errors:
        console.print("dry run: all rows are valid; run again with --apply to write them")
    if report.errors:
        raise typer.Exit(1)


@devices_app.command("export")
@model_options(DeviceQuery, skip=frozenset({"limit", "offset"}))
def devices_export(
    output: Annotated[Path, typer.Argument(help="File to write (.csv or .geojson), - for stdout.")],
    file_format: FormatOption = None,
    config: ConfigOption = None,
    **fields: Any,
) -> None:
    """Export devices (all, or those matching the filters) as CSV or GeoJSON."""
    from device_registry.bulk_import import export_csv, export_geojson

    kind = _file_format(output, file_format)
    with _service(config, broker=False) as service:
        query = DeviceQuery.model_validate(_given(fields))
        text = export_geojson(service, query) if kind == "geojson" else export_csv(service, query)
    if str(output) == "-":
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    err().print(f"wrote {output}")


# -- teams ---------------------------------------------------------------------------------------
def _channel(text: str) -> ContactChannel:
    kind, sep, address = text.partition("=")
    if not sep:
        raise typer.BadParameter(f"{text!r}: expected KIND=ADDRESS", param_hint="--channel")
    try:
        return ContactChannel.model_validate({"kind": kind.strip(), "address": address.strip()})
    except ValidationError as error:
        first = error.errors()[0]
        raise typer.BadParameter(
            f"{text!r}: {first['loc'][0]}: {first['msg']}", param_hint="--channel"
        ) from error


def _team_card(team: TeamPublic, devices: int) -> list[Table]:
    card = _card(f"Team {team.id}", {"name": team.name, "devices": devices})
    members = Table(title="Members", title_justify="left")
    for column in ("name", "role", "phone", "email"):
        members.add_column(column)
    for m in team.members:
        _add(members, m.name, m.role or "-", m.phone or "-", m.email or "-")
    channels = Table(title="Contact channels", title_justify="left")
    for column in ("kind", "address"):
        channels.add_column(column)
    for c in team.contact_channels:
        _add(channels, c.kind, c.address)
    return [card, members, channels]


ChannelOption = Annotated[
    list[str] | None,
    typer.Option("--channel", help="KIND=ADDRESS (telegram, whatsapp, sms, ...), repeatable."),
]


@teams_app.command("add")
def teams_add(
    team_id: str,
    name: str,
    channel: ChannelOption = None,
    config: ConfigOption = None,
) -> None:
    """Register a team (members: `teams add-member`)."""
    channels = [_channel(c).model_dump() for c in channel or []]
    with _service(config, broker=False) as service:
        data = TeamCreate.model_validate(
            {"id": team_id, "name": name, "contact_channels": channels}
        )
        team = service.create_team(data, actor=_actor())
    out().print(_team_card(team, 0)[0])


@teams_app.command("list")
def teams_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Every team."""
    with _service(config, broker=False) as service:
        teams = service.list_teams()
    if as_json:
        out().print_json(json.dumps([t.model_dump(mode="json") for t in teams]))
        return
    table = Table(title="Teams")
    for column in ("id", "name", "members", "channels"):
        table.add_column(column)
    for team in teams:
        _add(
            table,
            team.id,
            team.name,
            ", ".join(m.name for m in team.members) or "-",
            ", ".join(f"{c.kind}:{c.address}" for c in team.contact_channels) or "-",
        )
    out().print(table)


@teams_app.command("show")
def teams_show(team_id: str, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """One team: members, contact channels and how many devices it owns."""
    with _service(config, broker=False) as service:
        team = service.get_team(team_id)
        devices = service.list_devices(DeviceQuery(team_id=team_id, limit=1)).total
    if as_json:
        out().print_json(json.dumps({**team.model_dump(mode="json"), "devices": devices}))
        return
    for table in _team_card(team, devices):
        out().print(table)


@teams_app.command("update")
def teams_update(
    team_id: str,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    config: ConfigOption = None,
) -> None:
    """Rename a team."""
    if name is None:
        raise typer.BadParameter("nothing to change: give --name")
    with _service(config, broker=False) as service:
        team = service.update_team(team_id, TeamUpdate(name=name), actor=_actor())
    out().print(f"team {team.id} is now {team.name!r}", markup=False)


def _edit_team(config: Path | None, team_id: str, edit: Callable[[TeamPublic], TeamUpdate]) -> None:
    with _service(config, broker=False) as service:
        team = service.edit_team(team_id, edit, actor=_actor())
        devices = service.list_devices(DeviceQuery(team_id=team_id, limit=1)).total
    for table in _team_card(team, devices):
        out().print(table)


@teams_app.command("add-member")
def teams_add_member(
    team_id: str,
    name: Annotated[str, typer.Argument(help="The member's name (unique in the team).")],
    role: Annotated[str, typer.Option(help="E.g. technician, supervisor.")] = "",
    phone: Annotated[str | None, typer.Option(help="+62 ...")] = None,
    email: str | None = None,
    config: ConfigOption = None,
) -> None:
    """Add a member to a team."""

    def edit(team: TeamPublic) -> TeamUpdate:
        if any(m.name == name.strip() for m in team.members):
            raise FieldError("members", f"team {team.id!r} already has a member {name!r}")
        member = TeamMember.model_validate(
            _given({"name": name, "role": role, "phone": phone, "email": email})
        )
        return TeamUpdate(members=[*team.members, member])

    _edit_team(config, team_id, edit)


@teams_app.command("remove-member")
def teams_remove_member(team_id: str, name: str, config: ConfigOption = None) -> None:
    """Remove a member (by name) from a team."""

    def edit(team: TeamPublic) -> TeamUpdate:
        kept = [m for m in team.members if m.name != name]
        if len(kept) == len(team.members):
            known = ", ".join(m.name for m in team.members) or "none"
            raise FieldError("members", f"team {team.id!r} has no member {name!r} ({known})")
        return TeamUpdate(members=kept)

    _edit_team(config, team_id, edit)


@teams_app.command("add-channel")
def teams_add_channel(
    team_id: str,
    channel: Annotated[str, typer.Argument(help="KIND=ADDRESS, e.g. telegram=@dpu_drainase")],
    config: ConfigOption = None,
) -> None:
    """Add a contact channel (where the team is paged)."""
    new = _channel(channel)

    def edit(team: TeamPublic) -> TeamUpdate:
        if new in team.contact_channels:
            raise FieldError("contact_channels", f"team {team.id!r} already has {channel!r}")
        return TeamUpdate(contact_channels=[*team.contact_channels, new])

    _edit_team(config, team_id, edit)


@teams_app.command("remove-channel")
def teams_remove_channel(
    team_id: str,
    channel: Annotated[str, typer.Argument(help="KIND=ADDRESS as listed by `teams show`.")],
    config: ConfigOption = None,
) -> None:
    """Remove a contact channel."""
    gone = _channel(channel)

    def edit(team: TeamPublic) -> TeamUpdate:
        kept = [c for c in team.contact_channels if c != gone]
        if len(kept) == len(team.contact_channels):
            raise FieldError("contact_channels", f"team {team.id!r} has no channel {channel!r}")
        return TeamUpdate(contact_channels=kept)

    _edit_team(config, team_id, edit)


# -- sites ---------------------------------------------------------------------------------------
def _site_card(site: SitePublic, devices: int) -> Table:
    return _card(f"Site {site.id}", {**site.model_dump(exclude={"id"}), "devices": devices})


@sites_app.command("add")
@model_options(SiteCreate)
def sites_add(site_id: str, name: str, config: ConfigOption = None, **fields: Any) -> None:
    """Register a site."""
    with _service(config, broker=False) as service:
        data = SiteCreate.model_validate({**_given(fields), "id": site_id, "name": name})
        out().print(_site_card(service.create_site(data, actor=_actor()), 0))


@sites_app.command("list")
def sites_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Every site."""
    with _service(config, broker=False) as service:
        sites = service.list_sites()
    if as_json:
        out().print_json(json.dumps([s.model_dump(mode="json") for s in sites]))
        return
    table = Table(title="Sites")
    for column in ("id", "name", "lat", "lon", "kecamatan", "kelurahan", "address"):
        table.add_column(column)
    for site in sites:
        _add(
            table,
            site.id,
            site.name,
            _text(site.latitude),
            _text(site.longitude),
            site.kecamatan or "-",
            site.kelurahan or "-",
            site.address or "-",
        )
    out().print(table)


@sites_app.command("show")
def sites_show(site_id: str, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """One site and how many devices it holds."""
    with _service(config, broker=False) as service:
        site = service.get_site(site_id)
        devices = service.list_devices(DeviceQuery(site_id=site_id, limit=1)).total
    if as_json:
        out().print_json(json.dumps({**site.model_dump(mode="json"), "devices": devices}))
        return
    out().print(_site_card(site, devices))


@sites_app.command("update")
@model_options(SiteUpdate)
def sites_update(
    site_id: str,
    clear: Annotated[
        list[str] | None, typer.Option("--clear", help="Empty an optional field, repeatable.")
    ] = None,
    config: ConfigOption = None,
    **fields: Any,
) -> None:
    """Change a site; only the options given change."""
    values = _given(fields) | _cleared(clear, SiteUpdate, SiteCreate)
    if not values:
        raise typer.BadParameter("nothing to change: give at least one field option")
    with _service(config, broker=False) as service:
        site = service.update_site(site_id, SiteUpdate.model_validate(values), actor=_actor())
        devices = service.list_devices(DeviceQuery(site_id=site_id, limit=1)).total
    out().print(_site_card(site, devices))


# -- device types --------------------------------------------------------------------------------
def _metrics(items: list[str] | None) -> list[dict[str, str]] | None:
    if not items:
        return None
    metrics = []
    for item in items:
        parts = item.split(":")
        if len(parts) > 3:
            raise typer.BadParameter(
                f"{item!r}: expected NAME[:UNIT[:KIND]]", param_hint="--metric"
            )
        metrics.append(dict(zip(("name", "unit", "kind"), parts, strict=False)))
    return metrics


MetricOption = Annotated[
    list[str] | None,
    typer.Option(
        "--metric",
        help="NAME[:UNIT[:KIND]] (kind: number, integer, boolean, string), repeatable.",
    ),
]


def _type_card(device_type: DeviceTypePublic) -> list[Table]:
    values = device_type.model_dump(exclude={"name", "metrics"})
    metrics = Table(title="Metrics", title_justify="left")
    for column in ("name", "unit", "kind"):
        metrics.add_column(column)
    for m in device_type.metrics:
        _add(metrics, m.name, m.unit or "-", m.kind)
    return [_card(f"Device type {device_type.name}", values), metrics]


@types_app.command("add")
@model_options(DeviceTypeCreate)
def types_add(
    name: str,
    metric: MetricOption = None,
    config: ConfigOption = None,
    **fields: Any,
) -> None:
    """Register a device type (--family, --protocol, --expected-interval-s; --gateway for
    gateways and agents)."""
    values = {**_given(fields), "name": name}
    metrics = _metrics(metric)
    if metrics is not None:
        values["metrics"] = metrics
    with _service(config, broker=False) as service:
        created = service.create_type(DeviceTypeCreate.model_validate(values), actor=_actor())
    for table in _type_card(created):
        out().print(table)


@types_app.command("list")
def types_list(config: ConfigOption = None) -> None:
    """Every device type."""
    with _service(config, broker=False) as service:
        found = service.list_types()
    table = Table(title="Device types")
    for column in ("name", "family", "protocol", "interval s", "gateway", "metrics"):
        table.add_column(column)
    for t in found:
        _add(
            table,
            t.name,
            t.family,
            t.protocol,
            f"{t.expected_interval_s:g}",
            "yes" if t.is_gateway else "-",
            ", ".join(f"{m.name} [{m.unit}]" if m.unit else m.name for m in t.metrics) or "-",
        )
    out().print(table)


@types_app.command("show")
def types_show(name: str, config: ConfigOption = None) -> None:
    """One device type and its metrics."""
    with _service(config, broker=False) as service:
        found = service.get_type(name)
    for table in _type_card(found):
        out().print(table)


@types_app.command("seed")
def types_seed(config: ConfigOption = None) -> None:
    """Create or update the device types the driver families declare (safe to run again).

    A type's metrics come from its family's metric table; an existing type keeps its
    interval, protocol and description.
    """
    with _service(config, broker=False) as service:
        results = service.seed_types(actor=_actor())
        seeded = [(service.get_type(name), action) for name, action in results]
    table = Table(title="Device types from the driver families")
    for column in ("name", "family", "metrics", "seeded"):
        table.add_column(column)
    for found, action in seeded:
        _add(table, found.name, found.family, ", ".join(m.name for m in found.metrics), action)
    out().print(table)


@types_app.command("update")
@model_options(DeviceTypeUpdate)
def types_update(
    name: str, metric: MetricOption = None, config: ConfigOption = None, **fields: Any
) -> None:
    """Change a type's expected interval, metrics (replaced as a whole) or description."""
    values = _given(fields)
    metrics = _metrics(metric)
    if metrics is not None:
        values["metrics"] = metrics
    if not values:
        raise typer.BadParameter("nothing to change: give at least one option")
    with _service(config, broker=False) as service:
        changed = service.update_type(name, DeviceTypeUpdate.model_validate(values), actor=_actor())
    for table in _type_card(changed):
        out().print(table)


# -- tokens and the server -----------------------------------------------------------------------
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ANY_HOST = frozenset({"0.0.0.0", "::", ""})  # listen addresses, compared only


def sign_in_link(base_url: str, token: str) -> str:
    """The technician page's address with the token in the fragment (``.../app/#token=``).

    A fragment is never part of a request: the token reaches no request line, no proxy or
    server log and no Referer; the page reads it once and wipes it from the address bar.
    """
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise typer.BadParameter(
            f"{base_url!r}: expected http(s)://host[:port]/", param_hint="--url"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/app"):
        path += "/app"
    return urlunsplit(
        (parts.scheme, parts.netloc, path + "/", "", "token=" + quote(token, safe=""))
    )


def _print_sign_in(token: str, url: str | None, config: Path | None) -> None:
    """The sign-in link and its QR code, for a phone's camera."""
    import io

    import segno

    console = out()
    if url is None:
        runtime = (
            _loader[0](config, with_broker=False)
            if _loader
            else RegistryRuntime(database_url="", broker=None)
        )
        host = runtime.api_host
        if host in LOOPBACK_HOSTS or host in ANY_HOST:
            err().print(
                f"note: the registry listens on {host or '*'}:{runtime.api_port}; a phone needs "
                "the address it reaches it by: pass --url http(s)://<that address>/",
                markup=False,
            )
        shown = "127.0.0.1" if host in ANY_HOST else host
        url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{runtime.api_port}/"
    link = sign_in_link(url, token)
    console.print("Sign-in link (opens the technician page signed in; keep it as secret as "
                  "the token):", markup=False)  # fmt: skip
    console.print(link, markup=False, soft_wrap=True)
    console.print("Or scan this with the phone's camera:", markup=False)
    # Half blocks: two modules a line, so a 56-character token fits an 80x24 terminal.
    drawn = io.StringIO()
    segno.make(link, error="m").terminal(out=drawn, compact=True, border=2)
    console.file.write(drawn.getvalue())


@token_app.command("create")
def token_create(
    name: str,
    role: Annotated[
        str, typer.Option(help="admin, technician, viewer, provisioner, or gateway (an agent's)")
    ],
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway", help="With --role gateway: the one gateway whose device list it reads."
        ),
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="Expire after 30d, 12h, 90m, 2w... (default: never)."),
    ] = None,
    qr: Annotated[
        bool,
        typer.Option(
            "--qr", help="Also print a sign-in link and its QR code for the technician page."
        ),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The registry's address as the phone reaches it, e.g. https://registry.kota.example/"
            " (default: the API's listen address).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Make an API token; its secret is printed once (with --qr: as a sign-in link and QR)."""
    from device_registry.api_tokens import create_token, parse_duration

    if role not in (*ROLES, "gateway"):
        raise typer.BadParameter(
            f"{role!r}: not one of {', '.join(ROLES)}, gateway", param_hint="--role"
        )
    if (role == "gateway") != (gateway is not None):
        raise typer.BadParameter(
            "required with --role gateway, and only there", param_hint="--gateway"
        )
    try:
        expires_in_s = parse_duration(expires_in) if expires_in is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--expires-in") from error
    with _service(config, broker=False) as service:
        created = create_token(
            service.database,
            name=name,
            role=role_name(role),
            actor=_actor(),
            expires_in_s=expires_in_s,
            gateway_id=gateway,
        )
    out().print(f"token {created.id} ({created.role}), shown once: {created.token}", soft_wrap=True)
    if created.expires_at is not None:
        out().print(f"expires {_text(created.expires_at)}")
    if qr:
        _print_sign_in(created.token, url, config)


def role_name(value: str) -> Role:
    """Narrow a checked string to a Role."""
    return value  # type: ignore[return-value]


@token_app.command("list")
def token_list(config: ConfigOption = None) -> None:
    """Every token's metadata."""
    from device_registry.api_tokens import list_tokens

    with _service(config, broker=False) as service:
        tokens = list_tokens(service.database)
    table = Table(title="API tokens")
    for column in ("id", "name", "role", "created", "revoked"):
        table.add_column(column)
    for t in tokens:
        _add(
            table,
            t.id,
            t.name,
            t.role,
            t.created_at,
            t.revoked_at,
        )
    out().print(table)


@token_app.command("revoke")
def token_revoke(token_id: str, config: ConfigOption = None) -> None:
    """Revoke a token at once."""
    from device_registry.api_tokens import revoke_token

    with _service(config, broker=False) as service:
        revoke_token(service.database, token_id, actor=_actor())
    out().print(f"revoked {token_id}")


@registry_app.command("serve")
def registry_serve(config: ConfigOption = None) -> None:
    """Serve the REST API (OpenAPI at /docs) with uvicorn."""
    import uvicorn

    from device_registry.web_api import create_app

    if not _loader:
        raise RuntimeError("no runtime loader installed")
    runtime = _loader[0](config)
    with _service(config) as service:
        app = create_app(
            service,
            tiles=runtime.tiles,
            max_body_bytes=runtime.max_body_bytes,
            max_import_bytes=runtime.max_import_bytes,
            max_import_rows=runtime.max_import_rows,
        )
        uvicorn.run(app, host=runtime.api_host, port=runtime.api_port)
