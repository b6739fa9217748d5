"""How the registry commands print: consoles, cards and table rows of stored values."""

from __future__ import annotations

import datetime as dt
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

STATE_COLOURS = {"active": "green", "maintenance": "yellow", "planned": "cyan", "retired": "dim"}


def out() -> Console:
    """Standard output (made per command, so that COLUMNS and redirection are honoured)."""
    return Console(highlight=False, soft_wrap=True)


def err() -> Console:
    """Standard error, for errors and the progress bar."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def cell_text(value: Any) -> str:
    """A value as a table cell: ``-`` for nothing, UTC for a time."""
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


def field_card(title: str, values: dict[str, Any]) -> Table:
    """A two-column table of the fields that have a value."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in values.items():
        if value is not None and value not in ({}, [], ""):
            add_row(table, key, value)
    return table


def state_text(state: str) -> Text:
    """A device state in its colour."""
    return Text(state, style=STATE_COLOURS.get(state, "white"))


def add_row(table: Table, *values: Any) -> None:
    """Add a row; stored text is shown as is (never read as rich markup)."""
    table.add_row(*(v if isinstance(v, Text) else Text(cell_text(v)) for v in values))
