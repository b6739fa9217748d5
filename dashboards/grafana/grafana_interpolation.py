"""Fill a board's InfluxQL the way Grafana's InfluxDB data source does, without Grafana.

Tests, previews and the query benchmark run the committed JSON's queries against a real
InfluxDB; this module stands in for Grafana's template service:

- ``$timeFilter``: ``time >= <from>ms and time <= <to>ms`` (an absolute range);
- ``$__interval``: range / max data points, rounded up to Grafana's steps, never below
  the data source's minimum interval (``timeInterval``, 10 s in our provisioning);
- ``$__range_ms``;
- a variable: one value regex-escaped, several as ``(a|b)``, All with a custom all value
  passed as it is (``.*``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ALL = "$__all"
MIN_INTERVAL_MS = 10_000
DEFAULT_MAX_DATA_POINTS = 1_000

# Grafana's rangeutil roundInterval: (below this many ms, use this interval).
_ROUNDING: tuple[tuple[int, int], ...] = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1_500, 1_000),
    (3_500, 2_000),
    (7_500, 5_000),
    (12_500, 10_000),
    (17_500, 15_000),
    (25_000, 20_000),
    (45_000, 30_000),
    (90_000, 60_000),
    (180_000, 120_000),
    (450_000, 300_000),
    (1_050_000, 600_000),
    (1_500_000, 900_000),
    (2_000_000, 1_200_000),
    (2_700_000, 1_800_000),
    (5_400_000, 3_600_000),
    (9_000_000, 7_200_000),
    (16_200_000, 10_800_000),
    (32_400_000, 21_600_000),
    (86_400_000, 43_200_000),
    (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000),
    (3_628_800_000, 2_592_000_000),
)
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def round_interval(interval_ms: int) -> int:
    """Grafana's nice interval for a raw one."""
    for below, chosen in _ROUNDING:
        if interval_ms < below:
            return chosen
    return 31_536_000_000


def interval_text(interval_ms: int) -> str:
    """An InfluxQL duration literal: 20s, 30m, 1h, 1d, 1w, 500ms."""
    for unit_ms, unit in ((604_800_000, "w"), (86_400_000, "d"), (3_600_000, "h"), (60_000, "m")):
        if interval_ms % unit_ms == 0:
            return f"{interval_ms // unit_ms}{unit}"
    if interval_ms % 1000 == 0:
        return f"{interval_ms // 1000}s"
    return f"{interval_ms}ms"


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def duration_ms(text: str) -> int:
    """``5m`` -> 300000 (a panel's min interval); ValueError for anything else."""
    match = _DURATION.fullmatch(text.strip().lstrip(">"))
    if not match:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def grafana_interval_ms(
    range_ms: int, max_data_points: int = DEFAULT_MAX_DATA_POINTS, min_ms: int = MIN_INTERVAL_MS
) -> int:
    """``$__interval`` in ms for a range, as Grafana computes it."""
    return max(round_interval(max(range_ms // max(max_data_points, 1), 1)), min_ms)


def regex_escape(value: str) -> str:
    """Grafana's escapeRegex of one value."""
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def format_variable(value: str | Sequence[str], all_value: str | None) -> str:
    """A variable's value as Grafana's InfluxDB data source writes it into a regex."""
    if isinstance(value, str):
        if value == ALL and all_value is not None:
            return all_value
        return regex_escape(value)
    values = list(value)
    if values == [ALL] and all_value is not None:
        return all_value
    if len(values) == 1:
        return regex_escape(values[0])
    return "(" + "|".join(regex_escape(v) for v in values) + ")"


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeRange:
    """An absolute time range, epoch milliseconds."""

    from_ms: int
    to_ms: int

    @property
    def range_ms(self) -> int:
        """Its length."""
        return self.to_ms - self.from_ms


@dataclass(slots=True, kw_only=True)
class Interpolator:
    """Fills queries for one time range and one selection of the board's variables."""

    time_range: TimeRange
    values: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    all_values: Mapping[str, str] = field(default_factory=dict)
    max_data_points: int = DEFAULT_MAX_DATA_POINTS
    # A panel's "Min interval" replaces the data source's.
    min_interval_ms: int = MIN_INTERVAL_MS

    def interval_ms(self) -> int:
        """``$__interval`` in milliseconds."""
        return grafana_interval_ms(
            self.time_range.range_ms, self.max_data_points, self.min_interval_ms
        )

    def fill(self, query: str) -> str:
        """The query with macros and variables replaced; unknown variables raise KeyError."""
        tr = self.time_range
        text = query.replace("$timeFilter", f"time >= {tr.from_ms}ms and time <= {tr.to_ms}ms")
        text = text.replace("$__interval_ms", str(self.interval_ms()))
        text = text.replace("$__interval", interval_text(self.interval_ms()))
        text = text.replace("$__range_ms", str(tr.range_ms))

        def variable(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in self.values:
                raise KeyError(f"variable ${name} has no value")
            return format_variable(self.values[name], self.all_values.get(name))

        return _VARIABLE.sub(variable, text)


def board_targets(
    board: Mapping[str, Any],
) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """Every (panel, target) of a board's JSON, rows' nested panels included."""
    for panel in board.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []) or []:
                yield inner, target


def board_variables(board: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The board's template variables."""
    templating = board.get("templating") or {}
    return list(templating.get("list", []))


def select_columns(query: str) -> list[str]:
    """Column names the outer SELECT produces (``AS "x"`` or a bare ``"x"``)."""
    body = query.strip()
    if not body.upper().startswith("SELECT "):
        return []
    depth, start, items = 0, len("SELECT "), []
    index = start
    while index < len(body):
        char = body[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and body.startswith(" FROM ", index):
            items.append(body[start:index])
            break
        elif depth == 0 and char == ",":
            items.append(body[start:index])
            start = index + 1
        index += 1
    names = []
    for item in items:
        alias = re.search(r'\bAS\s+"([^"]+)"', item)
        bare = re.fullmatch(r'\s*"([^"]+)"\s*', item)
        if alias:
            names.append(alias.group(1))
        elif bare:
            names.append(bare.group(1))
    return names
