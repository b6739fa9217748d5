"""``kotahub influx``: prepare an existing InfluxDB 1.x for the boards (rollups, retention)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hub.influx_rollups import RollupError, setup_for
from hub.settings import ConfigError, load_settings

influx_app = typer.Typer(
    help="Prepare InfluxDB: retention policies and rollups.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)


@influx_app.command("init")
def init(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Settings file (default: $KOTAHUB_CONFIG).",
            envvar="KOTAHUB_CONFIG",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change, change nothing.")
    ] = False,
) -> None:
    """Create the rollup retention policies and continuous queries (idempotent)."""
    try:
        settings = load_settings(config)
    except ConfigError as err:
        err_console.print(f"[red]configuration error[/red]: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from err
    if settings.influx.api != "v1":
        err_console.print(
            "influx init needs the v1 API (InfluxDB 1.x or a v1 compatibility endpoint)"
        )
        raise typer.Exit(2)
    setup = setup_for(settings)
    try:
        changes = setup.plan()
        where = f"{settings.influx.url} database {settings.influx.database}"
        if not changes:
            console.print(f"nothing to change on {where}", highlight=False)
            return
        verb = "would make" if dry_run else "making"
        console.print(f"{verb} {len(changes)} change(s) on {where}:", highlight=False)
        for change in changes:
            console.print(f"  - {change.description}", highlight=False, soft_wrap=True)
            if dry_run:
                for statement in change.statements:
                    console.print(f"      {statement}", highlight=False, soft_wrap=True)
        if not dry_run:
            setup.apply(changes)
            console.print("done", highlight=False)
    except RollupError as err:
        err_console.print(f"[red]error[/red]: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from err
    finally:
        setup.client.close()
