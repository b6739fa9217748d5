"""``kotahub teams``, ``kotahub sites`` and ``kotahub registry types``: what devices refer to."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from device_registry.cli_options import (
    ConfigOption,
    JsonOption,
    cleared_fields,
    given_fields,
    model_options,
)
from device_registry.cli_output import add_row, cell_text, field_card, out
from device_registry.cli_runtime import actor, open_service
from device_registry.errors import FieldError
from device_registry.schemas import (
    ContactChannel,
    DeviceQuery,
    DeviceTypeCreate,
    DeviceTypePublic,
    DeviceTypeUpdate,
    SiteCreate,
    SitePublic,
    SiteUpdate,
    TeamCreate,
    TeamMember,
    TeamPublic,
    TeamUpdate,
)

teams_app = typer.Typer(
    help="Field teams, their members and contact channels.", no_args_is_help=True
)
sites_app = typer.Typer(help="Sites.", no_args_is_help=True)
types_app = typer.Typer(help="Device types (family, protocol, interval, metrics).")


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
    card = field_card(f"Team {team.id}", {"name": team.name, "devices": devices})
    members = Table(title="Members", title_justify="left")
    for column in ("name", "role", "phone", "email"):
        members.add_column(column)
    for m in team.members:
        add_row(members, m.name, m.role or "-", m.phone or "-", m.email or "-")
    channels = Table(title="Contact channels", title_justify="left")
    for column in ("kind", "address"):
        channels.add_column(column)
    for c in team.contact_channels:
        add_row(channels, c.kind, c.address)
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
    with open_service(config, broker=False) as service:
        data = TeamCreate.model_validate(
            {"id": team_id, "name": name, "contact_channels": channels}
        )
        team = service.create_team(data, actor=actor())
    out().print(_team_card(team, 0)[0])


@teams_app.command("list")
def teams_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Every team."""
    with open_service(config, broker=False) as service:
        teams = service.list_teams()
    if as_json:
        out().print_json(json.dumps([t.model_dump(mode="json") for t in teams]))
        return
    table = Table(title="Teams")
    for column in ("id", "name", "members", "channels"):
        table.add_column(column)
    for team in teams:
        add_row(
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
    with open_service(config, broker=False) as service:
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
    with open_service(config, broker=False) as service:
        team = service.update_team(team_id, TeamUpdate(name=name), actor=actor())
    out().print(f"team {team.id} is now {team.name!r}", markup=False)


def _edit_team(config: Path | None, team_id: str, edit: Callable[[TeamPublic], TeamUpdate]) -> None:
    with open_service(config, broker=False) as service:
        team = service.edit_team(team_id, edit, actor=actor())
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
            given_fields({"name": name, "role": role, "phone": phone, "email": email})
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
    return field_card(f"Site {site.id}", {**site.model_dump(exclude={"id"}), "devices": devices})


@sites_app.command("add")
@model_options(SiteCreate)
def sites_add(site_id: str, name: str, config: ConfigOption = None, **fields: Any) -> None:
    """Register a site."""
    with open_service(config, broker=False) as service:
        data = SiteCreate.model_validate({**given_fields(fields), "id": site_id, "name": name})
        out().print(_site_card(service.create_site(data, actor=actor()), 0))


@sites_app.command("list")
def sites_list(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Every site."""
    with open_service(config, broker=False) as service:
        sites = service.list_sites()
    if as_json:
        out().print_json(json.dumps([s.model_dump(mode="json") for s in sites]))
        return
    table = Table(title="Sites")
    for column in ("id", "name", "lat", "lon", "kecamatan", "kelurahan", "address"):
        table.add_column(column)
    for site in sites:
        add_row(
            table,
            site.id,
            site.name,
            cell_text(site.latitude),
            cell_text(site.longitude),
            site.kecamatan or "-",
            site.kelurahan or "-",
            site.address or "-",
        )
    out().print(table)


@sites_app.command("show")
def sites_show(site_id: str, as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """One site and how many devices it holds."""
    with open_service(config, broker=False) as service:
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
    values = given_fields(fields) | cleared_fields(clear, SiteUpdate, SiteCreate)
    if not values:
        raise typer.BadParameter("nothing to change: give at least one field option")
    with open_service(config, broker=False) as service:
        site = service.update_site(site_id, SiteUpdate.model_validate(values), actor=actor())
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
        add_row(metrics, m.name, m.unit or "-", m.kind)
    return [field_card(f"Device type {device_type.name}", values), metrics]


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
    values = {**given_fields(fields), "name": name}
    metrics = _metrics(metric)
    if metrics is not None:
        values["metrics"] = metrics
    with open_service(config, broker=False) as service:
        created = service.create_type(DeviceTypeCreate.model_validate(values), actor=actor())
    for table in _type_card(created):
        out().print(table)


@types_app.command("list")
def types_list(config: ConfigOption = None) -> None:
    """Every device type."""
    with open_service(config, broker=False) as service:
        found = service.list_types()
    table = Table(title="Device types")
    for column in ("name", "family", "protocol", "interval s", "gateway", "metrics"):
        table.add_column(column)
    for t in found:
        add_row(
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
    with open_service(config, broker=False) as service:
        found = service.get_type(name)
    for table in _type_card(found):
        out().print(table)


@types_app.command("seed")
def types_seed(config: ConfigOption = None) -> None:
    """Create or update the device types the driver families declare (safe to run again).

    A type's metrics come from its family's metric table; an existing type keeps its
    interval, protocol and description.
    """
    with open_service(config, broker=False) as service:
        results = service.seed_types(actor=actor())
        seeded = [(service.get_type(name), action) for name, action in results]
    table = Table(title="Device types from the driver families")
    for column in ("name", "family", "metrics", "seeded"):
        table.add_column(column)
    for found, action in seeded:
        add_row(table, found.name, found.family, ", ".join(m.name for m in found.metrics), action)
    out().print(table)


@types_app.command("update")
@model_options(DeviceTypeUpdate)
def types_update(
    name: str, metric: MetricOption = None, config: ConfigOption = None, **fields: Any
) -> None:
    """Change a type's expected interval, metrics (replaced as a whole) or description."""
    values = given_fields(fields)
    metrics = _metrics(metric)
    if metrics is not None:
        values["metrics"] = metrics
    if not values:
        raise typer.BadParameter("nothing to change: give at least one option")
    with open_service(config, broker=False) as service:
        changed = service.update_type(name, DeviceTypeUpdate.model_validate(values), actor=actor())
    for table in _type_card(changed):
        out().print(table)
