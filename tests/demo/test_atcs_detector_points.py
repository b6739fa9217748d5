"""The atcs simulator credits a controller's detectors with exactly the points the driver makes."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from drivers.atcs import DETECTOR_MEASUREMENT
from drivers.atcs import FAMILY as ATCS
from drivers.atcs.simulator import AtcsSimulator
from drivers.framework import DeviceSpec
from drivers.simulation import (
    FaultBoard,
    SimClock,
    SimulatedDevice,
    SimulatorContext,
    produced_points,
)
from drivers.snmp.client import close_family_clients
from tests.agent.conftest import wait_until
from tests.drivers.snmp.conftest import free_udp_port


async def test_detector_points_produced_equal_the_detector_readings_polled() -> None:
    simulator = AtcsSimulator()  # its own, not the shared SIMULATOR another test may run
    detectors = [f"ctl-1-det{n}" for n in range(1, 5)]
    controller = SimulatedDevice(
        device_id="ctl-1",
        family="atcs",
        device_type="ntcip_1202_controller",
        gateway_id="gw-1",
        kecamatan="Gayamsari",
        kelurahan=None,
        lat=-6.98,
        lon=110.44,
        driver_config=simulator.map_children({}, detectors),
    )
    children = [
        replace(controller, device_id=d, device_type=simulator.child_device_type, driver_config={})
        for d in detectors
    ]
    (assigned,) = simulator.assign_addresses([controller, *children], 20000).values()
    placed = replace(
        assigned,
        address=f"127.0.0.1:{free_udp_port()}",
        driver_config={**assigned.driver_config, "request_timeout_s": 1.0, "retries": 0},
    )
    # 60 simulated seconds (one detector period) in 0.1 s of wall time.
    ctx = SimulatorContext(clock=SimClock(speed=600), faults=FaultBoard())
    task = asyncio.create_task(simulator.run([placed, *children], ctx))
    polled: dict[str, int] = {}
    try:
        await wait_until(lambda: "ctl-1" in simulator.targets, 15)
        spec = DeviceSpec(
            device_id="ctl-1",
            device_type="ntcip_1202_controller",
            protocol="ntcip_1202",
            address=placed.address,
            driver_config=dict(placed.driver_config),
        )
        poller = ATCS.create_poller(spec, ATCS.validate(spec))  # type: ignore[misc]
        for n in range(8):
            # Some polls in a new period, some (back to back) most likely in the same one.
            if n % 2:
                await asyncio.sleep(0.15)
            for reading in await poller.poll():
                polled[reading.device_id] = polled.get(reading.device_id, 0) + 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        close_family_clients()
    assert polled["ctl-1"] == 8
    detector_points = {d: polled.get(d, 0) for d in detectors}
    assert all(count >= 4 for count in detector_points.values()), detector_points
    assert simulator.detector_stats.by_device() == detector_points
    by_measurement, by_device = produced_points({"atcs": simulator})
    assert by_measurement[DETECTOR_MEASUREMENT] == sum(detector_points.values())
    assert by_measurement["atcs"] == simulator.stats.total
    assert by_device["ctl-1-det1"] == detector_points["ctl-1-det1"]
