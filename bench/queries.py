"""Every board's queries over 30 days of one city's simulated data, raw and rolled up.

Starts its own Mosquitto + InfluxDB (``bench_stack.BenchStack``; ``stack up`` creates the
rollup policies and continuous queries), writes the simulated city (``--scale`` of
Semarang's device counts, at their reporting rates) in bulk, runs the rollups' SELECT INTO
for the whole window day by day (what the continuous queries do as time passes), then
runs each board's queries as Grafana fills them for the last 24 hours (raw policy) and the
last 30 days (``rollup_1h``). Reference: a trivial query's time in the same run.

``--previews DIR`` also draws each board's 24-hour view to DIR/<uid>.png.
Last line: ``{"panels": N, "p99_query_ms_24h": X, "p99_query_ms_30d": Y, ...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import httpx

from bench.bench_stack import BenchStack
from dashboards.grafana.board_preview import render_board
from dashboards.grafana.board_queries import PanelResult, load_boards, run_board
from dashboards.grafana.city_figures import load_figures
from dashboards.grafana.demo_points import SEMARANG, city_lines
from dashboards.grafana.grafana_interpolation import TimeRange
from hub.influx_rollups import ROLLUP_LEVELS, setup_for

DAY_MS = 86_400_000
BATCH = 5_000


def write_city(url: str, database: str, policy: str, lines_iter: object) -> int:
    """Post the points in batches of 5,000 lines, gzip-free (the InfluxDB advice)."""
    count = 0
    batch: list[str] = []
    with httpx.Client(timeout=120) as client:

        def post() -> None:
            resp = client.post(
                f"{url}/write",
                params={"db": database, "rp": policy, "precision": "ms"},
                content="\n".join(batch).encode(),
            )
            if resp.status_code != 204:
                raise SystemExit(f"write refused: {resp.status_code} {resp.text[:300]}")

        for text in lines_iter:  # type: ignore[attr-defined]
            batch.append(text)
            if len(batch) >= BATCH:
                post()
                count += len(batch)
                batch = []
        if batch:
            post()
            count += len(batch)
    return count


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
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    size = SEMARANG.scaled(args.scale)
    boards = load_boards()
    with BenchStack() as stack:
        settings = stack.settings
        db, raw = settings.influx.database, settings.influx.retention_policy
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - int(args.days * DAY_MS)
        began = time.perf_counter()
        points = write_city(
            settings.influx.url, db, raw, city_lines(size, start_ms=start_ms, end_ms=end_ms)
        )
        write_s = time.perf_counter() - began
        print(f"wrote {points:,} points ({size}) in {write_s:.1f} s", flush=True)
        # A backfill of hours of a city is a heavy SELECT INTO: a long timeout, 6-hour windows
        # (a continuous query does the same for 10 minutes every minute).
        setup = setup_for(settings, timeout_s=600)
        began = time.perf_counter()
        # The 1-minute policy only serves ranges up to 7 days, so only the last 7 days are
        # rolled up to it; the hour policy is computed straight from raw (same aggregates,
        # one pass over the points instead of two).
        window = DAY_MS // 4
        minute, hour = ROLLUP_LEVELS
        passes = (
            (minute, max(start_ms, end_ms - 7 * DAY_MS)),
            (dataclasses.replace(hour, source=None), start_ms),
        )
        for level, first_ms in passes:
            slot = first_ms - first_ms % window
            while slot <= end_ms:
                for measurement in setup.fields:
                    setup.backfill(measurement, level, slot, slot + window)
                slot += window
        print(f"rolled up in {time.perf_counter() - began:.1f} s", flush=True)
        # The panels that show "now" read the last minutes: the rollups took a while, so
        # the city's last 16 minutes are written again up to this moment.
        tail_end = int(time.time() * 1000)
        points += write_city(
            settings.influx.url,
            db,
            raw,
            city_lines(size, start_ms=tail_end - 16 * 60_000, end_ms=tail_end),
        )
        end_ms = tail_end
        reference = []
        for _ in range(10):
            began = time.perf_counter()
            stack.influx.query('SELECT last("level_m") FROM "flood"', database=db)
            reference.append((time.perf_counter() - began) * 1000)
        reference_ms = statistics.median(reference)
        timings: dict[str, list[float]] = {"24h": [], "30d": []}
        slowest: dict[str, tuple[float, str]] = {}
        empty: list[str] = []
        spans = {"24h": DAY_MS, "30d": 30 * DAY_MS}
        panels = 0
        for span, length in spans.items():
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
                    "days": args.days,
                    "scale": args.scale,
                    "empty_panels": len(empty),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
