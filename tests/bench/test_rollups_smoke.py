"""Smoke run of the rollup cost benchmark at tiny size, as the user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_rollup_bench_times_each_level_against_every_field() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.rollups",
            "--hours",
            "2.2",
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
    assert result["points"] > 1000
    assert result["rollup_1m_s_per_run"] > 0
    assert result["rollup_1h_s_per_run"] > 0
    # Tiny data: the loads may round to 0; they are there, and the old schedule's is there.
    assert result["cq_load_cores"] >= 0
    assert result["cq_load_cores_all_fields"] >= 0
    assert "cq_1m_load_cores_every_minute" in result
    assert any(line.startswith("every field: rollup_1m") for line in lines)
    assert any(line.startswith("continuous queries:") for line in lines)
