"""The agent bench runs end to end at a tiny scale and ends with its JSON line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "agent.py"


def test_bench_agent_tiny_scale() -> None:
    args = ["--devices", "12", "--servers", "2", "--interval", "0.5", "--seconds", "2"]
    proc = subprocess.Popen(
        [sys.executable, str(BENCH), *args],
        # A closed stdin makes multiprocessing's spawn hand fd 0 to a pipe and hang.
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Its own process group, so a hang kills the servers and broker too and the
        # output (with the bench's watchdog stack dump) still reaches this report.
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"bench/agent.py hung; its stderr ends:\n{stderr[-4000:]}") from None
    assert proc.returncode == 0, stderr[-2000:]
    last = json.loads(stdout.strip().splitlines()[-1])
    assert last["devices"] == 12
    assert last["late_polls"] == 0
    assert last["cycle_p99_ms"] > 0
    assert 0 < last["cpu_pct"] < 100
    assert "agent, 12 devices" in stdout
