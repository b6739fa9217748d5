"""Smoke run of the alert benchmark at tiny scale: its phases run and its JSON line is sane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEYS = {"page_p50_ms", "page_p99_ms", "rules", "evals_per_s", "ingest_slowdown_pct"}


def test_alert_bench_quick_run_ends_with_its_json_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.alerts", "--quick"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) >= KEYS
    assert result["rules"] == 100
    assert result["evals_per_s"] > 0
    assert result["readings"] == 600
    # Every trial's page reached the webhook (a lost one would have timed out the run).
    assert result["page_trials"] == 3
    assert 0 < result["page_p50_ms"] <= result["page_p99_ms"]
    assert result["ingest_slowdown_pct"] is None  # --quick skips the two ingest runs
