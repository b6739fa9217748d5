"""Run a benchmark the way a user does (``python -m bench.<name> ...``) and read its result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str, timeout_s: float = 240) -> tuple[list[str], dict[str, Any]]:
    """Its stdout lines and its last line's JSON; fails with the end of stderr if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    return lines, result
