"""The BLE streaming path end to end: FAKE radio -> scanner -> agent -> real Mosquitto -> hub
-> real InfluxDB. No test machine has a Bluetooth radio, so the named fake backend
(``tests/drivers/fake_bleak_backend.py``) stands in for it under the real ``BleakScanner``;
everything after the radio is the real thing."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from device_registry.directory import DeviceRecord
from drivers.ble import FAMILY as BLE
from drivers.ble.ble_scanner import BleSensorScanner
from drivers.ble.bthome import BTHOME_UUID
from drivers.ble.pvvx import PVVX_UUID
from drivers.framework import DeviceSpec, DriverConfig, DriverFamily
from hub.ingest import StatusChange
from hub.settings import Settings
from tests.agent.conftest import agent_settings, by_topic, running_agent, wait_until
from tests.conftest import MqttClientFactory, RunningStack
from tests.drivers.fake_bleak_backend import FakeBleakScannerBackend
from tests.ingest.conftest import HubFactory

KEY = "231d39c1d7cc1ab1aee224cd096db932"  # the BTHome documentation's example key
WRONG_KEY = "814aac74c4f17b6c1581e1ab87816b99"
# The documentation's encrypted example (MAC 54:48:E6:8F:80:A5): 25.06 degC, 50.55 %.
ENCRYPTED = bytes.fromhex("41a47266c95f730011223378237214")
CLIMATE_MAC, BUTTON_MAC, PVVX_MAC = "A4:C1:38:00:20:01", "A4:C1:38:00:20:02", "A4:C1:38:C6:77:14"
KEYED_MAC, WRONG_MAC = "54:48:E6:8F:80:A5", "54:48:E6:8F:80:A6"
PVVX_PAYLOAD = bytes.fromhex("1477c638c1a4fcffda1cd10a3f9d0d")
scanners: list[BleSensorScanner] = []


def fake_radio_scanner(devices: Sequence[tuple[DeviceSpec, DriverConfig]]) -> BleSensorScanner:
    """The BLE family's factory over the FAKE radio; the test keeps the scanner to look at."""
    scanner = BleSensorScanner(devices, backend=FakeBleakScannerBackend)
    scanners.append(scanner)
    return scanner


FAMILIES: dict[str, DriverFamily] = {
    "ble": dataclasses.replace(BLE, create_stream=fake_radio_scanner)
}


def ble_record(
    device_id: str, gateway_id: str, device_type: str, mac: str, interval_s: float, **config: Any
) -> DeviceRecord:
    """A registered BLE sensor with its type's schema, as the registry hands it out."""
    return DeviceRecord(
        device_id=device_id,
        family="ble",
        device_type=device_type,
        gateway_id=gateway_id,
        expected_interval_s=interval_s,
        protocol="ble",
        address=mac,
        driver_config={"min_interval_s": 0, **config},
        metrics=BLE.metric_schema(BLE.device_type(device_type).metrics),
    )


async def test_adverts_reach_the_hub_and_a_silent_sensor_is_reported_offline(
    running_stack: RunningStack,
    test_settings: Settings,
    influx_db: str,
    mqtt_client: MqttClientFactory,
    tmp_path: Path,
    unique_id: str,
) -> None:
    gw = f"gw-{unique_id}"
    climate, button, keyed, wrong, pump = (
        f"{unique_id}-{name}" for name in ("climate", "button", "keyed", "wrong", "pump")
    )
    records = [
        ble_record(climate, gw, "bthome_climate", CLIMATE_MAC, 0.5),
        ble_record(button, gw, "bthome_button", BUTTON_MAC, 3600),
        ble_record(keyed, gw, "bthome_sensor", KEYED_MAC, 3600, bindkey=KEY),
        ble_record(wrong, gw, "bthome_sensor", WRONG_MAC, 3600, bindkey=WRONG_KEY),
        ble_record(pump, gw, "thermometer", PVVX_MAC, 3600, contact_means_leak=True),
    ]
    hubs = HubFactory(running_stack, test_settings, tmp_path, unique_id)
    hubs.devices(*records)
    try:
        service = await asyncio.to_thread(hubs.start, offline_factor=3.0)
        changes: list[StatusChange] = []
        service.status.subscribe(changes.append)
        watcher = mqtt_client()
        watcher.subscribe(f"kota/v1/gw/{gw}/#")

        def rows(query: str) -> list[dict[str, Any]]:
            return running_stack.influx.rows(query, database=influx_db)

        def climate_rows() -> list[dict[str, Any]]:
            return rows(f"SELECT * FROM ble WHERE device_id = '{climate}'")

        async with running_agent(agent_settings(test_settings), gw, records, families=FAMILIES):
            await wait_until(lambda: bool(FakeBleakScannerBackend.running), timeout_s=20)
            radio = FakeBleakScannerBackend.running[-1]
            scanner = scanners[-1]
            # The climate sensor advertises (two temperatures, humidity, battery) every 0.1 s.
            packet, last_advert_ms = 0, 0
            while not climate_rows() and packet < 250:
                packet += 1
                data = bytes([0x40, 0x00, packet]) + bytes.fromhex("016102ca0902cf0903bf13")
                last_advert_ms = time.time_ns() // 1_000_000
                radio.advertise(CLIMATE_MAC, service_data={BTHOME_UUID: data}, rssi=-58)
                await asyncio.sleep(0.1)
            radio.advertise(BUTTON_MAC, service_data={BTHOME_UUID: bytes.fromhex("4000093a02")})
            radio.advertise(KEYED_MAC, service_data={BTHOME_UUID: ENCRYPTED}, rssi=-66)
            for _ in range(3):
                radio.advertise(WRONG_MAC, service_data={BTHOME_UUID: ENCRYPTED})
            radio.advertise(PVVX_MAC, service_data={PVVX_UUID: PVVX_PAYLOAD})
            await wait_until(
                lambda: bool(rows(f"SELECT * FROM ble_event WHERE device_id = '{button}'")),
                timeout_s=20,
            )
            await wait_until(
                lambda: bool(rows(f"SELECT * FROM ble WHERE device_id = '{pump}'")), timeout_s=20
            )
            await wait_until(
                lambda: bool(rows(f"SELECT * FROM ble WHERE device_id = '{keyed}'")), timeout_s=20
            )
            # The climate sensor fell silent: after 3 x 0.5 s the hub says it is offline.
            await wait_until(lambda: service.status.online(climate) is False, timeout_s=20)
            # While the others stay as they were.
            assert service.status.online(button) is True
            assert service.status.online(wrong) is None  # never heard from: nothing decoded
            assert scanner.errors == {
                wrong: "decryption failed: wrong bindkey, or a forged advertisement"
            }
    finally:
        await asyncio.to_thread(hubs.stop_all)

    row = climate_rows()[0]
    assert row["temperature_c"] == 25.06
    assert row["temperature_c_2"] == 25.11
    assert row["humidity_pct"] == 50.55
    assert row["battery_pct"] == 97
    assert row["rssi_dbm"] == -58
    assert row["family"] == "ble"
    (event,) = rows(f"SELECT * FROM ble_event WHERE device_id = '{button}'")
    assert event["button"] == "double_press"
    (keyed_row,) = rows(f"SELECT * FROM ble WHERE device_id = '{keyed}'")
    assert (keyed_row["temperature_c"], keyed_row["humidity_pct"]) == (25.06, 50.55)
    (pump_row,) = rows(f"SELECT * FROM ble WHERE device_id = '{pump}'")
    assert pump_row["water_leak"] is True
    assert pump_row["temperature_c"] == -0.04
    assert not rows(f"SELECT * FROM ble WHERE device_id = '{wrong}'")
    # Nothing of these devices was refused by the hub.
    for device_id in (climate, button, keyed, wrong, pump):
        assert not rows(f"SELECT * FROM deadletter WHERE device_id = '{device_id}'"), device_id
    # The hub's status record: online from data, offline for silence.
    climate_changes = [(c.online, c.reason) for c in changes if c.device_id == climate]
    assert climate_changes[0][0] is True  # online (the agent's status or the first data)
    assert climate_changes[-1] == (False, "silent")
    offline = [c for c in changes if c.device_id == climate][-1]
    assert offline.time_ms >= last_advert_ms + 1500  # not before 3 x 0.5 s of silence
    await wait_until(
        lambda: bool(
            rows(f"SELECT online, reason FROM device_status WHERE device_id = '{climate}'")
        ),
        timeout_s=20,
    )
    statuses = rows(f"SELECT online, reason FROM device_status WHERE device_id = '{climate}'")
    assert (statuses[-1]["online"], statuses[-1]["reason"]) == (0.0, "silent")
    # The agent published the climate sensor online once heard (retained), per the contract.
    published = by_topic(watcher.messages, f"dev/{climate}/status")
    assert [s["online"] for s in published][:1] == [True]
    telemetry = by_topic(watcher.messages, f"dev/{climate}/telemetry")
    assert telemetry[0]["metrics"]["temperature_c_2"] == 25.11
    # Leave no retained status on the shared broker for other tests' hubs to meet.
    for device_id in (climate, button, keyed, wrong, pump):
        watcher.publish(f"kota/v1/gw/{gw}/dev/{device_id}/status", b"", retain=True)
    watcher.publish(f"kota/v1/gw/{gw}/status", b"", retain=True)
