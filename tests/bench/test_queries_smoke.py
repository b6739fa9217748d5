"""Smoke run of the board query benchmark at tiny size, as the user runs it."""

from __future__ import annotations

from tests.bench.run_bench import run_bench

TINY = ("--scale", "0.002", "--repeats", "1")


def test_query_bench_times_every_board_raw_and_rolled_up() -> None:
    lines, result = run_bench("queries", "--days", "0.1", *TINY)
    assert {"panels", "p99_query_ms_24h", "p99_query_ms_30d"} <= set(result)
    assert result["panels"] >= 60
    assert result["p99_query_ms_24h"] > 0
    assert result["p99_query_ms_30d"] > 0
    assert result["points"] > 1000
    assert any(line.startswith("reference:") for line in lines)


def test_query_bench_copies_the_older_days_hour_rollups() -> None:
    lines, result = run_bench("queries", "--days", "2", "--raw-days", "0.1", *TINY)
    assert result["raw_days"] == 0.1
    copied = [line for line in lines if line.startswith("copied the first raw day's")]
    assert copied, lines
    assert "to the 2 days before" in copied[0]
    points = int(copied[0].split(": ")[1].split(" points")[0].replace(",", ""))
    assert points > 100
