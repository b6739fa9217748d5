"""The demo's SNMP simulators (drivers/<family>/simulator.py) read by the real drivers."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest

from drivers.atcs import FAMILY as ATCS
from drivers.atcs.simulator import SIMULATOR as ATCS_SIMULATOR
from drivers.framework import DeviceSpec, DriverError, DriverFamily
from drivers.simulation import (
    AddressAssigner,
    FaultBoard,
    SimClock,
    SimulatedDevice,
    SimulatorContext,
    discover_simulators,
)
from drivers.snmp.client import close_family_clients
from drivers.snmp.simulated_fleet import SnmpFleetSimulator
from drivers.wifi import FAMILY as WIFI
from drivers.wifi.simulator import SIMULATOR as WIFI_SIMULATOR
from tests.agent.conftest import wait_until
from tests.drivers.snmp.conftest import free_udp_port


def fleet(family: str, device_type: str, count: int) -> list[SimulatedDevice]:
    return [
        SimulatedDevice(
            device_id=f"{family}-{n}",
            family=family,
            device_type=device_type,
            gateway_id="gw-1",
            kecamatan="Semarang Tengah",
            kelurahan=None,
            lat=-6.98,
            lon=110.41,
        )
        for n in range(count)
    ]


def spec_of(device: SimulatedDevice, protocol: str) -> DeviceSpec:
    return DeviceSpec(
        device_id=device.device_id,
        device_type=device.device_type,
        protocol=protocol,
        address=device.address,
        driver_config=dict(device.driver_config),
    )


def test_both_families_ship_protocol_level_simulators() -> None:
    found = discover_simulators()
    assert found["atcs"] is ATCS_SIMULATOR
    assert found["wifi"] is WIFI_SIMULATOR
    assert isinstance(ATCS_SIMULATOR, AddressAssigner)
    assert isinstance(WIFI_SIMULATOR, AddressAssigner)


@pytest.mark.parametrize(
    ("simulator", "family", "device_type", "protocol", "metric"),
    [
        (WIFI_SIMULATOR, WIFI, "mikrotik_ap", "snmp", "clients"),
        (ATCS_SIMULATOR, ATCS, "ntcip_1202_controller", "ntcip_1202", "phases_green"),
    ],
)
async def test_simulated_fleet_is_read_by_the_driver_and_a_dead_device_goes_silent(
    simulator: SnmpFleetSimulator,
    family: DriverFamily,
    device_type: str,
    protocol: str,
    metric: str,
) -> None:
    first = free_udp_port()
    devices = fleet(family.name, device_type, 3)
    assigned = simulator.assign_addresses(devices, first)
    ports = simulator.ports_used(list(assigned.values()))
    assert len(ports) == 3
    assert ports == {first, first + 1, first + 2}
    # Serve on ports the OS says are free now (xdist neighbours hold ports too), quickly.
    placed = [
        replace(
            d,
            address=f"127.0.0.1:{free_udp_port()}",
            driver_config={**d.driver_config, "request_timeout_s": 0.5, "retries": 0},
        )
        for d in assigned.values()
    ]
    faults = FaultBoard()
    ctx = SimulatorContext(clock=SimClock(speed=10), faults=faults)
    task = asyncio.create_task(simulator.run(placed, ctx))
    try:
        await wait_until(lambda: len(simulator.targets) == 3, 15)
        drivers = []
        for device in placed:
            spec = spec_of(device, protocol)
            poller = family.create_poller(spec, family.validate(spec))  # type: ignore[misc]
            drivers.append(poller)
        for poller in drivers:
            readings = await poller.poll()
            assert metric in readings[0].metrics
        faults.device_dies(placed[0].device_id)
        await wait_until(lambda: simulator.targets[placed[0].device_id].silent, 15)
        with pytest.raises(DriverError, match="no answer"):
            await drivers[0].poll()
        assert metric in (await drivers[1].poll())[0].metrics
        # Polls are counted as they end (the device's timeout_s after their first request):
        # devices 1 and 2 answered; device 0's last poll found it silent (a failed poll).
        stats = simulator.stats
        await wait_until(lambda: stats.total + stats.total_polls_failed >= 3, 15)
        assert set(stats.by_device()) == {placed[1].device_id, placed[2].device_id}
        assert stats.polls_failed() == {placed[0].device_id: 1}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        close_family_clients()
