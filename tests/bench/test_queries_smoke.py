"""Smoke run of the board query benchmark at tiny size, as the user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_query_bench_times_every_board_raw_and_rolled_up() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.queries",
            "--days",
            "0.1",
            "--scale",
            "0.002",
            "--repeats",
            "1",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert {"panels", "p99_query_ms_24h", "p99_query_ms_30d"} <= set(result)
    assert result["panels"] >= 60
    assert result["p99_query_ms_24h"] > 0
    assert result["p99_query_ms_30d"] > 0
    assert result["points"] > 1000
    assert any(line.startswith("reference:") for line in lines)


def test_query_bench_copies_the_older_days_hour_rollups() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.queries",
            "--days",
            "2",
            "--raw-days",
            "0.1",
            "--scale",
            "0.002",
            "--repeats",
            "1",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["raw_days"] == 0.1
    copied = [line for line in lines if line.startswith("copied the first raw day's")]
    assert copied, proc.stdout
    assert "to the 2 days before" in copied[0]
    points = int(copied[0].split(": ")[1].split(" points")[0].replace(",", ""))
    assert points > 100
