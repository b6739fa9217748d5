"""The city bench at a tiny size: a small fleet for 3 s, every part in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.demo.conftest import small_fleet

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "devices",
    "msg_per_s",
    "cpu_cores_total",
    "cpu_cores_hub",
    "p99_ms",
    "points_missing",
    "disk_gb_per_30d",
}


def test_city_bench_runs_small_and_loses_nothing(tmp_path: Path) -> None:
    """The last line is the JSON summary; every point the simulators produced is written."""
    fleet = small_fleet(tmp_path / "fleet.json")
    argv = [sys.executable, "-m", "bench.city", "--scale", "sample", "--fleet-file", str(fleet)]
    argv += ["--duration-s", "3", "--warmup-s", "0", "--idle-s", "1", "--speed", "60"]
    argv += ["--probes", "2"]
    done = subprocess.run(
        argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) == KEYS
    assert summary["devices"] == len(json.loads(fleet.read_text())["devices"])
    assert summary["points_missing"] == 0
    assert summary["cpu_cores_total"] >= summary["cpu_cores_hub"] > 0
    assert summary["p99_ms"] is not None
    assert summary["p99_ms"] > 0
    # Points were produced (and written) for every family of the fleet.
    for family in ("flood", "gps", "ble"):
        line = next(row for row in done.stderr.splitlines() if f"points {family}:" in row)
        produced, written = (int(n.replace(",", "")) for n in line.split("│")[2].split("/"))
        assert produced == written > 0, line
