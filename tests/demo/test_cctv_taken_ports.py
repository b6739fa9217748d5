"""The cctv demo simulator with ports another program holds: skip those, serve the rest."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import aiohttp
import pytest

from drivers.cctv.simulator import CctvSimulator
from drivers.simulation import FaultBoard, SimClock, SimulatedDevice, SimulatorContext
from tests.conftest import free_port


def fleet(unique_id: str) -> list[SimulatedDevice]:
    """Three health-only cameras and an NVR (no stream decoding: the test is about ports)."""
    types = ("rt_camera", "rt_camera", "rt_camera", "nvr_4ch")
    return [
        SimulatedDevice(
            device_id=f"cctv-{unique_id}-{n}",
            family="cctv",
            device_type=device_type,
            gateway_id="gw-test",
            kecamatan="Semarang Tengah",
            kelurahan=None,
            lat=-6.98,
            lon=110.41,
            driver_config={} if device_type == "nvr_4ch" else {"stream": False},
        )
        for n, device_type in enumerate(types)
    ]


def free_block(size: int) -> int:
    """A first port with ``size`` consecutive ports free now."""
    for _ in range(50):
        first = free_port()
        if first + size > 65535:
            continue
        try:
            held = [_hold(first + n) for n in range(size)]
        except OSError:
            continue
        for sock in held:
            sock.close()
        return first
    raise RuntimeError(f"no block of {size} free ports found")


def _hold(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
    except OSError:
        sock.close()
        raise
    return sock


@pytest.fixture
def held() -> Iterator[list[socket.socket]]:
    """Listening sockets the test holds (closed afterwards)."""
    socks: list[socket.socket] = []
    yield socks
    for sock in socks:
        sock.close()


SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
DATE_AND_TIME = (
    f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body>'
    '<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>'
    "</s:Body></s:Envelope>"
)


async def onvif_ok(device: SimulatedDevice) -> bool:
    """Whether the camera's ONVIF device service answers at its address (as a camera would)."""
    url = f"http://{device.address}/onvif/device_service"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.post(url, data=DATE_AND_TIME) as response,
    ):
        return response.status == 200 and "GetSystemDateAndTimeResponse" in await response.text()


async def start(simulator: CctvSimulator, devices: list[SimulatedDevice]) -> asyncio.Task[None]:
    ctx = SimulatorContext(clock=SimClock(speed=10), faults=FaultBoard())
    task = asyncio.create_task(simulator.run(devices, ctx))
    for _ in range(200):
        if task.done() or (simulator.onvif is not None and simulator.onvif._runner is not None):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the NVR and video servers start after the ONVIF one
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_held_camera_port_and_nvr_port_are_skipped_once_the_rest_served(
    unique_id: str, held: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    simulator = CctvSimulator()
    assigned = simulator.assign_addresses(fleet(unique_id), free_block(5))
    devices = sorted(assigned.values(), key=lambda d: d.device_id)
    camera_held, nvr = devices[1], devices[3]
    held.extend(_hold(int((d.address or "").rpartition(":")[2])) for d in (camera_held, nvr))
    with caplog.at_level(logging.WARNING, logger="drivers.cctv.simulator"):
        task = await start(simulator, devices)
        try:
            assert not task.done(), "the simulator stopped on a taken port"
            assert await onvif_ok(devices[0])
            assert await onvif_ok(devices[2])
            assert simulator.skipped == {camera_held.device_id, nvr.device_id}
            assert nvr.device_id not in simulator.isapi
            assert simulator.video is not None  # its own port was free
            await asyncio.sleep(1.2)  # a tick or more: the warning is not repeated per tick
        finally:
            await stop(task)
    warnings = [r for r in caplog.records if "already in use" in r.getMessage()]
    assert len(warnings) == 1
    assert camera_held.device_id in warnings[0].getMessage()
    assert nvr.device_id in warnings[0].getMessage()


async def test_a_held_video_port_leaves_the_cameras_served_without_streams(
    unique_id: str, held: list[socket.socket]
) -> None:
    simulator = CctvSimulator()
    assigned = simulator.assign_addresses(fleet(unique_id), free_block(5))
    devices = sorted(assigned.values(), key=lambda d: d.device_id)
    video_port = max(simulator.ports_used(devices))
    held.append(_hold(video_port))
    task = await start(simulator, devices)
    try:
        assert not task.done(), "the simulator stopped on a taken port"
        assert simulator.video is None
        assert simulator.skipped == set()
        assert all([await onvif_ok(d) for d in devices[:3]])
    finally:
        await stop(task)
