"""The real agent polls a cctv camera over real Mosquitto: telemetry and events per the contract."""

from __future__ import annotations

import asyncio

from device_registry.directory import DeviceRecord
from drivers.cctv import FAMILY, generated_scenes
from drivers.cctv.mjpeg_server import MjpegServer
from drivers.cctv.onvif_stand_in import TAMPER_TOPIC
from hub.settings import Settings
from tests.agent.conftest import agent_settings, by_topic, running_agent, wait_until
from tests.conftest import MqttClientFactory
from tests.drivers.cctv.conftest import StandInFactory


async def test_agent_publishes_camera_health_quality_and_tamper_event(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    onvif_stand_in: StandInFactory,
    mjpeg_server: MjpegServer,
    unique_id: str,
) -> None:
    gw = f"gw-{unique_id}"
    device_id = f"cam-{unique_id}"
    stand_in = await onvif_stand_in()
    stand_in.camera.stream_uri = mjpeg_server.add_clip("agent", generated_scenes.moving_shapes(30))
    stand_in.camera.raise_event(TAMPER_TOPIC, True)
    record = DeviceRecord(
        device_id=device_id,
        family="cctv",
        device_type="atcs_camera",
        gateway_id=gw,
        expected_interval_s=1.0,
        protocol="onvif",
        address=stand_in.address(),
        driver_config={
            "password": stand_in.camera.password,
            "sample_every_s": 0,
            "sample_s": 1.0,
            "open_timeout_s": 2.0,
            "timeout_s": 8.0,
        },
        metrics=FAMILY.metric_schema(FAMILY.device_type("atcs_camera").metrics),
    )
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gw}/dev/{device_id}/#")
    async with running_agent(agent_settings(test_settings), gw, [record]):
        await wait_until(
            lambda: (
                bool(by_topic(watcher.messages, "/telemetry"))
                and bool(by_topic(watcher.messages, "/event"))
            ),
            timeout_s=20,
        )
        await asyncio.sleep(0)
    telemetry = by_topic(watcher.messages, "/telemetry")[0]["metrics"]
    assert telemetry["onvif_status"] == "ok"
    assert telemetry["serial"] == stand_in.camera.serial
    assert telemetry["stream_ok"] is True
    assert telemetry["stream_status"] == "ok"
    events = by_topic(watcher.messages, "/event")
    assert events[0]["metrics"]["event"] == "tamper"
    assert events[0]["metrics"]["event_active"] is True
    statuses = by_topic(watcher.messages, "/status")
    assert statuses[0]["online"] is True
