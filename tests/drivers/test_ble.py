"""BLE: decoding on documented advertisement bytes; the scanner over a FAKE bleak backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from drivers.ble import FAMILY as BLE
from drivers.ble.ble_scanner import BleSensorScanner
from drivers.ble.bthome import BTHOME_UUID, BTHomeError, decode_bthome
from drivers.ble.pvvx import PVVX_UUID, PvvxError, decode_pvvx
from drivers.framework import DeviceSpec, DriverConfigError, Reading
from tests.drivers.fake_bleak_backend import FakeBleakScannerBackend

# Examples from the BTHome v2 format documentation (bthome.io/format): object id + value.
BTHOME_DOC_EXAMPLES = [
    ("400161", {"battery_pct": 97}),
    ("4002CA09", {"temperature_c": 25.06}),
    ("4003BF13", {"humidity_pct": 50.55}),
    ("4008CA06", {"dewpoint_c": 17.38}),
    ("4014020C", {"moisture_pct": 30.74}),
    ("402E23", {"humidity_pct": 35}),
    ("402001", {"water_leak": True}),
    ("402000", {"water_leak": False}),
    ("40", {}),
    # The documentation's whole advertisement "DIY-sensor": temperature 25.00, humidity 50.55.
    ("4002C40903BF13", {"temperature_c": 25.0, "humidity_pct": 50.55}),
]

# pvvx custom-format payloads quoted in pvvx/ATC_MiThermometer issue #13 (a sensor below 0 degC).
PVVX_REAL = [
    (
        "1477c638c1a4fcffda1cd10a3f9d0d",
        {"temperature_c": -0.04, "humidity_pct": 73.86, "battery_v": 2.769, "battery_pct": 63},
    ),
    (
        "1477c638c1a4f4ff041dcb0a3eaf0d",
        {"temperature_c": -0.12, "humidity_pct": 74.28, "battery_v": 2.763, "battery_pct": 62},
    ),
]


@pytest.mark.parametrize(("hex_data", "expected"), BTHOME_DOC_EXAMPLES)
def test_bthome_documentation_examples(hex_data: str, expected: dict[str, object]) -> None:
    assert decode_bthome(bytes.fromhex(hex_data)) == expected


@pytest.mark.parametrize(
    ("hex_data", "reason"),
    [
        ("", "empty"),
        ("0002CA09", "version 0"),
        ("4102CA09", "encrypted"),
        ("4002CA", "truncated"),
        ("40FF01", "unknown object id 0xFF"),
    ],
)
def test_bthome_rejects_with_reason(hex_data: str, reason: str) -> None:
    with pytest.raises(BTHomeError, match=reason):
        decode_bthome(bytes.fromhex(hex_data))


@pytest.mark.parametrize(("hex_data", "expected"), PVVX_REAL)
def test_pvvx_real_payloads(hex_data: str, expected: dict[str, object]) -> None:
    mac, metrics = decode_pvvx(bytes.fromhex(hex_data))
    assert mac == "A4:C1:38:C6:77:14"
    assert {k: metrics[k] for k in expected} == expected
    assert metrics["contact"] is True  # flags 0x0d: bit 0 set


def test_pvvx_rejects_other_lengths() -> None:
    with pytest.raises(PvvxError, match="expected 15 bytes"):
        decode_pvvx(bytes(13))


def ble_spec(device_id: str, mac: str, **config: object) -> DeviceSpec:
    return DeviceSpec(
        device_id=device_id,
        device_type="thermometer",
        protocol="ble",
        address=mac,
        driver_config={"min_interval_s": 0, **config},
    )


def test_ble_config_refuses_a_bad_mac() -> None:
    with pytest.raises(DriverConfigError, match="MAC address"):
        BLE.validate(ble_spec("s1", "not-a-mac"))


async def next_reading(stream: object, timeout_s: float = 2.0) -> Reading:
    reading = await asyncio.wait_for(stream.__anext__(), timeout_s)  # type: ignore[attr-defined]
    assert isinstance(reading, Reading)
    return reading


async def test_scanner_with_fake_backend_decodes_registered_sensors_only() -> None:
    bthome_mac, pvvx_mac = "A4:C1:38:00:11:22", "A4:C1:38:C6:77:14"
    devices = [
        (spec, BLE.validate(spec))
        for spec in (
            ble_spec("ble-bthome", bthome_mac.lower()),
            ble_spec("ble-leak", pvvx_mac, contact_means_leak=True, min_interval_s=60),
        )
    ]
    scanner = BleSensorScanner(devices, backend=FakeBleakScannerBackend)
    stream = scanner.stream()
    assert isinstance(stream, AsyncGenerator)
    first = asyncio.ensure_future(next_reading(stream))
    for _ in range(100):  # let the scanner start its (fake) radio
        if FakeBleakScannerBackend.running:
            break
        await asyncio.sleep(0.01)
    radio = FakeBleakScannerBackend.running[-1]
    try:
        radio.advertise("11:22:33:44:55:66", service_data={BTHOME_UUID: bytes.fromhex("4002CA09")})
        radio.advertise(
            bthome_mac, service_data={BTHOME_UUID: bytes.fromhex("4002C40903BF13")}, rssi=-61
        )
        reading = await first
        assert reading.device_id == "ble-bthome"
        assert reading.metrics == {"temperature_c": 25.0, "humidity_pct": 50.55, "rssi_dbm": -61}

        payload = bytes.fromhex(PVVX_REAL[0][0])
        radio.advertise(pvvx_mac, service_data={PVVX_UUID: payload})
        radio.advertise(pvvx_mac, service_data={PVVX_UUID: payload})  # within min_interval_s
        reading = await next_reading(stream)
        assert reading.device_id == "ble-leak"
        assert reading.metrics["water_leak"] is True
        assert reading.metrics["temperature_c"] == -0.04

        radio.advertise(bthome_mac, service_data={BTHOME_UUID: bytes.fromhex("40FF")})
        radio.advertise(bthome_mac, service_data={BTHOME_UUID: bytes.fromhex("402001")})
        reading = await next_reading(stream)
        assert reading.metrics == {"water_leak": True, "rssi_dbm": -70}
    finally:
        await stream.aclose()
    assert scanner.unknown_adverts == 1
    assert scanner.undecodable == 1
    assert scanner._queue.empty()  # the second pvvx advert was held back by min_interval_s
    assert not FakeBleakScannerBackend.running  # the scanner stopped the radio
