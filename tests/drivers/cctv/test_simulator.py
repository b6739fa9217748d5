"""The cctv demo simulator: stand-ins and real streams that the real driver reads, with faults."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from drivers.cctv import FAMILY
from drivers.cctv.camera_driver import CctvCamera, create_camera
from drivers.cctv.isapi_device import IsapiDevice
from drivers.cctv.simulator import CctvSimulator
from drivers.framework import DeviceSpec, DriverError, PolledDriver
from drivers.simulation import (
    FaultBoard,
    SimClock,
    SimulatedDevice,
    SimulatorContext,
    discover_simulators,
)
from tests.conftest import free_port


def fleet(unique_id: str) -> list[SimulatedDevice]:
    def device(n: int, device_type: str, **params: object) -> SimulatedDevice:
        return SimulatedDevice(
            device_id=f"cctv-{unique_id}-{n}",
            family="cctv",
            device_type=device_type,
            gateway_id="gw-test",
            kecamatan="Semarang Tengah",
            kelurahan=None,
            lat=-6.98,
            lon=110.41,
            params=params,
        )

    return [
        device(0, "rt_camera"),
        device(1, "atcs_camera", tamper_every_h=0.0001, tamper_for_min=5),
        device(2, "corporate_camera"),
        device(3, "rt_camera"),
        device(4, "nvr_4ch"),
    ]


@pytest_asyncio.fixture
async def simulated(
    unique_id: str,
) -> AsyncIterator[tuple[CctvSimulator, dict[str, SimulatedDevice], FaultBoard]]:
    simulator = CctvSimulator()
    first = free_port()
    assigned = simulator.assign_addresses(fleet(unique_id), first)
    faults = FaultBoard()
    ctx = SimulatorContext(clock=SimClock(speed=10), faults=faults)
    task = asyncio.create_task(simulator.run(list(assigned.values()), ctx))
    for _ in range(100):
        if simulator.video is not None and simulator.video._runner is not None:
            break
        await asyncio.sleep(0.05)
    yield simulator, assigned, faults
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def driver(device: SimulatedDevice, **extra: object) -> PolledDriver:
    spec = DeviceSpec(
        device_id=device.device_id,
        device_type=device.device_type,
        protocol="isapi" if device.device_type == "nvr_4ch" else "onvif",
        address=device.address,
        driver_config={**device.driver_config, **extra},
    )
    return create_camera(spec, FAMILY.validate(spec))


def test_simulator_is_discovered() -> None:
    assert isinstance(discover_simulators()["cctv"], CctvSimulator)


def test_addresses_are_one_port_each_plus_the_video_server(unique_id: str) -> None:
    simulator = CctvSimulator()
    assigned = simulator.assign_addresses(fleet(unique_id), 30000)
    ports = simulator.ports_used(list(assigned.values()))
    assert ports == set(range(30000, 30006))
    real = [d for d in assigned.values() if d.driver_config.get("stream") is True]
    assert len(real) == 3


async def test_real_stream_camera_health_only_camera_and_outage(
    simulated: tuple[CctvSimulator, dict[str, SimulatedDevice], FaultBoard],
) -> None:
    simulator, assigned, faults = simulated
    cameras = sorted(assigned.values(), key=lambda d: d.device_id)
    real = driver(cameras[0], sample_every_s=0, sample_s=1.0)
    health_only = driver(cameras[3])
    try:
        metrics = (await real.poll())[0].metrics
        assert metrics["onvif_status"] == "ok"
        assert metrics["stream_ok"] is True
        assert abs(int(metrics["people_count"]) - 3) <= 1
        only = (await health_only.poll())[0].metrics
        assert only["onvif_status"] == "ok"
        assert "stream_ok" not in only
        faults.device_dies(cameras[3].device_id)
        await asyncio.sleep(1.5)  # the simulator applies faults every second
        with pytest.raises(DriverError, match="ONVIF unreachable"):
            await health_only.poll()
    finally:
        await real.close()
        await health_only.close()
    simulator.flush_polls()  # polls are counted when they end; end the open ones now
    # One poll, however many ONVIF calls it made: one point.
    assert simulator.stats.by_device()[cameras[0].device_id] == 1
    # The dead camera's last poll found it silent: a failed poll, no point for it.
    assert simulator.stats.polls_failed() == {cameras[3].device_id: 1}


async def test_tampering_raises_an_onvif_tamper_event(
    simulated: tuple[CctvSimulator, dict[str, SimulatedDevice], FaultBoard],
) -> None:
    _, assigned, _ = simulated
    tampering = next(d for d in assigned.values() if d.device_type == "atcs_camera")
    camera = driver(tampering, stream=False)
    assert isinstance(camera, CctvCamera)
    try:
        events = []
        for _ in range(20):
            events = [r for r in await camera.poll() if r.kind == "event"]
            if events:
                break
            await asyncio.sleep(0.3)
    finally:
        await camera.close()
    assert [(e.metrics["event"], e.metrics["event_active"]) for e in events] == [("tamper", True)]


async def test_nvr_stand_in_answers_isapi(
    simulated: tuple[CctvSimulator, dict[str, SimulatedDevice], FaultBoard],
) -> None:
    _, assigned, _ = simulated
    nvr = next(d for d in assigned.values() if d.device_type == "nvr_4ch")
    device = driver(nvr, listen_s=0.5, timeout_s=10)
    assert isinstance(device, IsapiDevice)
    try:
        metrics = (await device.poll())[0].metrics
    finally:
        await device.close()
    assert metrics["disk_status"] == "ok"
    assert metrics["channels_total"] == 4
