"""The alert engine in its own process (engine_process.py), under `kotahub hub run`.

Real broker, InfluxDB and webhook receiver. The child is killed with -9 while the hub
runs (it comes back and evaluates what arrived meanwhile, paging nobody twice), Ctrl-C's
SIGINT does not reach it, and a hub killed with -9 takes its engine with it.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx
import psutil
import yaml

from hub.settings import Settings
from tests.alerts.hub_setup import alert_hub_config
from tests.alerts.receivers import WebhookReceiver
from tests.conftest import MqttClientFactory, RunningStack, free_port
from tests.ingest.conftest import device, forget_session, payload, wait_until
from tests.ingest.test_crash_recovery import HubProcess

RULES = """
rules:
  - id: high-water
    kind: threshold
    metric: level_m
    above: 3.0
    clear: 2.8
"""
CHILD_PID = re.compile(r"alert engine process (\d+) ready")


def _hub_config(
    test_settings: Settings,
    tmp_path: Path,
    client_id: str,
    gauges: list[str],
    url: str,
    metrics_port: int = 0,
) -> Path:
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump({"default": {"notify": [url]}}))
    return alert_hub_config(
        test_settings,
        tmp_path,
        client_id=client_id,
        devices=[device(g) for g in gauges],
        rules=RULES,
        alerts=f'routing = "{routing}"\nretry_min_s = 0.2\nengine_nice = 5\n'
        f'database = "{tmp_path / "alerts.sqlite3"}"\n',
        metrics_port=metrics_port,
    )


def _children(hub: HubProcess) -> list[int]:
    """The engine processes the hub said it started, in order."""
    text = "".join(hub.stderr)
    return [int(pid) for pid in CHILD_PID.findall(text)]


def _gone(pid: int) -> bool:
    """Whether ``pid`` exited (a zombie no one reaps counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_a_killed_engine_comes_back_and_evaluates_what_came_meanwhile(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    unique_id: str,
    tmp_path: Path,
    webhook: WebhookReceiver,
) -> None:
    g1, g2 = f"{unique_id}-g1", f"{unique_id}-g2"
    client_id = f"{unique_id}-engine"
    port = free_port()
    config = _hub_config(test_settings, tmp_path, client_id, [g1, g2], webhook.url, port)
    client = mqtt_client()
    hub = HubProcess(config)
    try:
        hub.wait_ready()
        (child,) = _children(hub)
        assert child != hub.proc.pid
        assert not _gone(child)
        # An operator who wants ingest first on a saturated machine sets engine_nice (5 here).
        assert psutil.Process(child).nice() == min(19, psutil.Process(hub.proc.pid).nice() + 5)
        now = time.time_ns() // 1_000_000
        client.publish(f"kota/v1/dev/{g1}/telemetry", payload({"level_m": 3.5}, ts=now))
        (page,) = webhook.wait_for(1)
        assert page["title"] == f"[ALERT] warning: high-water on {g1}"

        # Ctrl-C in a terminal signals the whole group: the engine ignores it (the hub
        # stops it in order), so it still evaluates afterwards.
        os.kill(child, signal.SIGINT)
        client.publish(f"kota/v1/dev/{g1}/telemetry", payload({"level_m": 2.0}, ts=now + 1))
        assert webhook.wait_for(2)[1]["title"].startswith("[RESOLVED]")
        assert not _gone(child)

        os.kill(child, signal.SIGKILL)
        wait_until(lambda: _gone(child), what="the engine process gone")
        # Arrives while the engine is dead: evaluated by the next one, from the WAL.
        client.publish(f"kota/v1/dev/{g2}/telemetry", payload({"level_m": 3.7}, ts=now + 2))
        try:
            posts = webhook.wait_for(3, timeout_s=60)
        except AssertionError as err:
            raise AssertionError("".join(hub.stderr)) from err
        assert posts[2]["title"] == f"[ALERT] warning: high-water on {g2}"
        assert re.search(rf"alert engine process {child} exited \(code -9\)", "".join(hub.stderr))
        assert hub.proc.poll() is None  # ingest never stopped
        assert _children(hub)[0] == child
        assert len(_children(hub)) == 2  # one restart
        # ... and /metrics counts it as a restart of the alert consumer's thread.
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        restarts = re.search(
            r'^kotahub_ingest_thread_restarts_total\{[^}]*thread="ingest-consumer-alerts"\} (\S+)$',
            metrics,
            re.MULTILINE,
        )
        assert restarts is not None, metrics
        assert float(restarts.group(1)) == 1

        def lag() -> float:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            found = re.search(
                r'^kotahub_ingest_consumer_lag_bytes\{[^}]*consumer="alerts"\} (\S+)$',
                text,
                re.MULTILINE,
            )
            assert found is not None, text
            return float(found.group(1))

        wait_until(lambda: lag() == 0, what="the engine caught up (its lag on /metrics)")
        # Nobody paged twice: g1's raise and clear, g2's raise, nothing replayed.
        assert [p["title"].split(":")[0] for p in webhook.posts] == [
            "[ALERT] warning",
            "[RESOLVED] warning",
            "[ALERT] warning",
        ]
        hub.proc.send_signal(signal.SIGTERM)
        assert hub.finish() == 0, "".join(hub.stderr)
    finally:
        if hub.proc.poll() is None:
            hub.proc.kill()
            hub.finish()
        forget_session(running_stack, client_id)


def test_a_hub_killed_with_9_takes_its_engine_with_it(
    test_settings: Settings,
    running_stack: RunningStack,
    unique_id: str,
    tmp_path: Path,
    webhook: WebhookReceiver,
) -> None:
    client_id = f"{unique_id}-engine-kill"
    config = _hub_config(test_settings, tmp_path, client_id, [f"{unique_id}-g"], webhook.url)
    hub = HubProcess(config)
    try:
        hub.wait_ready()
        (child,) = _children(hub)
        os.kill(hub.proc.pid, signal.SIGKILL)
        hub.finish()
        # An engine left behind would hold the alert database and page on its own.
        wait_until(lambda: _gone(child), what="the engine gone with its hub")
        again = HubProcess(config)
        try:
            again.wait_ready()
            assert len(_children(again)) == 1
            again.proc.send_signal(signal.SIGTERM)
            assert again.finish() == 0, "".join(again.stderr)
            assert all(_gone(pid) for pid in _children(again))
        finally:
            if again.proc.poll() is None:
                again.proc.kill()
                again.finish()
    finally:
        if hub.proc.poll() is None:
            hub.proc.kill()
            hub.finish()
        forget_session(running_stack, client_id)
