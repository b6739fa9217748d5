"""Hikvision ISAPI against the ISAPI stand-in: alerts, heartbeat, NVR health, lock-out guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from xml.sax.saxutils import escape

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st

from drivers.cctv import FAMILY, isapi_device
from drivers.cctv.camera_driver import create_camera
from drivers.cctv.isapi_device import IsapiDevice, MultipartParts, alert_reading, parse_xml
from drivers.cctv.isapi_stand_in import IsapiStandIn, StandInDisk, alert_xml
from drivers.framework import DeviceSpec, DriverError
from tests.conftest import free_port


@pytest_asyncio.fixture
async def isapi() -> AsyncIterator[IsapiStandIn]:
    stand_in = IsapiStandIn(port=free_port())
    stand_in.nvr.heartbeat_s = 0.2
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


def device_for(
    stand_in: IsapiStandIn, unique_id: str, device_type: str, **config: object
) -> IsapiDevice:
    spec = DeviceSpec(
        device_id=f"hik-{unique_id}",
        device_type=device_type,
        protocol="isapi",
        address=stand_in.address,
        driver_config={
            "password": stand_in.nvr.password,
            "listen_s": 1.0,
            "heartbeat_watchdog_s": 0.6,
            "timeout_s": 10,
            **config,
        },
    )
    device = create_camera(spec, FAMILY.validate(spec))
    assert isinstance(device, IsapiDevice)
    return device


async def test_alert_stream_events_and_heartbeat(isapi: IsapiStandIn, unique_id: str) -> None:
    device = device_for(isapi, unique_id, "hikvision_isapi_camera")
    for event_type in ("tamperdetection", "linedetection", "fielddetection", "VMD"):
        isapi.nvr.raise_event(event_type, "active", channel=1)
    try:
        readings = await device.poll()
    finally:
        await device.close()
    assert readings[0].metrics["alert_stream_ok"] is True
    events = [(r.metrics["event"], r.metrics["event_active"]) for r in readings[1:]]
    assert events == [
        ("tamper", True),
        ("line_crossing", True),
        ("intrusion", True),
        ("motion", True),
    ]
    assert all(r.kind == "event" and r.metrics["channel_id"] == 1 for r in readings[1:])
    allowed = set(FAMILY.device_type("hikvision_isapi_camera").metrics)
    assert all(set(r.metrics) <= allowed for r in readings)


async def test_silent_stream_trips_the_heartbeat_watchdog(
    isapi: IsapiStandIn, unique_id: str
) -> None:
    isapi.nvr.heartbeat = False
    device = device_for(isapi, unique_id, "hikvision_isapi_camera")
    try:
        readings = await device.poll()
    finally:
        await device.close()
    assert readings[0].metrics["alert_stream_ok"] is False


async def test_nvr_health_disks_and_video_loss(isapi: IsapiStandIn, unique_id: str) -> None:
    isapi.nvr.disks = [StandInDisk(capacity_mb=1000, free_mb=250), StandInDisk(1000, 750)]
    isapi.nvr.channels[3] = "videoloss"
    device = device_for(isapi, unique_id, "nvr_4ch")
    try:
        health = (await device.poll())[0].metrics
        assert health["disk_status"] == "ok"
        assert health["disk_fill_pct"] == pytest.approx(50.0)
        assert health["channels_total"] == 4
        assert health["channels_video_loss"] == 1
        assert health["recording"] is True
        isapi.nvr.disks[1].status = "error"
        isapi.nvr.raise_event("diskerror", "active", channel=0)
        readings = await device.poll()
    finally:
        await device.close()
    assert readings[0].metrics["disk_status"] == "error"
    assert readings[0].metrics["recording"] is False
    assert [r.metrics["event"] for r in readings[1:]] == ["disk_error"]
    allowed = set(FAMILY.device_type("nvr_4ch").metrics)
    assert all(set(r.metrics) <= allowed for r in readings)


async def test_wrong_password_stops_before_the_account_locks(
    isapi: IsapiStandIn, unique_id: str
) -> None:
    device = device_for(isapi, unique_id, "nvr_4ch", password="wrong", max_auth_failures=3)
    try:
        for attempt in range(1, 4):
            with pytest.raises(DriverError, match=f"login refused \\({attempt} of 3\\)"):
                await device.poll()
        requests_before = isapi.nvr.requests
        with pytest.raises(DriverError, match="stopped asking"):
            await device.poll()
    finally:
        await device.close()
    assert isapi.nvr.requests == requests_before  # nothing more was sent
    assert isapi.nvr.failed_logins == 3
    assert isapi.nvr.locked is False


async def test_unreachable_device_is_a_driver_error(unique_id: str) -> None:
    stand_in = IsapiStandIn(port=free_port())  # never started
    device = device_for(stand_in, unique_id, "nvr_4ch")
    try:
        with pytest.raises(DriverError, match="ISAPI unreachable"):
            await device.poll()
    finally:
        await device.close()


@given(cuts=st.lists(st.integers(1, 400), max_size=8))
def test_multipart_parts_survive_any_chunking(cuts: list[int]) -> None:
    documents = [alert_xml("VMD", "active", 1), alert_xml("videoloss", "inactive", 0)]
    stream = b"".join(
        f"--boundary\r\nContent-Type: application/xml\r\nContent-Length: {len(d)}\r\n\r\n".encode()
        + d.encode()
        + b"\r\n"
        for d in documents
    )
    parser = MultipartParts("boundary")
    bodies, start = [], 0
    for cut in sorted({c % len(stream) for c in cuts}):
        bodies += parser.feed(stream[start:cut])
        start = cut
    bodies += parser.feed(stream[start:])
    assert [b.decode() for b in bodies] == documents


@given(
    event_type=st.text(max_size=40),
    state=st.sampled_from(["active", "inactive", "", "ACTIVE"]),
    channel=st.text(max_size=5),
)
def test_any_alert_is_an_event_of_the_table_or_nothing(
    event_type: str, state: str, channel: str
) -> None:
    cleaned = "".join(c for c in event_type if c.isprintable())
    xml = (
        f"<EventNotificationAlert><channelID>{escape(channel)}</channelID>"
        f"<eventType>{escape(cleaned)}</eventType><eventState>{state}</eventState>"
        "</EventNotificationAlert>"
    )
    try:
        alert = parse_xml(xml.encode())
    except ValueError:
        return  # not XML (a control character): the driver reports the reply, no reading
    reading = alert_reading("hik-1", alert)
    if reading is not None:
        assert reading.kind == "event"
        assert set(reading.metrics) <= set(FAMILY.device_type("nvr_4ch").metrics)


async def test_a_heartbeat_as_slow_as_the_http_timeout_keeps_the_stream_ok(
    isapi: IsapiStandIn, unique_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hikvision beats about every 10 s, the client's HTTP timeout: each read of the silent
    # stream between beats used to fail with ReadTimeout, so every demo NVR was offline.
    monkeypatch.setattr(isapi_device, "HTTP_TIMEOUT_S", 0.3)
    isapi.nvr.heartbeat_s = 0.8
    device = device_for(isapi, unique_id, "nvr_4ch", listen_s=2.0, heartbeat_watchdog_s=1.5)
    try:
        readings = await device.poll()
    finally:
        await device.close()
    assert readings[0].metrics["alert_stream_ok"] is True
    assert readings[0].metrics["disk_status"] == "ok"
