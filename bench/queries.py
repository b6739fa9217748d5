"""Every board's queries over 30 days of one city's simulated data, raw and rolled up.

Starts its own Mosquitto + InfluxDB (``bench_stack.BenchStack``; ``stack up`` creates the
rollup policies and continuous queries), writes the simulated city (``--scale`` of
Semarang's device counts, at their reporting rates) in bulk, runs the rollups' SELECT INTO
for the whole window day by day (what the continuous queries do as time passes), then
runs each board's queries as Grafana fills them for the last 24 hours (exactly a day:
``rollup_1m``, the coarse panels ``rollup_1h``) and the last 30 days (``rollup_1h``).
Reference: a trivial query's time in the same run. ``--per-panel`` prints every panel's
slowest run.

``--previews DIR`` also draws each board's 24-hour view to DIR/<uid>.png.
Last line: ``{"panels": N, "p99_query_ms_24h": X, "p99_query_ms_30d": Y, ...}``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import math
import queue
import statistics
import sys
import time
from pathlib import Path

from bench.bench_stack import BenchStack, reference_query_ms
from bench.bulk_write import Target, write_city
from bench.rollup_copy import copy_hour_rollups
from dashboards.grafana.board_preview import render_board
from dashboards.grafana.board_queries import PanelResult, load_boards, run_board
from dashboards.grafana.city_figures import load_figures
from dashboards.grafana.demo_points import SEMARANG
from dashboards.grafana.grafana_interpolation import TimeRange
from hub.influx_rollups import (
    ROLLUP_LEVELS,
    RollupLevel,
    RollupSetup,
    measurement_fields,
    setup_for,
)
from hub.settings import Settings

DAY_MS = 86_400_000


@dataclasses.dataclass
class RollupCost:
    """What the rollups' SELECT INTO cost, per level and per measurement."""

    seconds: float = 0.0
    days: dict[str, float] = dataclasses.field(default_factory=dict)
    by_job: dict[str, float] = dataclasses.field(default_factory=dict)

    def per_day(self, policy: str) -> float:
        """Seconds of one day of the city at one level."""
        return self.by_job.get(policy, 0.0) / max(self.days.get(policy, 0.0), 1e-9)


def roll_up(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    *,
    workers: int,
    minute_days: float,
    window_ms: int = DAY_MS,
) -> RollupCost:
    """The rollups' SELECT INTO over the window, one statement per measurement and day.

    What the continuous queries do as time passes, for data written at once. The hour
    policy is computed straight from raw (same aggregates as from the minutes, one pass over
    the points instead of two) for the whole window; the 1-minute policy, which serves
    ranges from 1 to 7 days that this benchmark does not query, only for the last
    ``minute_days`` (its cost per day is reported). ``workers`` statements run at once
    (InfluxDB runs each mostly on one core). A statement covers one day: one shard.
    """
    minute, hour = ROLLUP_LEVELS
    passes = (
        (dataclasses.replace(hour, source=None), start_ms),
        (minute, max(start_ms, end_ms - int(minute_days * DAY_MS))),
    )
    setups = [setup_for(settings, timeout_s=3600) for _ in range(workers)]
    cost = RollupCost()
    jobs: list[tuple[str, RollupLevel, int, int]] = []
    for level, first_ms in passes:
        cost.days[level.policy] = (end_ms - first_ms) / DAY_MS
        slot = first_ms - first_ms % window_ms
        while slot <= end_ms:
            # Never before the data: a window reaching back past it would only cost time.
            jobs += [(m, level, max(slot, first_ms), slot + window_ms) for m in setups[0].fields]
            slot += window_ms
    free: queue.SimpleQueue[RollupSetup] = queue.SimpleQueue()
    for setup in setups:
        free.put(setup)

    def run(job: tuple[str, RollupLevel, int, int]) -> None:
        measurement, level, first, last = job
        setup = free.get()
        began = time.perf_counter()
        try:
            setup.backfill(measurement, level, first, last)
        finally:
            free.put(setup)
        took = time.perf_counter() - began
        for key in (level.policy, f"{level.policy} {measurement}"):
            cost.by_job[key] = cost.by_job.get(key, 0.0) + took

    began = time.perf_counter()
    last_print = began
    # In job order (day after day), so InfluxDB reads one shard after another.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(run, jobs), start=1):
            now = time.perf_counter()
            if now - last_print >= 15 or done == len(jobs):
                last_print = now
                eta = (now - began) / done * (len(jobs) - done)
                print(
                    f"  rollups: {done} of {len(jobs)} statements, {now - began:,.0f} s so far, "
                    f"ETA {eta:,.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    for setup in setups:
        setup.client.close()
    cost.seconds = time.perf_counter() - began
    return cost


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(0.99 * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=float, default=30.0, help="days of data (30)")
    parser.add_argument("--scale", type=float, default=0.02, help="share of Semarang (0.02)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each query (3)")
    parser.add_argument("--previews", type=Path, default=None, help="draw the boards here")
    parser.add_argument("--writers", type=int, default=3, help="writer processes (3)")
    parser.add_argument(
        "--rollup-workers", type=int, default=2, help="rollup statements at once (2)"
    )
    parser.add_argument(
        "--minute-days", type=float, default=1.0, help="days rolled up to 1 minute (1)"
    )
    parser.add_argument(
        "--raw-days",
        type=float,
        default=None,
        help="days written raw (default: all); the older days' hour rollups are copies of "
        "the first raw day's (bench/rollup_copy.py)",
    )
    parser.add_argument("--per-panel", action="store_true", help="print every panel's slowest run")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    size = SEMARANG.scaled(args.scale)
    boards = load_boards()
    with BenchStack() as stack:
        settings = stack.settings
        db, raw = settings.influx.database, settings.influx.retention_policy
        end_ms = int(time.time() * 1000)
        raw_days = args.days if args.raw_days is None else min(args.raw_days, args.days)
        copied_days = math.ceil(args.days - raw_days)
        start_ms = end_ms - int(raw_days * DAY_MS)
        target = Target(settings.influx.url, db, raw)
        print(f"writing {size} from {start_ms} to {end_ms} ms", file=sys.stderr, flush=True)
        points, write_s = write_city(
            target, size, start_ms=start_ms, end_ms=end_ms, workers=args.writers
        )
        print(
            f"wrote {points:,} points in {write_s:.1f} s ({points / write_s:,.0f} points/s, "
            f"{args.writers} writer processes)",
            flush=True,
        )
        rollups = roll_up(
            settings,
            start_ms,
            end_ms,
            workers=args.rollup_workers,
            minute_days=args.minute_days,
        )
        rollup_s = rollups.seconds
        print(f"rolled up in {rollup_s:.1f} s ({args.rollup_workers} statements at once)")
        if copied_days:
            began = time.perf_counter()
            day_start = start_ms + (-start_ms) % 3_600_000  # its first whole hour
            copied = copy_hour_rollups(
                stack.influx,
                target,
                measurement_fields(),
                day_start_ms=day_start,
                copies=copied_days,
                workers=args.writers,
            )
            print(
                f"copied the first raw day's hour rollups to the {copied_days} days before: "
                f"{copied:,} points in {time.perf_counter() - began:.1f} s",
                flush=True,
            )
        for level in ROLLUP_LEVELS:
            heavy = sorted(
                (v, k) for k, v in rollups.by_job.items() if k.startswith(f"{level.policy} ")
            )[-3:]
            print(
                f"  {level.policy}: {rollups.by_job.get(level.policy, 0.0):.1f} statement-s "
                f"for {rollups.days.get(level.policy, 0.0):.1f} days, "
                f"{rollups.per_day(level.policy):.1f} s per day of the city; heaviest: "
                + ", ".join(f"{k.split()[1]} {v:.1f} s" for v, k in reversed(heavy)),
                flush=True,
            )
        points_rate = points / write_s
        reference_ms = reference_query_ms(stack.influx, db)
        timings: dict[str, list[float]] = {"24h": [], "30d": []}
        slowest: dict[str, tuple[float, str]] = {}
        # (span, board / panel) -> its slowest query's slowest run.
        slow: dict[tuple[str, str], float] = {}
        empty: list[str] = []
        spans = {"24h": DAY_MS, "30d": 30 * DAY_MS}
        panels = 0
        for span, length in spans.items():
            # The panels that show "now" read the last minutes: the rollups (and the 24-hour
            # pass, before the 30-day one) took a while, so the city's last 16 minutes are
            # written again up to this moment before each pass.
            end_ms = int(time.time() * 1000)
            points += write_city(
                target, size, start_ms=end_ms - 16 * 60_000, end_ms=end_ms, workers=args.writers
            )[0]
            tr = TimeRange(from_ms=end_ms - length, to_ms=end_ms)
            for uid, board in boards.items():
                results: list[PanelResult] = []
                for repeat in range(args.repeats):
                    results = list(run_board(board, stack.influx, db, tr))
                    if repeat == 0 and span == "24h":
                        panels += len({id(r.panel) for r in results})
                    for result in results:
                        timings[span].append(result.elapsed_ms)
                        title = f"{uid} / {result.panel.get('title')}"
                        if result.elapsed_ms > slowest.get(span, (0.0, ""))[0]:
                            slowest[span] = (result.elapsed_ms, title)
                        key = (span, title)
                        slow[key] = max(slow.get(key, 0.0), result.elapsed_ms)
                empty += [f"{span} {p}" for r in results for p in r.problems()]
                if args.previews is not None and span == "24h":
                    figures = load_figures()
                    render_board(
                        board, results, args.previews / f"{uid}.png", gazetteer=figures.kecamatan
                    )
        for span, values in timings.items():
            ms, title = slowest[span]
            print(
                f"{span}: {len(values)} query runs, median {statistics.median(values):.1f} ms, "
                f"p99 {p99(values):.1f} ms, slowest {ms:.0f} ms ({title})"
            )
        print(f"reference: a one-point query takes {reference_ms:.1f} ms (median of 10)")
        over = [v for v in timings["30d"] if v > 1000]
        print(f"30-day queries over 1 s: {len(over)} (target: none)")
        for (span, title), ms in sorted(slow.items()):
            if ms > 1000:
                print(f"over 1 s: {span} {title}: {ms:.0f} ms")
        if args.per_panel:
            print("per panel, slowest of the runs (ms): 24 h, 30 d")
            titles = sorted({title for _, title in slow}, key=lambda t: -slow.get(("30d", t), 0))
            for title in titles:
                day, month = slow.get(("24h", title), 0.0), slow.get(("30d", title), 0.0)
                print(f"  {day:7.0f} {month:7.0f}  {title}")
        for problem in empty[:10]:
            print(f"empty: {problem}")
        print(
            json.dumps(
                {
                    "panels": panels,
                    "p99_query_ms_24h": round(p99(timings["24h"]), 1),
                    "p99_query_ms_30d": round(p99(timings["30d"]), 1),
                    "max_query_ms_30d": round(slowest["30d"][0], 1),
                    "reference_query_ms": round(reference_ms, 2),
                    "points": points,
                    "write_points_per_s": round(points_rate),
                    "write_s": round(write_s, 1),
                    "rollup_s": round(rollup_s, 1),
                    "rollup_1h_s_per_day": round(rollups.per_day("rollup_1h"), 1),
                    "rollup_1m_s_per_day": round(rollups.per_day("rollup_1m"), 1),
                    "days": args.days,
                    "raw_days": raw_days,
                    "scale": args.scale,
                    "empty_panels": len(empty),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
