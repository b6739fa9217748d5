"""Smoke run of bench/snmp.py at tiny scale (20 APs, 2 controllers), as the user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ISSUE_KEYS = {"targets", "cycle_s", "p99_target_ms", "agent_cpu_pct", "netsnmp_cycle_s"}


def row(lines: list[str], start: str) -> list[str]:
    """The words of the table's first row starting with ``start``."""
    return next(line for line in lines if line.strip().startswith(start)).split()


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
    assert set(result) >= ISSUE_KEYS
    assert {"first_cycle_s", "late_polls", "late_after_s", "silent", "slow"} <= set(result)
    assert result["targets"] == 22
    # One target in 50 is silent (at least one), one in 20 slow at --quick.
    assert (result["silent"], result["slow"]) == (1, 1)
    assert "22 (1, 1)" in "\n".join(lines)
    # A burst is one poll of every target: far shorter than the 4 s apart they start.
    assert 0 < result["cycle_s"] < 4
    assert 0 < result["first_cycle_s"] < 4
    assert result["netsnmp_cycle_s"] > 0
    assert 0 < result["agent_cpu_pct"] < 100
    # The silent and the slow targets delay no other target's reading past its slot.
    assert result["late_polls"] == 0
    assert row(lines, "spread: others' late readings")[-2:] == ["0;", "0"]
    assert result["slow_worst_late_s"] is not None  # the slow one delivered too
    # Exactly the silent target fails each way, every answering one delivers every burst.
    assert row(lines, "failed targets")[-2:] == ["1", "1"]
    assert row(lines, "answering targets without")[-2:] == ["0;", "0"]
