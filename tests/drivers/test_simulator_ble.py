"""The BLE simulator's adverts, heard through the FAKE radio by the real BLE scanner."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from drivers.ble import FAMILY
from drivers.ble.ble_scanner import BleSensorScanner
from drivers.ble.simulator import BleSimulator, simulated_radio_backend
from drivers.framework import DeviceSpec, Reading
from drivers.simulation import FaultBoard, SimClock, SimulatedDevice, SimulatorContext


def sensor(device_id: str, mac: str, fmt: str, **params: object) -> SimulatedDevice:
    return SimulatedDevice(
        device_id=device_id,
        family="ble",
        device_type="thermometer" if fmt == "pvvx" else "bthome_sensor",
        gateway_id="gw-ble",
        kecamatan="Genuk",
        kelurahan=None,
        lat=-6.96,
        lon=110.48,
        address=mac,
        driver_config={"format": fmt, "min_interval_s": 0},
        params=params,
    )


async def test_real_scanner_decodes_simulated_sensors_and_a_dead_one_is_silent(
    tmp_path: Path,
) -> None:
    devices = [
        sensor("ble-pvvx", "A4:C1:38:00:00:01", "pvvx", battery_start_v=2.9),
        sensor("ble-bthome", "A4:C1:38:00:00:02", "bthome"),
        sensor("ble-dead", "A4:C1:38:00:00:03", "bthome"),
    ]
    specs = []
    for d in devices:
        spec = DeviceSpec(
            device_id=d.device_id,
            device_type=d.device_type,
            protocol="ble",
            address=d.address,
            driver_config=d.driver_config,
        )
        specs.append((spec, FAMILY.validate(spec)))
    scanner = BleSensorScanner(specs, backend=simulated_radio_backend(tmp_path, "gw-ble"))
    faults = FaultBoard()
    faults.device_dies("ble-dead")
    ctx = SimulatorContext(clock=SimClock(600), faults=faults, state_dir=tmp_path)
    simulator = BleSimulator()
    seen: dict[str, Reading] = {}

    async def listen() -> None:
        async for reading in scanner.stream():
            seen[reading.device_id] = reading
            if {"ble-pvvx", "ble-bthome"} <= set(seen):
                return

    listener = asyncio.create_task(listen())
    sim = asyncio.create_task(simulator.run(devices, ctx))
    try:
        await asyncio.wait_for(listener, 30)
    finally:
        sim.cancel()
        listener.cancel()
        for task in (sim, listener):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    pvvx = seen["ble-pvvx"].metrics
    assert 2.2 <= float(pvvx["battery_v"]) <= 2.9
    assert 15 < float(pvvx["temperature_c"]) < 40
    assert "humidity_pct" in seen["ble-bthome"].metrics
    assert "ble-dead" not in seen
    assert "ble-dead" not in simulator.stats.by_device()
