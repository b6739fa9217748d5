"""Smoke run of bench/cctv.py at tiny size: its JSON line has every figure, and they are sane."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "decode_fps_per_core",
    "ffmpeg_decode_fps_per_core",
    "analytics_fps_per_core",
    "onvif_checks_per_min",
    "cores_for_10700",
    "agent_rss_mb_for_10700",
}


def test_cctv_bench_quick() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cctv", "--quick", "--json-only"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(figures) == KEYS
    assert all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in figures.values())
    # The plan needs at least the ONVIF share of a core and cannot need a core per camera.
    assert 0.1 < figures["cores_for_10700"] < 10_700
