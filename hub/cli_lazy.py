"""Command groups of ``kotahub`` that load their module on first use, not at start-up.

``kotahub --help`` and every command must not pay for SQLAlchemy, the registry's models, the
alert engine or an HTTP client they do not use: a group's module is imported only when one of
its commands runs (or its own help is asked for). The top-level help lists such a group from
the short help written here; a test compares it with the group's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
import typer.core
import typer.main
from typer import _click as click  # the click Typer vendors (0.29+), its groups' base


@dataclass(frozen=True)
class LazyGroup:
    """Where a command group lives, its short help, and what to wire once it is loaded."""

    module: str
    attribute: str
    help: str
    on_load: Callable[[], None] | None = None


_wired: set[LazyGroup] = set()


class LazyTyperGroup(typer.core.TyperGroup):
    """A Typer group whose ``lazy`` subgroups are imported when a command of theirs runs."""

    lazy: ClassVar[dict[str, LazyGroup]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False  # drawing this group's help: list lazy groups without loading

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The commands defined here, then the lazy groups, in the order they were declared."""
        return [*super().list_commands(ctx), *(n for n in self.lazy if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command; a lazy group is imported here unless only its help line is needed."""
        if cmd_name in self.commands or cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        entry = self.lazy[cmd_name]
        if self._listing:
            return typer.core.TyperGroup(name=cmd_name, help=entry.help)
        sub_app = getattr(importlib.import_module(entry.module), entry.attribute)
        if entry.on_load is not None and entry not in _wired:
            _wired.add(entry)  # once a process: a new click group is built per invocation
            entry.on_load()
        group = typer.main.get_group(sub_app)
        group.name = cmd_name
        self.add_command(group, cmd_name)
        return group

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The help, with the lazy groups' lines taken from their declarations."""
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def lazy_group_class(groups: dict[str, LazyGroup]) -> type[LazyTyperGroup]:
    """A group class for ``typer.Typer(cls=...)`` with these lazy subgroups."""
    return type("KotahubGroup", (LazyTyperGroup,), {"lazy": dict(groups)})
