"""The flood family against real pymodbus servers (Modbus TCP and RTU framed over TCP)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from drivers.flood import FAMILY
from drivers.flood.flood_gauge import FloodGauge
from drivers.flood.register_map import WordOrder
from drivers.flood.simulated_station import SimulatedStation
from drivers.framework import DeviceSpec, DriverError
from tests.drivers.conftest import StationFactory

VEGA_ADDRESS: dict[WordOrder, int] = {"ABCD": 2002, "CDAB": 106, "DCBA": 2102, "BADC": 2202}


def gauge(
    station: SimulatedStation, device_type: str, *, protocol: str = "modbus_tcp", **config: Any
) -> FloodGauge:
    spec = DeviceSpec(
        device_id=f"dev-{device_type}",
        device_type=device_type,
        protocol=protocol,
        address=f"127.0.0.1:{station.port}",
        driver_config={"timeout_s": 1.0, **config},
    )
    driver = FAMILY.create_poller(spec, FAMILY.validate(spec))  # type: ignore[misc]
    assert isinstance(driver, FloodGauge)
    return driver


async def poll_metrics(driver: FloodGauge) -> dict[str, Any]:
    readings = await driver.poll()
    assert len(readings) == 1
    assert readings[0].device_id == driver.device_id
    return dict(readings[0].metrics)


@pytest.mark.parametrize("word_order", ["ABCD", "CDAB", "BADC", "DCBA"])
async def test_vegapuls_word_orders(modbus_station: StationFactory, word_order: WordOrder) -> None:
    station = await modbus_station(unit_ids=(246,))
    # Every byte-order address holds a different level: the driver must read the right one
    # and decode it in that order.
    for order, address in VEGA_ADDRESS.items():
        value = -0.42 if order == word_order else 9.99
        station.set_float(246, address, value, order)
    station.set_float(246, 2314, 41.5, "ABCD")
    station.set_registers(246, 2307, [0])
    driver = gauge(station, "vegapuls_c21", word_order=word_order)
    try:
        metrics = await poll_metrics(driver)
    finally:
        await driver.close()
    assert metrics == {"level_m": -0.42, "signal_quality_db": 41.5, "sensor_status": "ok"}


async def test_vegapuls_over_rtu_framing_with_invalid_flag(modbus_station: StationFactory) -> None:
    station = await modbus_station(unit_ids=(246, 7), framing="rtu")
    station.set_float(246, 2002, 1.25, "ABCD")
    station.set_registers(246, 2307, [2])
    station.set_float(7, 2002, 3.5, "ABCD")
    driver = gauge(station, "vegapuls_c21", protocol="modbus_rtu_tcp", framing="rtu")
    other = gauge(station, "vegapuls_c21", protocol="modbus_rtu_tcp", framing="rtu", unit_id=7)
    try:
        assert (await poll_metrics(driver))["level_m"] == 1.25
        assert (await poll_metrics(other))["level_m"] == 3.5
        assert (await poll_metrics(driver))["sensor_status"] == "check"
        station.set_registers(246, 100, [0b1])  # bit 0: the value is invalid (no echo)
        metrics = await poll_metrics(driver)
    finally:
        await driver.close()
        await other.close()
    assert "level_m" not in metrics
    assert metrics["sensor_status"] == "invalid"


async def test_generic_transmitter_negative_level_with_decimals(
    modbus_station: StationFactory,
) -> None:
    station = await modbus_station()
    station.set_registers(1, 3, [2])
    station.set_int16(1, 4, -35)
    driver = gauge(station, "generic_4_20ma")
    try:
        assert await poll_metrics(driver) == {"level_m": -0.35}
        station.set_registers(1, 3, [3])
        station.set_int16(1, 4, 1234)
        assert await poll_metrics(driver) == {"level_m": 1.234}
    finally:
        await driver.close()


async def test_rain_gauge_counts_increments_across_wrap_and_reset(
    modbus_station: StationFactory,
) -> None:
    station = await modbus_station()
    station.set_registers(1, 0, [65530, 12_800])
    driver = gauge(station, "tipping_bucket_rain", mm_per_tip=0.5)
    try:
        first = await poll_metrics(driver)
        assert first == {"rain_mm": 0.0, "battery_v": 12.8}  # no baseline yet
        station.set_registers(1, 0, [4])  # wrapped past 65535: 10 tips
        assert (await poll_metrics(driver))["rain_mm"] == 5.0
        station.set_registers(1, 0, [9])
        assert (await poll_metrics(driver))["rain_mm"] == 2.5
        station.set_registers(1, 0, [40_000])
        await poll_metrics(driver)
        station.set_registers(1, 0, [3])  # logger rebooted: counter restarted at 0
        assert (await poll_metrics(driver))["rain_mm"] == 1.5
    finally:
        await driver.close()


async def test_pump_station_plc(modbus_station: StationFactory) -> None:
    station = await modbus_station()
    station.set_registers(1, 10, [0b0000_0101])
    station.set_int16(1, 11, -12)
    station.set_registers(1, 12, [0x0001, 0x0002])  # 65538 tenths of an hour
    station.set_registers(1, 14, [0])
    driver = gauge(station, "pump_station_plc")
    try:
        metrics = await poll_metrics(driver)
        assert metrics == {
            "pump_on": True,
            "pumps_running": 2,
            "basin_level_m": -0.12,
            "pump_run_hours": 6553.8,
            "sensor_status": "ok",
        }
        station.set_registers(1, 10, [0])
        station.set_registers(1, 14, [3])
        metrics = await poll_metrics(driver)
    finally:
        await driver.close()
    assert metrics["pump_on"] is False
    assert metrics["pumps_running"] == 0
    assert metrics["sensor_status"] == "power_fail"


async def test_user_defined_map(modbus_station: StationFactory) -> None:
    station = await modbus_station(unit_ids=(3,))
    station.set_float(3, 500, 2.75, "CDAB")
    station.set_registers(3, 510, [3300])
    registers = [
        {"metric": "level_m", "type": "float32", "address": 500, "word_order": "CDAB"},
        {"metric": "battery_v", "type": "uint16", "address": 510, "scale": 0.001},
    ]
    driver = gauge(station, "user_defined", unit_id=3, registers=registers)
    try:
        assert await poll_metrics(driver) == {"level_m": 2.75, "battery_v": 3.3}
    finally:
        await driver.close()


async def test_illegal_address_is_a_driver_error_naming_the_registers(
    modbus_station: StationFactory,
) -> None:
    station = await modbus_station(register_count=50)
    registers = [{"metric": "level_m", "type": "int16", "address": 4000}]
    driver = gauge(station, "user_defined", registers=registers)
    try:
        with pytest.raises(DriverError) as caught:
            await driver.poll()
    finally:
        await driver.close()
    assert caught.value.device_id == "dev-user_defined"
    assert "illegal data address" in str(caught.value)
    assert "4000" in str(caught.value)


async def test_timeout_then_recovery(modbus_station: StationFactory) -> None:
    station = await modbus_station()
    station.set_registers(1, 3, [1])
    station.set_int16(1, 4, 15)
    driver = gauge(station, "generic_4_20ma", timeout_s=0.3)
    try:
        station.response_delay_s = 1.0
        with pytest.raises(DriverError) as caught:
            await driver.poll()
        assert caught.value.device_id == driver.device_id
        station.response_delay_s = 0.0
        await asyncio.sleep(0.8)  # let the slow answer drain on the server side
        assert await poll_metrics(driver) == {"level_m": 1.5}
    finally:
        await driver.close()


async def test_sleeping_sensor_first_read_is_stale(modbus_station: StationFactory) -> None:
    station = await modbus_station()
    station.sleep_after_s = 30.0
    station.wake_time_s = 0.3
    station.set_registers(1, 3, [2])
    station.set_int16(1, 4, 187)
    naive = gauge(station, "generic_4_20ma")
    try:
        # Read once without waiting: the sensor answers what it held before it slept.
        assert await poll_metrics(naive) == {"level_m": 0.0}
    finally:
        await naive.close()

    station2 = await modbus_station()
    station2.sleep_after_s = 30.0
    station2.wake_time_s = 0.3
    station2.set_registers(1, 3, [2])
    station2.set_int16(1, 4, 187)
    patient = gauge(station2, "generic_4_20ma", wake_delay_s=0.4)
    try:
        assert await poll_metrics(patient) == {"level_m": 1.87}
    finally:
        await patient.close()


async def test_device_disappears_and_comes_back(modbus_station: StationFactory) -> None:
    station = await modbus_station()
    station.set_registers(1, 3, [0])
    station.set_int16(1, 4, 7)
    driver = gauge(station, "generic_4_20ma", timeout_s=0.5)
    try:
        assert await poll_metrics(driver) == {"level_m": 7.0}
        await station.stop()
        with pytest.raises(DriverError):
            await driver.poll()
        with pytest.raises(DriverError):
            await driver.poll()
        await station.start()
        station.set_int16(1, 4, 8)
        assert await poll_metrics(driver) == {"level_m": 8.0}
    finally:
        await driver.close()
