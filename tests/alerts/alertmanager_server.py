"""A real Alertmanager (Debian's prometheus-alertmanager) with its own config, port and storage."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port

BINARY = "/usr/bin/prometheus-alertmanager"


def alertmanager_binary() -> str:
    """The binary; skipped without it only outside CI (in CI its absence fails the test)."""
    found = shutil.which("prometheus-alertmanager") or (BINARY if Path(BINARY).exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{BINARY} is missing in CI: apt-get install prometheus-alertmanager")
        pytest.skip(f"{BINARY} is not installed (apt-get install prometheus-alertmanager)")
    return found


@dataclass
class RunningAlertmanager:
    """An Alertmanager process and its API."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call of its v2 API, the JSON answer."""
        answer = httpx.request(method, f"{self.url}/api/v2{path}", timeout=10, **kwargs)
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts it holds (``GET /api/v2/alerts``)."""
        result: list[dict[str, Any]] = self.api("GET", "/alerts")
        return result


@contextmanager
def alertmanager(config: dict[str, Any], workdir: Path) -> Iterator[RunningAlertmanager]:
    """Start Alertmanager on a free port with ``config``; stop it afterwards."""
    binary = alertmanager_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no gossip: a single instance of its own
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningAlertmanager(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{running.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"alertmanager not ready: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
