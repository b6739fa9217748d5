"""A camera's parent NVR as the cause: channel video loss on the camera, a dead NVR as its reason.

The NVR is the ISAPI stand-in, the camera the ONVIF stand-in (both named stand-ins: no
device can be reached here); the camera's registry parent is the NVR, its channel in
``driver_config.nvr_channel``. Then the real agent over real Mosquitto: the camera's event
topic gets the NVR's video loss, and its retained status names the parent when both die.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from device_registry.directory import DeviceRecord
from drivers.cctv import FAMILY
from drivers.cctv.camera_driver import CctvCamera, create_camera
from drivers.cctv.isapi_device import IsapiDevice
from drivers.cctv.isapi_stand_in import IsapiStandIn
from drivers.cctv.nvr_links import NVR_LINKS
from drivers.framework import DeviceSpec, DriverError
from hub.settings import Settings
from tests.agent.conftest import agent_settings, by_topic, running_agent, wait_until
from tests.conftest import MqttClientFactory, free_port
from tests.drivers.cctv.conftest import StandInFactory


@pytest_asyncio.fixture
async def isapi() -> AsyncIterator[IsapiStandIn]:
    stand_in = IsapiStandIn(port=free_port())
    stand_in.nvr.heartbeat_s = 0.2
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def nvr_config(stand_in: IsapiStandIn) -> dict[str, Any]:
    return {
        "password": stand_in.nvr.password,
        "listen_s": 0.5,
        "heartbeat_watchdog_s": 0.4,
        "timeout_s": 6,
    }


def camera_config(password: str, channel: int) -> dict[str, Any]:
    return {"password": password, "stream": False, "events": False, "nvr_channel": channel}


async def test_video_loss_goes_to_the_camera_and_a_dead_nvr_is_its_cause(
    isapi: IsapiStandIn, onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    nvr_id, cam_id = f"nvr-{unique_id}", f"cam-{unique_id}"
    cam_stand_in = await onvif_stand_in()
    nvr_spec = DeviceSpec(
        device_id=nvr_id,
        device_type="nvr_4ch",
        protocol="isapi",
        address=isapi.address,
        driver_config=nvr_config(isapi),
    )
    cam_spec = DeviceSpec(
        device_id=cam_id,
        device_type="rt_camera",
        protocol="onvif",
        address=cam_stand_in.address(),
        driver_config=camera_config(cam_stand_in.camera.password, 2),
        parent_id=nvr_id,
    )
    nvr = create_camera(nvr_spec, FAMILY.validate(nvr_spec))
    camera = create_camera(cam_spec, FAMILY.validate(cam_spec))
    assert isinstance(nvr, IsapiDevice)
    assert isinstance(camera, CctvCamera)
    allowed = set(FAMILY.device_type("rt_camera").metrics)
    try:
        isapi.nvr.channels[2] = "videoloss"
        isapi.nvr.channels[3] = "videoloss"  # no camera of ours on channel 3
        readings = await nvr.poll()
        on_camera = [r for r in readings if r.device_id == cam_id]
        assert [(r.kind, r.metrics["event"], r.metrics["event_active"]) for r in on_camera] == [
            ("event", "videoloss", True)
        ]
        assert on_camera[0].metrics["parent_id"] == nvr_id
        assert on_camera[0].metrics["channel_id"] == 2
        assert on_camera[0].metrics["event_source"] == "nvr"
        assert set(on_camera[0].metrics) <= allowed
        assert [r.device_id for r in readings].count(cam_id) == 1
        telemetry = (await camera.poll())[0].metrics
        assert telemetry["nvr_video_loss"] is True
        assert telemetry["nvr_recording"] is True
        assert set(telemetry) <= allowed
        # No change, no event; the channel back: the event ends.
        assert not [r for r in await nvr.poll() if r.device_id == cam_id]
        isapi.nvr.channels[2] = "connect"
        ended = [r for r in await nvr.poll() if r.device_id == cam_id]
        assert [r.metrics["event_active"] for r in ended] == [False]
        assert (await camera.poll())[0].metrics["nvr_video_loss"] is False
        # The camera dies alone: its own cause (the NVR answered just now).
        cam_stand_in.camera.offline = True
        with pytest.raises(DriverError) as own:
            await camera.poll()
        assert "parent NVR" not in str(own.value.cause)
        # The whole package dies: the NVR's poll fails, the camera names its parent.
        await isapi.stop()
        with pytest.raises(DriverError):
            await nvr.poll()
        with pytest.raises(DriverError) as parent:
            await camera.poll()
        assert str(parent.value.cause).startswith(f"parent NVR {nvr_id} unreachable: ")
    finally:
        await camera.close()
        await nvr.close()
    assert NVR_LINKS.cameras_on(nvr_id) == []


async def test_a_camera_probes_its_nvr_when_the_nvr_has_not_been_polled_lately(
    onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    nvr_id, cam_id = f"nvr-p-{unique_id}", f"cam-p-{unique_id}"
    dead_port = free_port()  # nothing listens: the NVR is down
    entry = NVR_LINKS.attach_nvr(nvr_id, f"127.0.0.1:{dead_port}")
    cam_stand_in = await onvif_stand_in()
    cam_stand_in.camera.offline = True
    spec = DeviceSpec(
        device_id=cam_id,
        device_type="rt_camera",
        protocol="onvif",
        address=cam_stand_in.address(),
        driver_config=camera_config(cam_stand_in.camera.password, 1),
        parent_id=nvr_id,
    )
    camera = create_camera(spec, FAMILY.validate(spec))
    try:
        with pytest.raises(DriverError) as failed:
            await camera.poll()
    finally:
        await camera.close()
        NVR_LINKS.detach_nvr(entry)
    assert str(failed.value.cause).startswith(f"parent NVR {nvr_id} unreachable: no TCP answer")


async def test_a_hung_camera_behind_a_dead_nvr_names_the_parent_within_its_timeout(
    unique_id: str,
) -> None:
    # A powered-off package drops packets rather than refusing: the camera's port accepts
    # (the kernel's backlog) and never answers. The camera must give up early enough to
    # probe its NVR inside the poll's timeout, which the agent enforces as here.
    nvr_id, cam_id = f"nvr-h-{unique_id}", f"cam-h-{unique_id}"
    silent: list[asyncio.StreamWriter] = []

    async def never_answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # kept open, never written to

    hung = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    entry = NVR_LINKS.attach_nvr(nvr_id, f"127.0.0.1:{free_port()}")
    config = camera_config("x", 1) | {"timeout_s": 4}
    spec = DeviceSpec(
        device_id=cam_id,
        device_type="rt_camera",
        protocol="onvif",
        address=f"127.0.0.1:{port}",
        driver_config=config,
        parent_id=nvr_id,
    )
    camera = create_camera(spec, FAMILY.validate(spec))
    try:
        with pytest.raises(DriverError) as failed:
            async with asyncio.timeout(4):
                await camera.poll()
    finally:
        await camera.close()
        NVR_LINKS.detach_nvr(entry)
        for writer in silent:
            writer.close()
        hung.close()
    assert str(failed.value.cause).startswith(f"parent NVR {nvr_id} unreachable: no TCP answer")


async def test_a_camera_attached_after_the_loss_began_hears_it_start(
    isapi: IsapiStandIn, unique_id: str
) -> None:
    nvr_id, cam_id = f"nvr-l-{unique_id}", f"cam-l-{unique_id}"
    spec = DeviceSpec(
        device_id=nvr_id,
        device_type="nvr_4ch",
        protocol="isapi",
        address=isapi.address,
        driver_config=nvr_config(isapi),
    )
    nvr = create_camera(spec, FAMILY.validate(spec))
    isapi.nvr.channels[4] = "videoloss"
    try:
        assert not [r for r in await nvr.poll() if r.kind == "event" and r.device_id != nvr_id]
        # The camera's poller starts later (a registry reload): the loss is news to it.
        link = NVR_LINKS.attach_camera(cam_id, nvr_id, 4)
        late = [r for r in await nvr.poll() if r.device_id == cam_id]
        assert [(r.metrics["event"], r.metrics["event_active"]) for r in late] == [
            ("videoloss", True)
        ]
        # A newer poller of the camera keeps its link when the old one detaches.
        newer = NVR_LINKS.attach_camera(cam_id, nvr_id, 4)
        NVR_LINKS.detach_camera(link)
        assert NVR_LINKS.cameras_on(nvr_id) == [newer]
        NVR_LINKS.detach_camera(newer)
    finally:
        await nvr.close()
    assert NVR_LINKS.address_of(nvr_id) is None


async def test_agent_publishes_nvr_video_loss_on_the_camera_and_the_parent_as_its_cause(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    isapi: IsapiStandIn,
    onvif_stand_in: StandInFactory,
    unique_id: str,
) -> None:
    gw, nvr_id, cam_id = f"gw-{unique_id}", f"nvr-a-{unique_id}", f"cam-a-{unique_id}"
    cam_stand_in = await onvif_stand_in()
    isapi.nvr.channels[1] = "videoloss"
    fast = {"poll_interval_s": 0.7}
    records = [
        DeviceRecord(
            device_id=nvr_id,
            family="cctv",
            device_type="nvr_4ch",
            gateway_id=gw,
            protocol="isapi",
            address=isapi.address,
            driver_config=nvr_config(isapi) | fast,
            metrics=FAMILY.metric_schema(FAMILY.device_type("nvr_4ch").metrics),
        ),
        DeviceRecord(
            device_id=cam_id,
            family="cctv",
            device_type="rt_camera",
            gateway_id=gw,
            protocol="onvif",
            address=cam_stand_in.address(),
            driver_config=camera_config(cam_stand_in.camera.password, 1) | fast | {"timeout_s": 3},
            metrics=FAMILY.metric_schema(FAMILY.device_type("rt_camera").metrics),
            parent_id=nvr_id,
        ),
    ]
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gw}/dev/{cam_id}/#")

    def camera_offline() -> list[dict[str, Any]]:
        return [s for s in by_topic(watcher.messages, "/status") if s.get("online") is False]

    async with running_agent(agent_settings(test_settings), gw, records):
        await wait_until(lambda: bool(by_topic(watcher.messages, "/event")), 30)
        cam_stand_in.camera.offline = True
        await isapi.stop()
        await wait_until(lambda: bool(camera_offline()), 30)
        await asyncio.sleep(0)
    event = by_topic(watcher.messages, "/event")[0]["metrics"]
    assert (event["event"], event["event_active"], event["parent_id"]) == (
        "videoloss",
        True,
        nvr_id,
    )
    assert camera_offline()[0]["reason"].startswith(f"parent NVR {nvr_id} unreachable")
