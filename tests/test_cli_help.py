"""Every command's --help reads cleanly: flags take no value, so none shows a value label."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from hub import cli


def _commands(group: Any, path: list[str]) -> list[list[str]]:
    """Every command path under ``group`` (the CLI loads some groups lazily).

    Typed loosely: typer 0.28 brings its own copy of click's classes.
    """
    found = [path]
    if hasattr(group, "list_commands"):
        context = group.context_class(group)
        for name in group.list_commands(context):
            sub = group.get_command(context, name)
            if sub is not None and not sub.hidden:
                found += _commands(sub, [*path, name])
    return found


def test_no_flag_in_any_help_carries_a_value_label() -> None:
    root = typer.main.get_command(cli.app)
    paths = _commands(root, [])
    assert len(paths) > 30  # the walk reached the subcommands (alerts, demo, registry ...)
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(cli.app, [*path, "--help"], terminal_width=120)
        assert result.exit_code == 0, (path, result.output)
        help_lines = [line for line in result.output.splitlines() if "--help" in line]
        assert help_lines, (path, result.output)
        # typer 0.29 labelled flags <bool> (pinned 0.28 in pyproject.toml).
        assert "<bool>" not in result.output, (path, help_lines)
