"""The agent bench runs end to end at a tiny scale and ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "agent.py"


def test_bench_agent_tiny_scale() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--devices",
            "12",
            "--servers",
            "2",
            "--interval",
            "0.5",
            "--seconds",
            "2",
        ],
        # A closed stdin makes multiprocessing's spawn hand fd 0 to a pipe and hang.
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["devices"] == 12
    assert last["late_polls"] == 0
    assert last["cycle_p99_ms"] > 0
    assert 0 < last["cpu_pct"] < 100
    assert "agent, 12 devices" in result.stdout
