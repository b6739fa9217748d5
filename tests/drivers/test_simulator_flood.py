"""The flood simulator on real pymodbus servers, read by the agent's real flood driver."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.flood import FAMILY
from drivers.flood.simulated_water import (
    M2_PERIOD_H,
    PumpBasin,
    Tributary,
    gauge_level_m,
    rain_rate_mm_h,
    rain_total_mm,
    runoff_mm_h,
    storms_on_day,
    tide_m,
)
from drivers.flood.simulator import FloodSimulator
from drivers.framework import DeviceSpec, DriverError, PolledDriver
from drivers.simulation import (
    AddressAssigner,
    FaultBoard,
    SimClock,
    SimulatedDevice,
    SimulatorContext,
    discover_simulators,
)
from tests.conftest import free_port

START = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)  # 15:00 WIB: storm hours


def device(device_id: str, device_type: str, **params: Any) -> SimulatedDevice:
    return SimulatedDevice(
        device_id=device_id,
        family="flood",
        device_type=device_type,
        gateway_id="gw-test",
        kecamatan="Genuk",
        kelurahan=None,
        lat=-6.96,
        lon=110.48,
        driver_config={"mm_per_tip": 0.2} if device_type == "tipping_bucket_rain" else {},
        params=params,
    )


def driver_for(sim_device: SimulatedDevice) -> PolledDriver:
    spec = DeviceSpec(
        device_id=sim_device.device_id,
        device_type=sim_device.device_type,
        protocol="modbus_tcp",
        address=sim_device.address,
        driver_config=sim_device.driver_config,
    )
    assert FAMILY.create_poller is not None
    return FAMILY.create_poller(spec, FAMILY.validate(spec))


@contextlib.asynccontextmanager
async def serving(
    devices: list[SimulatedDevice], *, faults: FaultBoard | None = None, speed: float = 1.0
) -> AsyncIterator[tuple[FloodSimulator, dict[str, SimulatedDevice], SimulatorContext]]:
    simulator = FloodSimulator()
    first = free_port()
    assigned = simulator.assign_addresses(devices, first)
    # The assigned ports must be free too: two per gateway from `first`.
    ctx = SimulatorContext(clock=SimClock(speed, START), faults=faults or FaultBoard())
    task = asyncio.create_task(simulator.run(list(assigned.values()), ctx))
    try:
        for _ in range(200):
            if len(simulator.stations) == len(simulator.ports_used(list(assigned.values()))):
                break
            await asyncio.sleep(0.05)
        yield simulator, assigned, ctx
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_flood_simulator_is_discovered_and_assigns_addresses() -> None:
    simulator = discover_simulators()["flood"]
    assert isinstance(simulator, AddressAssigner)
    devices = [
        device("g1", "vegapuls_c21"),
        device("r1", "tipping_bucket_rain"),
        device("p1", "pump_station_plc"),
    ]
    assigned = simulator.assign_addresses(devices, 20000)
    # RS-485 line for gauges and rain loggers, Modbus TCP gateway for PLCs.
    assert assigned["g1"].address == assigned["r1"].address == "127.0.0.1:20000"
    assert assigned["p1"].address == "127.0.0.1:20001"
    assert assigned["g1"].driver_config["framing"] == "rtu"
    assert assigned["g1"].driver_config["unit_id"] != assigned["r1"].driver_config["unit_id"]
    assert simulator.ports_used(list(assigned.values())) == {20000, 20001}


async def test_real_driver_reads_every_simulated_device_type() -> None:
    devices = [
        device("g-vega", "vegapuls_c21", coastal=True, base_m=0.1),
        device("g-generic", "generic_4_20ma", base_m=0.4),
        device("g-rain", "tipping_bucket_rain"),
        device("g-pump", "pump_station_plc", pumps=3),
    ]
    async with serving(devices) as (simulator, assigned, ctx):
        readings: dict[str, dict[str, Any]] = {}
        for sim_device in assigned.values():
            driver = driver_for(sim_device)
            try:
                (reading,) = await driver.poll()
            finally:
                await driver.close()
            readings[sim_device.device_id] = dict(reading.metrics)
        t_h = ctx.clock.now().timestamp() / 3600
    expected_vega = gauge_level_m("Genuk", t_h, base_m=0.1, coastal=True)
    assert readings["g-vega"]["level_m"] == pytest.approx(expected_vega, abs=0.02)
    assert readings["g-vega"]["sensor_status"] == "ok"
    assert readings["g-generic"]["level_m"] == pytest.approx(
        gauge_level_m("Genuk", t_h, base_m=0.4), abs=0.02
    )
    assert 10.5 <= readings["g-rain"]["battery_v"] <= 13.0
    assert readings["g-rain"]["rain_mm"] == 0.0  # the first read only sets the counter's base
    assert set(readings["g-pump"]) >= {"pump_on", "pumps_running", "basin_level_m"}
    assert 0 <= readings["g-pump"]["pumps_running"] <= 3
    # Every reading the driver completed is counted as produced.
    assert simulator.stats.by_device() == {d: 1 for d in readings}


async def test_a_dead_device_is_silent_on_its_line_and_the_others_answer() -> None:
    faults = FaultBoard()
    devices = [device("g-dead", "vegapuls_c21"), device("g-alive", "vegapuls_c21")]
    async with serving(devices, faults=faults) as (_sim, assigned, _ctx):
        faults.device_dies("g-dead")
        await asyncio.sleep(1.5)  # the simulator notices within a second
        dead, alive = driver_for(assigned["g-dead"]), driver_for(assigned["g-alive"])
        try:
            with pytest.raises(DriverError, match="exception 11"):
                await dead.poll()
            assert "level_m" in (await alive.poll())[0].metrics
            faults.heal()
            await asyncio.sleep(1.5)
            assert "level_m" in (await dead.poll())[0].metrics
        finally:
            await dead.close()
            await alive.close()


async def test_flood_rises_lifts_the_areas_levels() -> None:
    faults = FaultBoard()
    async with serving([device("g-flood", "generic_4_20ma")], faults=faults, speed=3600) as (
        _sim,
        assigned,
        _ctx,
    ):
        driver = driver_for(assigned["g-flood"])
        try:
            before = (await driver.poll())[0].metrics["level_m"]
            faults.flood_rises("genuk")
            await asyncio.sleep(2.5)  # two simulated hours at 3600x
            after = (await driver.poll())[0].metrics["level_m"]
        finally:
            await driver.close()
    assert isinstance(before, float)
    assert isinstance(after, float)
    assert after > before + 0.8


# -- the water, as properties ------------------------------------------------------------
@given(t_h=st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_tide_repeats_every_m2_period_within_the_s2_part(t_h: float) -> None:
    amplitude = 0.45
    # The M2 part repeats exactly; S2 (a quarter of the amplitude) shifts by at most twice its size.
    assert abs(tide_m(t_h) - tide_m(t_h + M2_PERIOD_H)) <= 2 * 0.25 * amplitude + 1e-9
    assert abs(tide_m(t_h)) <= 1.25 * amplitude + 1e-9


@given(area=st.sampled_from(["Genuk", "Tugu", "Mijen"]), day=st.integers(20_000, 21_000))
def test_upstream_rise_comes_after_the_rain(area: str, day: int) -> None:
    lag = 1.5
    for storm in storms_on_day(area, day):
        # Until the lag has passed, the storm has not reached the river: it only falls
        # (earlier storms drain away).
        assert runoff_mm_h(area, storm.start_h + 0.99 * lag, lag_h=lag) <= (
            runoff_mm_h(area, storm.start_h, lag_h=lag) + 1e-9
        )
        # Once the storm has passed the lag, the river is higher than when the rain began.
        peak = storm.start_h + lag + storm.duration_h
        assert runoff_mm_h(area, peak, lag_h=lag) > runoff_mm_h(area, storm.start_h, lag_h=lag)
        # And the area's rain gauges counted the whole storm.
        total = rain_total_mm(area, storm.start_h, storm.start_h + storm.duration_h)
        assert total == pytest.approx(storm.mm_per_h * storm.duration_h)
        assert rain_rate_mm_h(area, storm.start_h + storm.duration_h / 2) >= storm.mm_per_h


@settings(max_examples=40, deadline=None)
@given(
    start=st.floats(min_value=0.0, max_value=3.0),
    hours=st.floats(min_value=1.0, max_value=48.0),
    extra=st.floats(min_value=0.0, max_value=2.0),
)
def test_pumps_start_above_start_level_and_hold_the_basin(
    start: float, hours: float, extra: float
) -> None:
    basin = PumpBasin(area="Genuk", pumps=4, start_m=1.0, stop_m=0.4, coastal=True, level_m=start)
    t0 = 490_000.0
    basin.advance(t0)
    basin.advance(t0 + hours, extra_m_h=extra)
    # Control invariant: at or above the first start level a pump runs; at or below the stop
    # level none does.
    if basin.level_m >= basin.start_m:
        assert basin.running[0]
    if basin.level_m <= basin.stop_m:
        assert not any(basin.running)
    assert -0.5 <= basin.level_m <= 4.0
    assert basin.run_hours >= 0


async def test_a_taken_port_silences_only_its_own_line() -> None:
    simulator = FloodSimulator()
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    first = taken.getsockname()[1]
    try:
        ours = device("g-ours", "generic_4_20ma")
        other = replace(device("g-other", "generic_4_20ma"), gateway_id="gw-zzz")
        assigned = simulator.assign_addresses([ours, other], first)
        # gw-test gets `first` (taken) and first+1; gw-zzz gets first+2 and first+3.
        assert assigned["g-ours"].address == f"127.0.0.1:{first}"
        ctx = SimulatorContext(clock=SimClock(1, START), faults=FaultBoard())
        task = asyncio.create_task(simulator.run(list(assigned.values()), ctx))
        try:
            for _ in range(100):
                if simulator.stations:
                    break
                await asyncio.sleep(0.05)
            driver = driver_for(assigned["g-other"])
            try:
                assert "level_m" in (await driver.poll())[0].metrics
            finally:
                await driver.close()
            assert simulator.stats.errors() == {"g-ours": 1}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        taken.close()


@given(day=st.integers(20_000, 21_000), lag=st.floats(min_value=1.5, max_value=3.0))
def test_rain_upstream_reaches_the_lowland_gauge_later(day: int, lag: float) -> None:
    hills = Tributary("Tembalang", lag, 0.5)
    for storm in storms_on_day("Tembalang", day):

        def upstream_share(t_h: float) -> float:
            alone = gauge_level_m("Gayamsari", t_h, lag_h=1.0)
            return gauge_level_m("Gayamsari", t_h, lag_h=1.0, catchment=[hills]) - alone

        # Nothing of the hills' storm before its lag; a rise once the storm has come down.
        assert upstream_share(storm.start_h + 0.99 * lag) <= upstream_share(storm.start_h) + 1e-9
        assert upstream_share(storm.start_h + lag + storm.duration_h) > upstream_share(
            storm.start_h
        )
        assert upstream_share(storm.start_h) >= 0
