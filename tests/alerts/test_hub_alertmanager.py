"""`kotahub hub run` with `[alerts] alertmanager_urls`: a raise and a clear reach a real
Alertmanager through the output's own thread (woken by the consumer's saved batches)."""

from __future__ import annotations

import time
from pathlib import Path

from hub.settings import Settings
from tests.alerts.alertmanager_server import alertmanager
from tests.alerts.hub_setup import alert_hub_config
from tests.alerts.test_hub_alerts import RULES
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import device, forget_session, payload, wait_until
from tests.ingest.test_crash_recovery import HubProcess

AM_CONFIG = {"route": {"receiver": "none"}, "receivers": [{"name": "none"}]}


def test_the_hub_posts_raises_and_clears_to_alertmanager(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    unique_id: str,
    tmp_path: Path,
) -> None:
    gauge = f"{unique_id}-g1"
    client_id = f"{unique_id}-am"
    with alertmanager(AM_CONFIG, tmp_path / "am") as am:
        config = alert_hub_config(
            test_settings,
            tmp_path,
            client_id=client_id,
            devices=[device(gauge, tags={"kecamatan": "Genuk"})],
            rules=RULES,
            alerts=f'alertmanager_urls = ["{am.url}"]\n'
            "alertmanager_interval_s = 600\n",  # only the wake after a change posts here
        )
        client = mqtt_client()
        hub = HubProcess(config)
        try:
            hub.wait_ready()
            now = time.time_ns() // 1_000_000
            client.publish(f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 3.5}, ts=now))
            wait_until(lambda: len(am.alerts()) == 1, what="the raise in Alertmanager")
            (held,) = am.alerts()
            assert held["labels"]["alertname"] == "high-water"
            assert held["labels"]["device_id"] == gauge
            assert held["labels"]["kecamatan"] == "Genuk"
            assert held["status"]["state"] == "active"
            client.publish(
                f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 2.0}, ts=now + 1000)
            )
            wait_until(lambda: am.alerts() == [], what="the clear resolving it")
        finally:
            if hub.proc.poll() is None:
                hub.proc.kill()
            hub.finish()
            forget_session(running_stack, client_id)
