"""What the rollup continuous queries cost at a city's full size: can they keep up?

Starts its own Mosquitto + InfluxDB (``bench_stack.BenchStack``), writes the last
``--hours`` of the simulated city (``--scale`` of Semarang, 1 = full size) in bulk, and
runs each level's SELECT INTO over one continuous-query window ending now, as InfluxDB
runs it (``RESAMPLE EVERY <run_every> FOR <resample_for>``): the 1-minute level from raw, the
1-hour level from the 1-minute policy (first filled for the whole written span). Each
statement runs ``--repeats`` times; its median is its cost per run.

A level's *load* is its cost per run times its runs per hour, over an hour: the share of
one core its queries keep busy. The same statements with every field of every family's
table (``rollup_metrics`` ignored), and the 1-minute level run every minute over 5 (the
schedule before), are timed in the same run as references, with a trivial query's time.
Target: all levels together under 0.25 of one core.

Last line: ``{"cq_load_cores": X, "cq_load_cores_all_fields": Y, ...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from collections.abc import Mapping

from bench.bench_stack import BenchStack, reference_query_ms
from bench.bulk_write import Target, write_city
from dashboards.grafana.demo_points import SEMARANG
from drivers.framework import discover_families
from hub.influx_rollups import (
    ROLLUP_LEVELS,
    Kind,
    RollupLevel,
    RollupSetup,
    measurement_fields,
    setup_for,
)
from hub.settings import Settings

HOUR_MS = 3_600_000
TARGET_CORES = 0.25
_UNITS_MS = {"s": 1_000, "m": 60_000, "h": HOUR_MS, "d": 24 * HOUR_MS}


def duration_ms(text: str) -> int:
    """``5m`` -> 300000 (the rollup levels' single-unit durations)."""
    return int(text[:-1]) * _UNITS_MS[text[-1]]


@dataclasses.dataclass(frozen=True, slots=True)
class LevelCost:
    """One level's statements over one CQ window: seconds per run, by measurement."""

    level: RollupLevel
    by_measurement: Mapping[str, float]

    @property
    def per_run_s(self) -> float:
        """All measurements' statements of one run."""
        return sum(self.by_measurement.values())

    @property
    def load_cores(self) -> float:
        """Share of one core the level's queries keep busy (runs per hour x cost / hour)."""
        return self.per_run_s / (duration_ms(self.level.run_every) / 1000)


def time_level(setup: RollupSetup, level: RollupLevel, end_ms: int, repeats: int) -> LevelCost:
    """Median seconds of each measurement's statement over the window before ``end_ms``."""
    every = duration_ms(level.run_every)
    stop = end_ms - end_ms % every
    start = stop - duration_ms(level.resample_for)
    costs: dict[str, float] = {}
    for measurement in setup.fields:
        runs = []
        for _ in range(repeats):
            began = time.perf_counter()
            setup.backfill(measurement, level, start, stop)
            runs.append(time.perf_counter() - began)
        costs[measurement] = statistics.median(runs)
    return LevelCost(level, costs)


def every_field() -> dict[str, dict[str, Kind]]:
    """The rollup fields as they were before ``rollup_metrics``: every row of each table."""
    families = {
        name: dataclasses.replace(family, rollup_metrics=None)
        for name, family in discover_families().items()
    }
    return measurement_fields(families)


def fill_minutes(setup: RollupSetup, start_ms: int, end_ms: int) -> float:
    """The 1-minute policy for the whole span (the hour level reads it); seconds taken."""
    minute = ROLLUP_LEVELS[0]
    began = time.perf_counter()
    for measurement in setup.fields:
        setup.backfill(measurement, minute, start_ms, end_ms)
    return time.perf_counter() - began


def measure(
    settings: Settings,
    fields: Mapping[str, Mapping[str, Kind]],
    start_ms: int,
    end_ms: int,
    repeats: int,
) -> tuple[list[LevelCost], float]:
    """Fill the minutes, then time each level's window; (costs, fill seconds)."""
    setup = setup_for(settings, timeout_s=3600)
    setup.fields = fields
    try:
        fill_s = fill_minutes(setup, start_ms, end_ms)
        return [time_level(setup, level, end_ms, repeats) for level in ROLLUP_LEVELS], fill_s
    finally:
        setup.client.close()


def report(name: str, costs: list[LevelCost]) -> None:
    """One line per level, with its three heaviest measurements."""
    for cost in costs:
        heavy = sorted(cost.by_measurement.items(), key=lambda kv: -kv[1])[:3]
        print(
            f"{name}: {cost.level.policy} (every {cost.level.run_every} over "
            f"{cost.level.resample_for}): {cost.per_run_s:.2f} s per run, "
            f"{cost.load_cores:.3f} cores; heaviest: "
            + ", ".join(f"{m} {s:.2f} s" for m, s in heavy),
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """Write the city's last hours, time the continuous queries' windows, print the load."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=2.5, help="hours of data (2.5)")
    parser.add_argument("--scale", type=float, default=1.0, help="share of Semarang (1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each statement (3)")
    parser.add_argument("--writers", type=int, default=3, help="writer processes (3)")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    size = SEMARANG.scaled(args.scale)
    with BenchStack() as stack:
        settings = stack.settings
        db, raw = settings.influx.database, settings.influx.retention_policy
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - int(args.hours * HOUR_MS)
        print(f"writing {size}, the last {args.hours} h", file=sys.stderr, flush=True)
        points, write_s = write_city(
            Target(settings.influx.url, db, raw),
            size,
            start_ms=start_ms,
            end_ms=end_ms,
            workers=args.writers,
        )
        print(f"wrote {points:,} points in {write_s:.1f} s", flush=True)
        reference_ms = reference_query_ms(stack.influx, db)
        all_costs, all_fill = measure(settings, every_field(), start_ms, end_ms, args.repeats)
        report("every field", all_costs)
        costs, fill_s = measure(settings, measurement_fields(), start_ms, end_ms, args.repeats)
        report("rollup_metrics", costs)
        # The schedule before: every minute over the last 5 (the same fields).
        before = dataclasses.replace(ROLLUP_LEVELS[0], run_every="1m", resample_for="5m")
        setup = setup_for(settings, timeout_s=3600)
        try:
            old_schedule = time_level(setup, before, end_ms, args.repeats)
        finally:
            setup.client.close()
        report("every minute over 5m", [old_schedule])
        print(
            f"1-minute policy for {args.hours} h: {fill_s:.1f} s "
            f"(every field: {all_fill:.1f} s); reference: a one-point query "
            f"{reference_ms:.1f} ms (median of 10)"
        )
        load = sum(c.load_cores for c in costs)
        load_all = sum(c.load_cores for c in all_costs)
        verdict = "keeps up" if load <= TARGET_CORES else "OVER TARGET"
        print(f"continuous queries: {load:.3f} cores (target <= {TARGET_CORES}): {verdict}")
        result: dict[str, object] = {
            "cq_load_cores": round(load, 4),
            "cq_load_cores_all_fields": round(load_all, 4),
            "cq_1m_load_cores_every_minute": round(old_schedule.load_cores, 4),
            "reference_query_ms": round(reference_ms, 2),
            "points": points,
            "hours": args.hours,
            "scale": args.scale,
        }
        for cost in costs:
            result[f"{cost.level.policy}_s_per_run"] = round(cost.per_run_s, 3)
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
