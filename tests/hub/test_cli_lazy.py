"""`kotahub --help` loads no command group it does not run (SQLAlchemy, alert engine, HTTP)."""

from __future__ import annotations

import subprocess
import sys

import typer.core
import typer.main
from typer import _click as click
from typer.testing import CliRunner

from hub.cli import LAZY_GROUPS, app

HEAVY = (
    "sqlalchemy",
    "alembic",
    "device_registry.models",
    "hub.alerts.rule_engine",
    "niquests",
    "httpx",
    "paho",
)

PROBE = """
import sys
from typer.testing import CliRunner
import hub.cli
result = CliRunner().invoke(hub.cli.app, {args!r})
assert result.exit_code == 0, result.output
print("OUT", "devices" in result.output and "demo" in result.output)
print("LOADED", ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded_after(args: list[str]) -> tuple[bool, list[str]]:
    """Build the help in a fresh interpreter: (were the lazy groups listed, heavy modules)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    return lines["OUT"] == "True", [m for m in lines.get("LOADED", "").split(",") if m]


def test_top_level_help_imports_no_heavy_module() -> None:
    listed, loaded = _loaded_after(["--help"])
    assert listed
    assert loaded == []


def test_a_group_loads_when_its_command_is_asked_for() -> None:
    # The counter-check: the same probe sees the registry's models once `devices` is used.
    _listed, loaded = _loaded_after(["devices", "--help"])
    assert "sqlalchemy" in loaded


def test_each_lazy_help_line_is_the_groups_own() -> None:
    group = typer.main.get_group(app)
    ctx = click.Context(group)
    for name, entry in LAZY_GROUPS.items():
        loaded = group.get_command(ctx, name)
        assert isinstance(loaded, typer.core.TyperGroup), name
        assert loaded.help is not None, name
        assert loaded.help.strip() == entry.help, name


def test_firmware_subcommands_are_wired_once_over_many_invocations() -> None:
    for _ in range(3):
        shown = CliRunner().invoke(app, ["firmware", "--help"], env={"COLUMNS": "120"})
        assert shown.exit_code == 0, shown.output
    assert shown.output.count(" campaign ") == 1
    assert shown.output.count(" provision ") == 1
