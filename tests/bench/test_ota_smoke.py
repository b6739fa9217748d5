"""Smoke run of bench/ota.py at tiny scale (10 devices, a 64 KiB image), as the user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_ota_bench_quick_installs_every_device_and_ends_with_its_json_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ota", "--quick"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) == {"devices", "image_kib", "campaign_s", "broker_mib_per_s", "failed"}
    assert result["devices"] == 10
    assert result["image_kib"] == 64
    assert result["failed"] == 0
    assert result["campaign_s"] > 0
    assert result["broker_mib_per_s"] > 0
    table = "\n".join(lines)
    assert "campaign bench: done" in table
    assert "firmware_version in the registry            10" in table
    assert "reference: 1 pub -> 1 sub MiB/s" in table
