"""The hub's /metrics scraped by a real Prometheus (Debian's package), queried over its API.

Prometheus runs with the example config of dashboards/prometheus/ (target and interval
changed for the test), on a free port with its storage under tmp_path.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from hub.ingest.self_metrics import IngestStats, MetricsServer
from tests.conftest import free_port

EXAMPLE = Path(__file__).resolve().parent.parent / "dashboards" / "prometheus" / "prometheus.yml"
HUB = "kotahub-hub-test"


@pytest.fixture
def hub_metrics() -> Iterator[tuple[IngestStats, int]]:
    """The hub's metrics server (the same class the hub runs) with some counts in it."""
    stats = IngestStats(messages_in=42, messages_accepted=40, messages_acked=40)
    stats.deadletters["not_json"] = 2
    stats.record_batch(40, 0.02)
    server = MetricsServer("127.0.0.1", 0, lambda: stats.prometheus(HUB))
    server.start()
    yield stats, server.port
    server.stop()


@pytest.fixture
def prometheus(tmp_path: Path, hub_metrics: tuple[IngestStats, int]) -> Iterator[str]:
    """Debian's prometheus scraping the hub every second; yields its URL."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    config: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    config["global"]["scrape_interval"] = "1s"
    job = config["scrape_configs"][0]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{hub_metrics[1]}"]
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("prometheus did not become ready in 30 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _query(url: str, expr: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Poll the query API until the expression has a result (the first scrape takes ~1 s)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.3)


def test_prometheus_reads_the_hub_counters(
    prometheus: str, hub_metrics: tuple[IngestStats, int]
) -> None:
    stats, _ = hub_metrics
    messages = _query(prometheus, "kotahub_ingest_messages_total")
    assert messages, "no kotahub_ingest_messages_total after 30 s of scraping"
    assert messages[0]["metric"]["hub"] == HUB
    assert messages[0]["metric"]["job"] == "kotahub-hub"
    assert messages[0]["metric"]["city"] == "semarang"
    assert float(messages[0]["value"][1]) == 42
    dead = _query(prometheus, 'kotahub_ingest_deadletters_total{reason="not_json"}')
    assert float(dead[0]["value"][1]) == 2
    buckets = _query(prometheus, "kotahub_ingest_write_seconds_count")
    assert float(buckets[0]["value"][1]) == 1
    # a counter that grows is seen growing: the scrape is live, not a one-off
    stats.messages_in = 50
    grown = _query(prometheus, "kotahub_ingest_messages_total == 50")
    assert grown, "the new value was not scraped within 30 s"
    up = _query(prometheus, 'up{job="kotahub-hub"}')
    assert float(up[0]["value"][1]) == 1
