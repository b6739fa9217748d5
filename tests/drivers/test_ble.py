"""BLE: BTHome through bthome-ble, pvvx and atc1441 on documented bytes; config; the scanner
over a FAKE bleak backend (no test machine has a radio)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import AsyncGenerator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble import FAMILY as BLE
from drivers.ble.ble_scanner import BleSensorScanner
from drivers.ble.bthome import BTHOME_UUID, BTHomeDecoder, BTHomeError, decode_bthome
from drivers.ble.pvvx import PVVX_UUID, PvvxError, decode_atc1441, decode_pvvx
from drivers.framework import DeviceSpec, DriverConfigError, Reading, utc_now
from tests.drivers.fake_bleak_backend import FakeBleakScannerBackend

# Examples from the BTHome v2 format documentation (bthome.io/format): object id + value.
BTHOME_DOC_EXAMPLES = [
    ("400161", {"battery_pct": 97}),
    ("4002CA09", {"temperature_c": 25.06}),
    ("4003BF13", {"humidity_pct": 50.55}),
    ("4008CA06", {"dewpoint_c": 17.38}),
    ("4014020C", {"moisture_pct": 30.74}),
    ("402E23", {"humidity_pct": 35.0}),
    ("402001", {"water_leak": True}),
    ("402000", {"water_leak": False}),
    ("40", {}),
    # The documentation's whole advertisement "DIY-sensor": temperature 25.00, humidity 50.55.
    ("4002C40903BF13", {"temperature_c": 25.0, "humidity_pct": 50.55}),
]

# Issue 20's advertisements, decoded as bthome-ble 3.25 decodes them (the reference).
ISSUE_20 = [
    # A Shelly BLU H&T display: 0x1E (light) no longer throws the advertisement away.
    (
        "40002e01641e012e34451601",
        {
            "packet_id": 46,
            "battery_pct": 100,
            "light_detected": True,
            "humidity_pct": 52.0,
            "temperature_c": 27.8,
        },
    ),
    # A button press (0x3A) keeps the battery reading beside the event.
    ("40005201643a01", {"packet_id": 82, "battery_pct": 100, "button": "press"}),
    # Two temperatures: numbered, not overwritten.
    ("4002ca0902cf09", {"temperature_c": 25.06, "temperature_c_2": 25.11}),
    # A truncated last object keeps what came before it.
    ("4002ca0903bf", {"temperature_c": 25.06}),
    # Info byte bit 1: the sensor's MAC follows (A4:C1:38:8D:18:B2), then pressure.
    ("42b2188d38c1a404138a01", {"pressure_hpa": 1008.83}),
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
# atc1441: built from the layout in the atc1441 firmware README (MAC in order, then
# ">hBBHB": 0.1 degC, %, %, mV, counter), the reading ble_monitor's parser does.
ATC1441 = bytes.fromhex("a4c138c67714") + struct.pack(">hBBHB", -57, 81, 72, 2890, 7)


@pytest.mark.parametrize(("hex_data", "expected"), BTHOME_DOC_EXAMPLES)
def test_bthome_documentation_examples(hex_data: str, expected: dict[str, object]) -> None:
    assert decode_bthome(bytes.fromhex(hex_data)) == expected


@pytest.mark.parametrize(("hex_data", "expected"), ISSUE_20)
def test_issue_20_advertisements_decode_as_the_reference(
    hex_data: str, expected: dict[str, object]
) -> None:
    assert decode_bthome(bytes.fromhex(hex_data)) == expected


def test_issue_20_button_is_an_event_and_the_battery_telemetry() -> None:
    advert = BTHomeDecoder().decode("A4:C1:38:00:11:22", bytes.fromhex("40005201643a01"))
    assert advert.metrics == {"packet_id": 82, "battery_pct": 100}
    assert advert.events == {"button": "press"}


def test_issue_20_mac_flag_without_a_mac_gives_nothing_like_the_reference() -> None:
    # The old decoder read 46042d9310 as 10,862.53 hPa; bit 1 says 6 MAC bytes follow.
    with pytest.raises(BTHomeError, match="bit 1"):
        decode_bthome(bytes.fromhex("46042d9310"))


@pytest.mark.parametrize(
    ("hex_data", "reason"),
    [
        ("", "empty"),
        ("0002CA09", "version 0"),
        ("4102CA09", "no bindkey"),
        ("4002CA", "truncated"),
        ("40FF01", "unknown object id 0xFF at byte 1"),
        ("403afe", "does not define"),
    ],
)
def test_bthome_rejects_with_reason(hex_data: str, reason: str) -> None:
    with pytest.raises(BTHomeError, match=reason):
        decode_bthome(bytes.fromhex(hex_data))


def test_bthome_repeated_packet_id_is_a_duplicate_not_an_error() -> None:
    decoder = BTHomeDecoder()
    first = decoder.decode("A4:C1:38:00:11:22", bytes.fromhex("4000520164"))
    again = decoder.decode("A4:C1:38:00:11:22", bytes.fromhex("4000520164"))
    later = decoder.decode("A4:C1:38:00:11:22", bytes.fromhex("4000530163"))
    assert first.metrics == {"packet_id": 82, "battery_pct": 100}
    assert again.duplicate
    assert not again.metrics
    assert later.metrics == {"packet_id": 83, "battery_pct": 99}  # no stale values either


def test_bthome_dimmer_and_four_buttons_as_numbered_events() -> None:
    dimmer = decode_bthome(bytes.fromhex("443c0103"))
    assert dimmer == {"dimmer": "rotate_left", "dimmer_steps": 3}
    # Shelly BLU RC Button 4 style: buttons 1 and 3 idle (0x00), 2 pressed, 4 long press.
    buttons = decode_bthome(bytes.fromhex("443a003a013a003a04"))
    assert buttons == {"button_2": "press", "button_4": "long_press"}


@given(st.binary(max_size=40))
@settings(max_examples=300, deadline=None)
def test_no_bthome_payload_raises_anything_but_bthome_error(data: bytes) -> None:
    for payload in (data, b"\x40" + data, b"\x44" + data, b"\x41" + data):
        try:
            metrics = decode_bthome(payload)
        except BTHomeError:
            continue
        assert all(BLE.metric(name) for name in metrics)  # every name is a table row
        Reading(device_id="fuzz", ts=utc_now(), metrics=metrics)  # and a valid reading


@given(st.binary(max_size=40), st.binary(min_size=16, max_size=16))
@settings(max_examples=150, deadline=None)
def test_no_encrypted_payload_raises_anything_but_bthome_error(data: bytes, key: bytes) -> None:
    with contextlib.suppress(BTHomeError):
        BTHomeDecoder(bindkey=key).decode("54:48:E6:8F:80:A5", b"\x41" + data)


@pytest.mark.parametrize(("hex_data", "expected"), PVVX_REAL)
def test_pvvx_real_payloads(hex_data: str, expected: dict[str, object]) -> None:
    mac, metrics = decode_pvvx(bytes.fromhex(hex_data))
    assert mac == "A4:C1:38:C6:77:14"
    assert {k: metrics[k] for k in expected} == expected
    assert metrics["contact"] is True  # flags 0x0d: bit 0 set


def test_atc1441_13_bytes_on_the_same_uuid() -> None:
    mac, metrics = decode_pvvx(ATC1441)
    assert mac == "A4:C1:38:C6:77:14"
    assert metrics == {
        "temperature_c": -5.7,
        "humidity_pct": 81.0,
        "battery_v": 2.89,
        "battery_pct": 72,
    }
    assert decode_atc1441(ATC1441) == (mac, metrics)


def test_pvvx_rejects_other_lengths() -> None:
    with pytest.raises(PvvxError, match=r"expected 15 .* or 13"):
        decode_pvvx(bytes(14))


@given(st.binary(max_size=20))
def test_no_0x181a_payload_raises_anything_but_pvvx_error(data: bytes) -> None:
    with contextlib.suppress(PvvxError):
        decode_pvvx(data)


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


SECRET = "231d39c1d7cc1ab1aee224cd096db932"


def test_ble_config_refuses_a_bad_bindkey_without_quoting_it() -> None:
    bad = SECRET[:-1] + "z"
    with pytest.raises(DriverConfigError, match=r"bindkey.*32 hex characters") as info:
        BLE.validate(ble_spec("s1", "54:48:E6:8F:80:A5", bindkey=bad))
    assert bad not in str(info.value)
    config = BLE.validate(ble_spec("s1", "54:48:E6:8F:80:A5", bindkey=SECRET))
    assert SECRET not in repr(config)
    assert SECRET not in str(config)


async def next_reading(stream: object, timeout_s: float = 5.0) -> Reading:
    reading = await asyncio.wait_for(stream.__anext__(), timeout_s)  # type: ignore[attr-defined]
    assert isinstance(reading, Reading)
    return reading


def open_stream(scanner: BleSensorScanner) -> AsyncGenerator[Reading, None]:
    stream = scanner.stream()
    assert isinstance(stream, AsyncGenerator)
    return stream


async def started_radio() -> FakeBleakScannerBackend:
    for _ in range(500):  # let the scanner start its (fake) radio
        if FakeBleakScannerBackend.running:
            return FakeBleakScannerBackend.running[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("the scanner did not start the fake radio")


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
    stream = open_stream(scanner)
    first = asyncio.ensure_future(next_reading(stream))
    radio = await started_radio()
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

        # A button press: the event on its own, then the battery as telemetry.
        radio.advertise(bthome_mac, service_data={BTHOME_UUID: bytes.fromhex("40005201643a01")})
        event, telemetry = await next_reading(stream), await next_reading(stream)
        assert (event.kind, event.metrics) == ("event", {"button": "press"})
        assert telemetry.kind == "telemetry"
        assert telemetry.metrics == {"packet_id": 82, "battery_pct": 100, "rssi_dbm": -70}
    finally:
        await stream.aclose()
    assert scanner.unknown_adverts == 1
    assert scanner.undecodable == 1
    assert scanner.errors == {}  # ble-bthome decoded again after its bad advert
    assert scanner._queue.empty()  # the second pvvx advert was held back by min_interval_s
    assert not FakeBleakScannerBackend.running  # the scanner stopped the radio


async def test_events_and_trigger_based_adverts_pass_min_interval() -> None:
    mac = "A4:C1:38:00:11:23"
    spec = ble_spec("ble-door", mac, min_interval_s=3600)
    scanner = BleSensorScanner([(spec, BLE.validate(spec))], backend=FakeBleakScannerBackend)
    stream = open_stream(scanner)
    first = asyncio.ensure_future(next_reading(stream))
    radio = await started_radio()
    try:
        radio.advertise(mac, service_data={BTHOME_UUID: bytes.fromhex("4000011101")})
        assert (await first).metrics["open"] is True
        radio.advertise(mac, service_data={BTHOME_UUID: bytes.fromhex("4000021100")})  # held
        # Info bit 2 (trigger based): the door closing is published at once.
        radio.advertise(mac, service_data={BTHOME_UUID: bytes.fromhex("4400031100")})
        closed = await next_reading(stream)
        assert closed.metrics == {"packet_id": 3, "open": False, "rssi_dbm": -70}
        radio.advertise(mac, service_data={BTHOME_UUID: bytes.fromhex("4000043a02")})
        event = await next_reading(stream)
        assert (event.kind, event.metrics) == ("event", {"button": "double_press"})
    finally:
        await stream.aclose()


async def test_a_wrong_bindkey_is_one_devices_error_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The BTHome format documentation's encrypted example (key 231d39c1...): 25.06 degC, 50.55 %.
    encrypted = bytes.fromhex("41a47266c95f730011223378237214")
    good_mac, bad_mac = "54:48:E6:8F:80:A5", "54:48:E6:8F:80:A6"
    wrong = "814aac74c4f17b6c1581e1ab87816b99"
    specs = [ble_spec("ble-good", good_mac, bindkey=SECRET), ble_spec("ble-bad", bad_mac)]
    specs.append(ble_spec("ble-wrong", "54:48:E6:8F:80:A7", bindkey=wrong))
    scanner = BleSensorScanner(
        [(s, BLE.validate(s)) for s in specs], backend=FakeBleakScannerBackend
    )
    stream = open_stream(scanner)
    first = asyncio.ensure_future(next_reading(stream))
    radio = await started_radio()
    caplog.set_level(logging.INFO, logger="drivers.ble.ble_scanner")
    try:
        for _ in range(3):
            radio.advertise("54:48:E6:8F:80:A7", service_data={BTHOME_UUID: encrypted})
            radio.advertise(bad_mac, service_data={BTHOME_UUID: encrypted})
        radio.advertise(good_mac, service_data={BTHOME_UUID: encrypted})
        reading = await first
    finally:
        await stream.aclose()
    assert reading.device_id == "ble-good"
    assert reading.metrics == {"temperature_c": 25.06, "humidity_pct": 50.55, "rssi_dbm": -70}
    assert scanner.errors == {
        "ble-wrong": "decryption failed: wrong bindkey, or a forged advertisement",
        "ble-bad": "encrypted advertisement, and driver_config has no bindkey",
    }
    assert scanner.key_errors == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per device, not once per advert
    assert not any(SECRET in r.getMessage() or wrong in r.getMessage() for r in caplog.records)


async def test_bthome_is_read_before_other_0x181a_data() -> None:
    # bthome-ble's test_bthome_multiple_uuids: an ATC sending BTHome and another layout.
    mac = "A4:C1:38:8D:18:B2"
    spec = ble_spec("ble-multi", mac)
    scanner = BleSensorScanner([(spec, BLE.validate(spec))], backend=FakeBleakScannerBackend)
    stream = open_stream(scanner)
    first = asyncio.ensure_future(next_reading(stream))
    radio = await started_radio()
    try:
        radio.advertise(
            mac,
            service_data={
                PVVX_UUID: bytes.fromhex("c4248138c1a456088318bf"),
                BTHOME_UUID: bytes.fromhex("40015d025d0903b718"),
            },
            name="ATC_8D18B2",
        )
        reading = await first
    finally:
        await stream.aclose()
    assert reading.metrics == {
        "battery_pct": 93,
        "temperature_c": 23.97,
        "humidity_pct": 63.27,
        "rssi_dbm": -70,
    }


def test_a_decoder_bug_costs_that_advert_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    specs = [ble_spec("ble-a", "A4:C1:38:00:30:01"), ble_spec("ble-b", "A4:C1:38:00:30:02")]
    scanner = BleSensorScanner([(s, BLE.validate(s)) for s in specs])

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("library bug")

    monkeypatch.setattr(scanner._bthome["ble-a"], "decode", broken)
    for mac in ("A4:C1:38:00:30:01", "A4:C1:38:00:30:02"):
        adv = SimpleNamespace(
            service_data={BTHOME_UUID: bytes.fromhex("4002ca09")}, local_name=None, rssi=-70
        )
        scanner.on_advertisement(SimpleNamespace(address=mac), adv)
    assert scanner.errors == {"ble-a": "decoder error RuntimeError: library bug"}
    reading = scanner._queue.get_nowait()
    assert (reading.device_id, reading.metrics) == (
        "ble-b",
        {"temperature_c": 25.06, "rssi_dbm": -70},
    )
