"""``kotahub devices`` commands: register, find, change, replace, retire, import, export."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table
from rich.text import Text

from device_registry.cli_options import (
    ConfigOption,
    JsonOption,
    cleared_fields,
    given_fields,
    json_object,
    key_values,
    model_options,
)
from device_registry.cli_output import add_row, err, field_card, out, state_text
from device_registry.cli_runtime import actor, open_service
from device_registry.errors import CredentialsError
from device_registry.schemas import (
    DeviceCreate,
    DevicePublic,
    DeviceQuery,
    DeviceReplace,
    DeviceTypePublic,
    DeviceUpdate,
    DeviceWritten,
)

ImportFormat = Literal["csv", "geojson"]

devices_app = typer.Typer(help="Register, find, change and retire devices.", no_args_is_help=True)


def _device_table(devices: list[DevicePublic], title: str) -> Table:
    table = Table(title=title)
    table.add_column("id", no_wrap=True)
    for column in ("type", "state", "kecamatan", "kelurahan", "RW/RT", "team", "gateway"):
        table.add_column(column)
    table.add_column("serial", overflow="fold")
    for d in devices:
        add_row(
            table,
            d.id,
            d.device_type,
            state_text(d.state),
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
    values["state"] = state_text(device.state)
    return field_card(f"Device {device.id}", values)


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
    values = {"state": default_state} | given_fields(fields) | {"id": device_id}
    if tag:
        values["tags"] = key_values(tag, "--tag")
    config_object = json_object(driver_config, "--driver-config")
    if config_object is not None:
        values["driver_config"] = config_object
    # A new device has no identity to revoke: without credentials the broker is not needed.
    with open_service(config, broker=not no_credentials) as service:
        data = DeviceCreate.model_validate(values)
        try:
            written = service.create_device(
                data, actor=actor(), issue_credentials=not no_credentials
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
    with open_service(config, broker=False) as service:
        query = DeviceQuery.model_validate(given_fields(fields))
        page = service.list_devices(query)
        if as_json:
            out().print_json(page.model_dump_json())
            return
        shown = f"{query.offset + 1}-{query.offset + len(page.items)}" if page.items else "0"
        out().print(_device_table(page.items, f"Devices {shown} of {page.total}"))


@devices_app.command("show")
def devices_show(device_id: str, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """One device, its status and last readings, and its history."""
    with open_service(config, broker=False) as service:
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
        field_card(
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
        add_row(table, entry.at, entry.actor, entry.action)
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
    values = given_fields(fields)
    cleared = cleared_fields(clear, DeviceUpdate, DeviceCreate)
    if set(cleared) & set(values):
        both = ", ".join(sorted(set(cleared) & set(values)))
        raise typer.BadParameter(f"{both}: both set and cleared", param_hint="--clear")
    values |= cleared
    config_object = json_object(driver_config, "--driver-config")
    if config_object is not None:
        values["driver_config"] = config_object
    if not values and not tag and not remove_tag:
        raise typer.BadParameter("nothing to change: give at least one field option")
    set_tags = key_values(tag, "--tag")

    def edit(current: DevicePublic) -> DeviceUpdate:
        if not tag and not remove_tag:
            return DeviceUpdate.model_validate(values)
        # Tags are one field: the changes are merged into the tags as stored, inside the
        # update's transaction, so a concurrent tag edit is not lost.
        tags = {**current.tags, **set_tags}
        for key in remove_tag or []:
            tags.pop(key, None)
        return DeviceUpdate.model_validate({**values, "tags": tags})

    with open_service(config) as service:
        DeviceUpdate.model_validate(values)  # bad options are refused before any write
        written = service.edit_device(
            device_id, edit, actor=actor(), issue_credentials=not no_credentials
        )
        _print_written(written, as_json=as_json)


@devices_app.command("replace")
@model_options(DeviceReplace)
def devices_replace(
    device_id: str, as_json: JsonOption = False, config: ConfigOption = None, **fields: Any
) -> None:
    """Swap a failed unit (--serial required): same id and history, new MQTT secret."""
    with open_service(config) as service:
        data = DeviceReplace.model_validate(given_fields(fields))
        _print_written(service.replace_device(device_id, data, actor=actor()), as_json=as_json)


@devices_app.command("retire")
def devices_retire(device_id: str, reason: str = "", config: ConfigOption = None) -> None:
    """Retire a device and revoke its MQTT identity at once."""
    with open_service(config) as service:
        device = service.retire_device(device_id, actor=actor(), reason=reason)
    out().print(f"retired {device.id}; its MQTT identity (if any) is revoked")


@devices_app.command("rotate-credentials")
def devices_rotate(
    device_id: str, as_json: JsonOption = False, config: ConfigOption = None
) -> None:
    """Issue a new MQTT secret; the old one stops working at once."""
    with open_service(config) as service:
        _print_written(service.rotate_credentials(device_id, actor=actor()), as_json=as_json)


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
    # Imported here: only an import draws a progress bar, `kotahub --help` need not load it.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

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
    with open_service(config, broker=not (no_credentials or dry_run)) as service:
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
                actor=actor(),
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
    add_row(table, *(str(v) for v in counts))
    console.print(table)
    if report.errors:
        errors = Table(title="Rejected rows", title_justify="left")
        for column in ("line", "field", "reason"):
            errors.add_column(column)
        for error in report.errors[:50]:
            add_row(errors, str(error.line), error.field, error.message)
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
    with open_service(config, broker=False) as service:
        query = DeviceQuery.model_validate(given_fields(fields))
        text = export_geojson(service, query) if kind == "geojson" else export_csv(service, query)
    if str(output) == "-":
        typer.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    err().print(f"wrote {output}")
