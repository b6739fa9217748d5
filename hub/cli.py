"""The ``kotahub`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hub.local_stack import LocalStack, StackError
from hub.settings import ConfigError, Settings, load_settings, redacted

app = typer.Typer(
    name="kotahub",
    help="Kotahub: an IoT sensor and device hub for cities.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="Run the local Mosquitto and InfluxDB.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(config_app, name="config")

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
        err_console.print(f"[red]configuration error[/red]\n{err}", highlight=False)
        raise typer.Exit(2) from err


def _stack(config: Path | None) -> LocalStack:
    return LocalStack(settings_or_exit(config), log=lambda msg: console.print(f"  {msg}"))


def _print_status(stack: LocalStack) -> bool:
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
    console.print(table)
    return healthy


@stack_app.command("up")
def stack_up(config: ConfigOption = None) -> None:
    """Start Mosquitto and InfluxDB (idempotent) and wait until both answer."""
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
    """Show each part's state, port, version and PID; exit 1 unless all run."""
    if not _print_status(_stack(config)):
        raise typer.Exit(1)


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective settings as JSON, secrets masked."""
    console.print_json(json.dumps(redacted(settings_or_exit(config))))


def main() -> None:
    """Entry point for ``python -m hub``."""
    app()
