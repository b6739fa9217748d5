"""The alert engine inside `kotahub hub run`: real broker, InfluxDB, webhook; kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from hub.settings import Settings
from tests.alerts.hub_setup import alert_hub_config
from tests.alerts.receivers import WebhookReceiver
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import device, forget_session, payload, wait_until
from tests.ingest.test_crash_recovery import HubProcess

RULES = """
rules:
  - id: high-water
    kind: threshold
    metric: level_m
    above: 3.0
    clear: 2.8
    message: "{device_name} ({location}) water {value} m"
"""


def _sent_pages(database: Path) -> int:
    if not database.exists():
        return 0
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT count(*) FROM outbox WHERE state = 'sent'").fetchone()[0])


def _alert_points(stack: RunningStack, database: str) -> list[tuple[str, str]]:
    rows = stack.influx.rows('SELECT "instance", "event", device_id FROM alert', database=database)
    return sorted((str(r["device_id"]), str(r["event"])) for r in rows)


def test_kill_9_pages_nobody_twice_and_an_acknowledged_alert_stays_quiet(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    tmp_path: Path,
    webhook: WebhookReceiver,
) -> None:
    g1, g2 = f"{unique_id}-g1", f"{unique_id}-g2"
    routing = tmp_path / "routing.yaml"
    routing.write_text(yaml.safe_dump({"default": {"notify": [webhook.url]}}))
    client_id = f"{unique_id}-alerts"
    config = alert_hub_config(
        test_settings,
        tmp_path,
        client_id=client_id,
        devices=[device(g1, tags={"kecamatan": "Genuk", "name": "Sringin"}), device(g2)],
        rules=RULES,
        alerts=f'routing = "{routing}"\n',
    )
    database = test_settings.state_dir / "alerts" / "alerts.sqlite3"
    client = mqtt_client()
    hub = HubProcess(config)
    try:
        hub.wait_ready()
        now = time.time_ns() // 1_000_000
        client.publish(f"kota/v1/dev/{g1}/telemetry", payload({"level_m": 3.5}, ts=now))
        try:
            (page,) = webhook.wait_for(1)
        except AssertionError as err:
            raise AssertionError("".join(hub.stderr)) from err
        assert page["message"] == "Sringin (Genuk) water 3.5 m"
        wait_until(lambda: _sent_pages(database) == 1, what="the page marked sent")
        # Acknowledged from the CLI while the hub runs.
        acked = subprocess.run(
            [
                sys.executable,
                "-m",
                "hub",
                "alerts",
                "ack",
                f"high-water|{g1}",
                "--by",
                "budi",
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert acked.returncode == 0, acked.stderr
        assert f"high-water|{g1}: acknowledged" in acked.stdout
        os.kill(hub.proc.pid, signal.SIGKILL)
        hub.finish()

        # While the hub is dead: the acked alert's gauge rises further, another gauge rises.
        client.publish(f"kota/v1/dev/{g1}/telemetry", payload({"level_m": 3.9}, ts=now + 1000))
        client.publish(f"kota/v1/dev/{g2}/telemetry", payload({"level_m": 3.6}, ts=now + 1001))
        hub = HubProcess(config)
        hub.wait_ready()
        posts = webhook.wait_for(2)
        assert posts[1]["title"] == f"[ALERT] warning: high-water on {g2}"
        wait_until(
            lambda: (
                ("ack" in {e for d, e in _alert_points(running_stack, influx_db) if d == g1})
                and (g2, "raise") in _alert_points(running_stack, influx_db)
            ),
            what="raise, ack and raise in the alert measurement",
        )
        time.sleep(1.0)  # a second page of g1 would come within the notifier's next pass
        assert len(webhook.posts) == 2
        assert _alert_points(running_stack, influx_db) == [
            (g1, "ack"),
            (g1, "raise"),
            (g2, "raise"),
        ]
        hub.proc.send_signal(signal.SIGTERM)
        assert hub.finish() == 0
    finally:
        if hub.proc.poll() is None:
            hub.proc.kill()
            hub.finish()
        forget_session(running_stack, client_id)
