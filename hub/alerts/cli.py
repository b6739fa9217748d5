"""``kotahub alerts list|show|ack|resolve|silence``: the alert database from a shell.

The commands work while the hub runs (SQLite in WAL mode takes one writer at a time and
waits for it): an acknowledgement cancels the alert's pending escalations and repeats,
and the hub writes it to the ``alert`` measurement within a second.
"""

from __future__ import annotations

import getpass
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hub.alerts.alert_store import AlertStore, AlertStoreError
from hub.alerts.rule_model import seconds_of
from hub.settings import ConfigError, load_settings

alerts_app = typer.Typer(
    help="List, acknowledge, resolve and silence alerts.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Settings file (default: $KOTAHUB_CONFIG, else ./kotahub.toml).",
        envvar="KOTAHUB_CONFIG",
        show_envvar=False,
    ),
]
ByOption = Annotated[
    str | None, typer.Option("--by", help="Who does it (default: your login name).")
]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _store(config: Path | None) -> AlertStore:
    from hub.alerts.alert_runtime import alert_database

    try:
        settings = load_settings(config)
    except ConfigError as err:
        err_console.print(f"[red]configuration error[/red]: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from err
    database = alert_database(settings)
    if not database.exists():
        err_console.print(
            f"no alert database at {database} (has the hub run with [alerts] rules?)",
            highlight=False,
        )
        raise typer.Exit(1)
    try:
        return AlertStore(database)
    except AlertStoreError as err:
        err_console.print(str(err), highlight=False)
        raise typer.Exit(1) from err


def _actor(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


@alerts_app.command("list")
def list_alerts(
    config: ConfigOption = None,
    state: Annotated[str, typer.Option(help="firing, resolved or all.")] = "firing",
    team: Annotated[
        str | None, typer.Option(help="Only this team's alerts (the device's registry team).")
    ] = None,
) -> None:
    """Alerts, newest change first (firing ones by default)."""
    if state not in ("firing", "resolved", "all"):
        err_console.print(f"--state must be firing, resolved or all, not {state!r}")
        raise typer.Exit(2)
    store = _store(config)
    try:
        rows = store.alerts(state=None if state == "all" else state)
    finally:
        store.close()
    if team is not None:
        rows = [row for row in rows if row.team == team]
    table = Table("alert", "state", "severity", "stage", "value", "raised (UTC)", "acked by")
    for row in rows:
        table.add_row(
            row.key,
            row.state,
            row.severity,
            row.stage or "-",
            row.value or "-",
            _when(row.raised_ms),
            row.acked_by or "-",
        )
    console.print(table)
    console.print(f"{len(rows)} alert(s)")


@alerts_app.command("show")
def show(
    key: Annotated[str, typer.Argument(help="rule|device, as `alerts list` shows it.")],
    config: ConfigOption = None,
) -> None:
    """One alert and its history."""
    store = _store(config)
    try:
        alert = store.alert(key)
        events = store.events_of(key)
        children = store.children(key)
    except AlertStoreError as err:
        err_console.print(str(err), highlight=False)
        raise typer.Exit(1) from err
    finally:
        store.close()
    console.print(
        f"[bold]{alert.key}[/bold] {alert.state} {alert.severity} {alert.stage}".rstrip(),
        highlight=False,
    )
    console.print(alert.message, highlight=False)
    console.print(
        f"raised {_when(alert.raised_ms)}  acked {alert.acked_by or '-'} "
        f"{_when(alert.acked_ms)}  escalation level {alert.escalation}",
        highlight=False,
    )
    if children:
        console.print(f"incident: {len(children)} device(s) behind it failed with it:")
        for child in children:
            console.print(f"  {child['child_key']} ({child['state']})", highlight=False)
    table = Table("time (UTC)", "#", "event", "stage", "value", "by")
    for event in events:
        table.add_row(
            _when(event["time_ms"]),
            str(event["instance"]),
            event["kind"],
            event["stage"] or "-",
            event["value"] or "-",
            event["actor"] or "-",
        )
    console.print(table)


def _operator(key: str, kind: str, by: str | None, config: Path | None) -> None:
    store = _store(config)
    try:
        done = store.operator_event(key, kind, _actor(by), _now_ms())
    except AlertStoreError as err:
        err_console.print(str(err), highlight=False)
        raise typer.Exit(1) from err
    finally:
        store.close()
    if not done:
        err_console.print(
            f"{key}: not firing, or acknowledged already: nothing done", highlight=False
        )
        raise typer.Exit(1)
    console.print(f"{key}: {'acknowledged' if kind == 'ack' else 'resolved'}", highlight=False)


@alerts_app.command("ack")
def ack(
    key: Annotated[str, typer.Argument(help="rule|device")],
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Acknowledge: no more pages, escalations or repeats of this alert."""
    _operator(key, "ack", by, config)


@alerts_app.command("resolve")
def resolve(
    key: Annotated[str, typer.Argument(help="rule|device")],
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Resolve by hand (the rule raises it again only after it cleared)."""
    _operator(key, "resolve", by, config)


@alerts_app.command("silence")
def silence(
    duration: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 1d.")],
    rule: Annotated[str | None, typer.Option(help="Only this rule.")] = None,
    device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    kecamatan: Annotated[str | None, typer.Option(help="Only this kecamatan.")] = None,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Page nobody about matching alerts for a while (they are still recorded)."""
    try:
        seconds = seconds_of(duration)
    except ValueError as err:
        err_console.print(f"--for: {err}")
        raise typer.Exit(2) from err
    if seconds <= 0:
        err_console.print("--for must be longer than 0 s")
        raise typer.Exit(2)
    if rule is None and device is None and kecamatan is None:
        err_console.print(
            "give --rule, --device or --kecamatan (a silence of everything is refused)"
        )
        raise typer.Exit(2)
    store = _store(config)
    now = _now_ms()
    try:
        number = store.add_silence(
            rule_id=rule,
            device_id=device,
            kecamatan=kecamatan,
            starts_ms=now,
            ends_ms=now + round(seconds * 1000),
            actor=_actor(by),
            comment=comment,
        )
    finally:
        store.close()
    console.print(
        f"silence {number} until {_when(now + round(seconds * 1000))} UTC", highlight=False
    )


maintenance_app = typer.Typer(
    help="Plan maintenance windows: covered devices page no one (alerts still recorded).",
    no_args_is_help=True,
)
alerts_app.add_typer(maintenance_app, name="maintenance")


def _moment(text: str, option: str) -> int:
    """ISO 8601 time (``2026-12-04T08:00+07:00``; without an offset: UTC) in ms."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as err:
        err_console.print(f"{option}: not an ISO 8601 time like 2026-12-04T08:00+07:00")
        raise typer.Exit(2) from err
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


@maintenance_app.command("add")
def maintenance_add(
    device: Annotated[str | None, typer.Option(help="This device.")] = None,
    kecamatan: Annotated[str | None, typer.Option(help="Every device of this kecamatan.")] = None,
    family: Annotated[str | None, typer.Option(help="Every device of this family.")] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Start, ISO 8601 (default: now).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="End, ISO 8601.")] = None,
    duration: Annotated[str | None, typer.Option("--for", help="Or a length: 2h, 1d.")] = None,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    by: ByOption = None,
    config: ConfigOption = None,
) -> None:
    """Plan a window on a device, or a kecamatan and/or family (both must match)."""
    from hub.alerts.maintenance import MaintenanceError, add_window

    starts = _moment(start, "--from") if start else _now_ms()
    if (until is None) == (duration is None):
        err_console.print("give --until or --for (one of them)")
        raise typer.Exit(2)
    if until is not None:
        ends = _moment(until, "--until")
    else:
        try:
            ends = starts + round(seconds_of(duration) * 1000)
        except ValueError as err:
            err_console.print(f"--for: {err}")
            raise typer.Exit(2) from err
    store = _store(config)
    try:
        number = add_window(
            store,
            device_id=device,
            kecamatan=kecamatan,
            family=family,
            starts_ms=starts,
            ends_ms=ends,
            actor=_actor(by),
            comment=comment,
        )
    except MaintenanceError as err:
        err_console.print(str(err))
        raise typer.Exit(2) from err
    finally:
        store.close()
    console.print(
        f"maintenance window {number}: {_when(starts)} to {_when(ends)} UTC", highlight=False
    )


@maintenance_app.command("list")
def maintenance_list(
    all_windows: Annotated[bool, typer.Option("--all", help="Closed ones too.")] = False,
    config: ConfigOption = None,
) -> None:
    """The open and planned windows."""
    from hub.alerts.maintenance import windows

    store = _store(config)
    try:
        found = windows(store, after_ms=None if all_windows else _now_ms())
    finally:
        store.close()
    table = Table("id", "scope", "from (UTC)", "until (UTC)", "by", "comment")
    for w in found:
        scope = f"device {w.device_id}" if w.device_id else ""
        scope += " ".join(
            f"{name} {value}"
            for name, value in (("kecamatan", w.kecamatan), ("family", w.family))
            if value and not w.device_id
        )
        table.add_row(
            str(w.id), scope, _when(w.starts_ms), _when(w.ends_ms), w.created_by, w.comment
        )
    console.print(table)


@maintenance_app.command("end")
def maintenance_end(
    window: Annotated[int, typer.Argument(help="The window's id (see list).")],
    config: ConfigOption = None,
) -> None:
    """Close a window now (a planned one is cancelled)."""
    from hub.alerts.maintenance import end_window

    store = _store(config)
    try:
        ended = end_window(store, window, _now_ms())
    finally:
        store.close()
    if not ended:
        err_console.print(f"no open or planned maintenance window {window}")
        raise typer.Exit(1)
    console.print(f"maintenance window {window} ended", highlight=False)
