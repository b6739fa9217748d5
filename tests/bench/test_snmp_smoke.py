"""Smoke run of bench/snmp.py at tiny scale (20 APs, 2 controllers), as the user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_snmp_bench_quick_ends_with_its_json_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.snmp", "--quick"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) == {
        "targets",
        "cycle_s",
        "p99_target_ms",
        "agent_cpu_pct",
        "netsnmp_cycle_s",
    }
    assert result["targets"] == 22
    assert result["cycle_s"] > 0
    assert result["netsnmp_cycle_s"] > 0
    assert 0 < result["agent_cpu_pct"] < 100
    # One target in 50 is silent, and at least one: exactly one fails each way.
    table = "\n".join(lines)
    assert "22 (1)" in table
    failed = next(line for line in lines if line.startswith("failed targets"))
    assert failed.split()[-2:] == ["1", "1"]
    # Through the agent and the broker, every answering target delivered each cycle.
    late = next(line for line in lines if line.startswith("answering targets late"))
    assert late.split()[-1] == "0"
