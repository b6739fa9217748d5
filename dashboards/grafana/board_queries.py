"""Run every query of the committed boards against an InfluxDB, as Grafana would.

Shared by the query tests, the previews and the query benchmark. It takes any client with
``query(statement, database=...) -> [series with name, columns, values, tags]`` (the
hub's ``InfluxQL``), so this package imports nothing of ``hub``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dashboards.grafana.grafana_interpolation import (
    ALL,
    DEFAULT_MAX_DATA_POINTS,
    MIN_INTERVAL_MS,
    Interpolator,
    TimeRange,
    board_targets,
    board_variables,
    duration_ms,
    select_columns,
)

JSON_DIR = Path(__file__).resolve().parent / "json"


class SeriesLike(Protocol):
    """One series of an answer."""

    @property
    def name(self) -> str:
        """Measurement."""
        ...

    @property
    def columns(self) -> list[str]:
        """Column names."""
        ...

    @property
    def values(self) -> list[list[Any]]:
        """Rows."""
        ...

    @property
    def tags(self) -> dict[str, str]:
        """Group tags."""
        ...


class QueryClient(Protocol):
    """What the runner needs of a client."""

    def query(self, statement: str, *, database: str | None = None) -> Sequence[SeriesLike]:
        """Run one statement."""
        ...


def load_boards(directory: Path = JSON_DIR) -> dict[str, dict[str, Any]]:
    """The committed boards, by uid."""
    boards: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        boards[str(data["uid"])] = data
    return boards


@dataclass(slots=True)
class PanelResult:
    """One target's answer."""

    panel: Mapping[str, Any]
    target: Mapping[str, Any]
    statement: str
    series: list[SeriesLike]
    elapsed_ms: float
    expected_columns: list[str] = field(default_factory=list)
    # A repeated panel's copy: its variable and the value it was run with.
    repeated: tuple[str, str] | None = None

    def problems(self) -> list[str]:
        """Why this answer would show an empty or broken panel; empty when it is fine."""
        title = self.panel.get("title", "?")
        if not self.series:
            return [f"{title!r}: no series for {self.statement}"]
        out = []
        for column in self.expected_columns:
            filled = any(
                column in s.columns and row[s.columns.index(column)] is not None
                for s in self.series
                for row in s.values
            )
            if not filled:
                out.append(f"{title!r}: column {column!r} empty in {self.statement}")
        return out


def variable_values(
    board: Mapping[str, Any],
    client: QueryClient,
    database: str,
    time_range: TimeRange,
    selection: Mapping[str, str | Sequence[str]] | None = None,
) -> tuple[dict[str, str | Sequence[str]], dict[str, str]]:
    """Values for the board's variables: ``selection`` where given, else All; ``rollup``
    from its own query, as Grafana's hidden variable resolves it."""
    values: dict[str, str | Sequence[str]] = {}
    all_values: dict[str, str] = {}
    chosen = dict(selection or {})
    for variable in board_variables(board):
        name = str(variable["name"])
        if variable.get("allValue") is not None:
            all_values[name] = str(variable["allValue"])
        if name == "rollup" or name.startswith("rollup_"):
            statement = Interpolator(time_range=time_range).fill(str(variable["query"]))
            answer = client.query(statement, database=database)
            found = [row[1] for s in answer for row in s.values]
            if not found:
                raise LookupError(f"rollup variable found no policy: {statement}")
            values[name] = str(found[0])
        else:
            values[name] = chosen.get(name, ALL)
    return values, all_values


def run_board(
    board: Mapping[str, Any],
    client: QueryClient,
    database: str,
    time_range: TimeRange,
    selection: Mapping[str, str | Sequence[str]] | None = None,
) -> Iterator[PanelResult]:
    """Each target of the board, filled and run."""
    values, all_values = variable_values(board, client, database, time_range, selection)
    first: dict[str, str | Sequence[str]] = {}
    for panel, target in board_targets(board):
        minimum = duration_ms(str(panel["interval"])) if panel.get("interval") else MIN_INTERVAL_MS
        panel_values = values
        repeated: tuple[str, str] | None = None
        repeat = panel.get("repeat")
        if repeat and values.get(repeat) == ALL:
            # Grafana draws a repeated panel once per value, each with that value alone:
            # run its first copy, as the board shows it first.
            if repeat not in first:
                first[repeat] = _first_value(board, repeat, client, database, time_range, values)
            panel_values = {**values, repeat: first[repeat]}
            repeated = (str(repeat), str(first[repeat][0]))
        statement = Interpolator(
            time_range=time_range,
            values=panel_values,
            all_values=all_values,
            min_interval_ms=minimum,
            max_data_points=int(panel.get("maxDataPoints") or DEFAULT_MAX_DATA_POINTS),
        ).fill(str(target["query"]))
        started = time.perf_counter()
        series = list(client.query(statement, database=database))
        elapsed = (time.perf_counter() - started) * 1000
        yield PanelResult(
            panel=panel,
            target=target,
            statement=statement,
            series=series,
            elapsed_ms=elapsed,
            expected_columns=select_columns(str(target["query"])),
            repeated=repeated,
        )


def _first_value(
    board: Mapping[str, Any],
    name: str,
    client: QueryClient,
    database: str,
    time_range: TimeRange,
    values: Mapping[str, str | Sequence[str]],
) -> list[str]:
    """The first value (alphabetically, as the variables sort) of a query variable."""
    (variable,) = [v for v in board_variables(board) if v["name"] == name]
    all_values = {
        str(v["name"]): str(v["allValue"])
        for v in board_variables(board)
        if v.get("allValue") is not None
    }
    statement = Interpolator(time_range=time_range, values=values, all_values=all_values).fill(
        str(variable["query"])
    )
    found = sorted(
        str(row[1]) for s in client.query(statement, database=database) for row in s.values
    )
    if not found:
        raise LookupError(f"repeat variable {name} has no value: {statement}")
    return found[:1]


def variable_statements(
    board: Mapping[str, Any], time_range: TimeRange, values: Mapping[str, str | Sequence[str]]
) -> list[str]:
    """The board's variable queries, filled (the others' All where they refer to them)."""
    all_values = {
        str(v["name"]): str(v["allValue"])
        for v in board_variables(board)
        if v.get("allValue") is not None
    }
    fill = Interpolator(time_range=time_range, values=values, all_values=all_values).fill
    return [fill(str(v["query"])) for v in board_variables(board)]


def annotation_statements(board: Mapping[str, Any], time_range: TimeRange) -> list[str]:
    """The board's annotation queries, filled with All selections."""
    values: dict[str, str | Sequence[str]] = {str(v["name"]): ALL for v in board_variables(board)}
    all_values = {
        str(v["name"]): str(v["allValue"])
        for v in board_variables(board)
        if v.get("allValue") is not None
    }
    values.setdefault("kecamatan", ALL)
    all_values.setdefault("kecamatan", ".*")
    fill = Interpolator(time_range=time_range, values=values, all_values=all_values).fill
    annotations = (board.get("annotations") or {}).get("list", [])
    return [fill(str(a["target"]["query"])) for a in annotations if "target" in a]
