"""Smoke run of the WAL open benchmark at tiny scale, as the user runs it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WAL_KEYS = {
    "wal_bytes",
    "segments",
    "records",
    "open_s_median",
    "open_after_crash_s_median",
    "listdir_stat_s",
    "full_read_s",
    "full_read_mb_s",
    "speedup_vs_full_read",
    "repeats",
}


def test_wal_open_bench_reports_every_figure_and_cleans_up(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.wal_open", "--quick", "--json-only", "--dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # --json-only: the JSON line alone
    result = json.loads(lines[-1])
    assert set(result) == WAL_KEYS
    for key, value in result.items():
        assert isinstance(value, int | float), f"{key} is {value!r}"
        assert math.isfinite(value), f"{key} = {value}"
        assert value > 0, f"{key} = {value}"
    assert result["wal_bytes"] >= 40 * 1024 * 1024
    assert result["segments"] >= 5
    assert list(tmp_path.iterdir()) == []  # its temp folder is gone
