"""The driver framework: discovery without a central list, config validation, readings."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest

from drivers.flood import FAMILY as FLOOD
from drivers.flood.flood_gauge import FloodGaugeConfig
from drivers.flood.rain_counter import TipCounter
from drivers.flood.register_map import float_to_registers, words_to_bytes
from drivers.framework import (
    DeviceSpec,
    DriverConfigError,
    Metric,
    Reading,
    discover_families,
    families_by_protocol,
)


def test_families_are_discovered_from_the_package() -> None:
    families = discover_families()
    assert {"flood", "ble", "gps"} <= set(families)
    by_protocol = families_by_protocol(families)
    assert by_protocol["modbus_tcp"].name == "flood"
    assert by_protocol["modbus_rtu_tcp"].name == "flood"
    for family in families.values():
        assert family.metrics, f"{family.name} declares no metrics"
        assert len({m.key for m in family.metrics}) == len(family.metrics)


def test_flood_metric_table() -> None:
    keys = {m.key for m in FLOOD.metrics}
    assert {
        "level_m",
        "rain_mm",
        "pump_on",
        "basin_level_m",
        "battery_v",
        "signal_quality_db",
        "sensor_status",
    } <= keys
    assert FLOOD.metric("pump_on").type == "bool"
    assert FLOOD.metric("level_m").unit == "m"


def test_metric_names_follow_the_contract() -> None:
    with pytest.raises(ValueError, match="naming rule"):
        Metric(key="Level-M", unit="m", type="float", description="bad")


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        ("ABCD", [0x4049, 0x0FDB]),
        ("CDAB", [0x0FDB, 0x4049]),
        ("BADC", [0x4940, 0xDB0F]),
        ("DCBA", [0xDB0F, 0x4940]),
    ],
)
def test_word_orders_decode_pi(order: str, registers: list[int]) -> None:
    # 3.1415927 as float32 is 0x40490FDB; each order lays those bytes out differently.
    value = struct.unpack(">f", words_to_bytes(registers, order))[0]  # type: ignore[arg-type]
    assert value == pytest.approx(3.1415927)
    assert float_to_registers(value, order) == registers  # type: ignore[arg-type]


def test_tip_counter_wrap_and_reset() -> None:
    counter = TipCounter(max_tips_per_reading=100)
    assert counter.increment(65_500) == 0
    assert counter.increment(65_535) == 35
    assert counter.increment(20) == 21  # wrap
    assert counter.increment(30_000) == 29_980
    assert counter.increment(5) == 5  # reset: too far to be a wrap


def spec(device_type: str = "vegapuls_c21", **config: object) -> DeviceSpec:
    return DeviceSpec(
        device_id="gauge-1",
        device_type=device_type,
        protocol="modbus_tcp",
        address="10.0.0.5:502",
        driver_config=config,
    )


def test_config_is_validated_without_network() -> None:
    config = FLOOD.validate(spec(word_order="CDAB"))
    assert config.timeout_s == 5.0
    assert isinstance(config, FloodGaugeConfig)
    assert config.address == "10.0.0.5:502"  # from the registry's address


@pytest.mark.parametrize(
    ("device_spec", "message"),
    [
        (spec(word_order="ACBD"), "word_order"),
        (spec(wordorder="CDAB"), "wordorder"),
        (spec(unit_id=300), "unit_id"),
        (spec("radar_9000"), "not a flood model"),
        (spec("user_defined"), "registers"),
        (spec(timeout_s=1.0, wake_delay_s=2.0), "wake_delay_s"),
        (
            DeviceSpec(device_id="gauge-1", device_type="vegapuls_c21", protocol="modbus_tcp"),
            "address",
        ),
        (
            spec("user_defined", registers=[{"metric": "level_m", "type": "bit", "address": 1}]),
            "needs 'bit'",
        ),
    ],
)
def test_bad_config_names_the_field(device_spec: DeviceSpec, message: str) -> None:
    with pytest.raises(DriverConfigError) as caught:
        FLOOD.validate(device_spec)
    assert caught.value.device_id == "gauge-1"
    assert message in str(caught.value)


def test_reading_payload_follows_the_contract() -> None:
    ts = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    reading = Reading(device_id="g", ts=ts, metrics={"level_m": -0.5, "pump_on": True}, seq=42)
    # ts in epoch milliseconds: the hub's fast path (RFC 3339 text takes its slow one).
    assert reading.payload() == (
        b'{"ts":1795341600123,"seq":42,"metrics":{"level_m":-0.5,"pump_on":true}}'
    )
    with pytest.raises(ValueError, match="not finite"):
        Reading(device_id="g", ts=ts, metrics={"level_m": float("nan")})
