"""The registry benchmark at tiny scale: it runs, and its last line is the JSON it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_registry_bench_runs_at_tiny_scale() -> None:
    rows = 150
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOTAHUB_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.registry", "--rows", str(rows), "--requests", "10"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert {"import_rows", "import_s", "api_p99_ms"} <= set(figures)
    assert figures["import_rows"] == rows
    assert figures["import_s"] > 0
    assert figures["api_p99_ms"] > 0
    # The NVRs (one per four RT cameras) are registered before the timed import.
    rt_cameras = rows * 10_293 // 10_700
    assert figures["devices_total"] == rows + (rt_cameras + 3) // 4
    assert figures["api_page_items"] >= 1
    assert any(line.startswith(f"import {rows} rows") for line in lines)
