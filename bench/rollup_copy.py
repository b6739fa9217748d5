"""Older days of the hour rollups as copies of one rolled-up day, for bench/queries.py.

Rolling up 30 raw days of Semarang at full size takes about two hours on two cores
(docs/grafana.md, "Speed"), longer than a benchmark should. The 30-day view reads only
``rollup_1h``, and a query's cost there depends on its series and points, not on their
values: so ``--raw-days 1`` writes and rolls up one real day and copies its hour rollups
back day after day (the same series, the same points per day, shifted by whole days).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from bench.bulk_write import Target, post_lines
from hub.influx_rollups import Kind
from hub.influxql import InfluxQL
from hub.ingest.line_protocol import escape_tag, format_field, tag_prefix

DAY_MS = 86_400_000
# Read back two hours at a time: a whole day of the cameras is ~100 MB of JSON.
READ_SPAN_MS = 2 * 3_600_000


INFLUX_KINDS: Mapping[str, Kind] = {
    "float": "number",
    "integer": "integer",
    "boolean": "boolean",
    "string": "string",
}


def stored_kinds(influx: InfluxQL, database: str, measurement: str) -> dict[str, Kind]:
    """Each rolled-up field's type as InfluxDB holds it (a max of an integer stays one)."""
    series = influx.query(f'SHOW FIELD KEYS FROM "rollup_1h"."{measurement}"', database=database)
    return {
        str(row[0]): INFLUX_KINDS.get(str(row[1]), "number") for s in series for row in s.values
    }


def _field(value: Any, kind: Kind) -> str:
    # JSON gives 3 for 3.0: the stored type says how to write it (a conflict is refused),
    # and the hub's format_field writes every number as a float.
    if kind == "integer":
        return f"{int(value)}i"
    if kind == "number":
        return repr(float(value))
    if kind == "boolean":
        return format_field(bool(value))
    return format_field(str(value))


def _day_lines(
    influx: InfluxQL,
    database: str,
    measurement: str,
    kinds: Mapping[str, Kind],
    day_start_ms: int,
    shifts: list[int],
) -> Iterator[str]:
    """The rolled-up day's points, once per shift (milliseconds back)."""
    for start in range(day_start_ms, day_start_ms + DAY_MS, READ_SPAN_MS):
        statement = (
            f'SELECT * FROM "{database}"."rollup_1h"."{measurement}" '
            f"WHERE time >= {start}ms AND time < {start + READ_SPAN_MS}ms GROUP BY *"
        )
        for series in influx.query(statement, database=database):
            names = [escape_tag(name) for name in series.columns[1:]]
            found = [kinds.get(name, "number") for name in series.columns[1:]]
            head = tag_prefix(measurement, series.tags)
            for row in series.values:
                body = ",".join(
                    f"{name}={_field(value, kind)}"
                    for name, kind, value in zip(names, found, row[1:], strict=True)
                    if value is not None
                )
                if not body:
                    continue
                for shift in shifts:
                    yield f"{head} {body} {int(row[0]) - shift}"


def copy_hour_rollups(
    influx: InfluxQL,
    target: Target,
    fields: Mapping[str, Mapping[str, Kind]],
    *,
    day_start_ms: int,
    copies: int,
    workers: int = 3,
) -> int:
    """Copy ``rollup_1h`` of the day at ``day_start_ms`` to the ``copies`` days before it."""
    hour_target = Target(target.url, target.database, "rollup_1h", target.batch_lines)
    # One job per measurement and block of days, so the writers share the work.
    blocks = [list(range(first, min(first + 5, copies + 1))) for first in range(1, copies + 1, 5)]

    def job(measurement: str, days: list[int]) -> int:
        kinds = stored_kinds(influx, target.database, measurement)
        lines = _day_lines(
            influx, target.database, measurement, kinds, day_start_ms, [d * DAY_MS for d in days]
        )
        with httpx.Client(timeout=300) as client:
            return post_lines(client, hour_target, lines)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(job, m, days) for m in fields for days in blocks]
        return sum(f.result() for f in futures)
