"""BLE sensors (BTHome v2 through bthome-ble, pvvx and atc1441) heard by the gateway's scanner."""

from __future__ import annotations

from drivers.ble.ble_scanner import BleSensorConfig, create_scanner
from drivers.ble.metrics import BLE_METRICS
from drivers.framework import DeviceTypeSpec, DriverFamily

BLE_DEVICE_TYPES = (
    DeviceTypeSpec(
        name="thermometer",
        protocol="ble",
        expected_interval_s=60.0,
        metrics=(
            "temperature_c",
            "humidity_pct",
            "battery_v",
            "battery_pct",
            "water_leak",
            "rssi_dbm",
        ),
        description="Thermometer with pvvx (ATC_MiThermometer) firmware",
    ),
    DeviceTypeSpec(
        name="bthome_climate",
        protocol="ble",
        expected_interval_s=60.0,
        metrics=(
            "temperature_c",
            "temperature_c_2",
            "humidity_pct",
            "dewpoint_c",
            "pressure_hpa",
            "battery_pct",
            "voltage_v",
            "packet_id",
            "button",
            "rssi_dbm",
        ),
        description="BTHome temperature/humidity sensor (Shelly BLU H&T, ATC with BTHome)",
    ),
    DeviceTypeSpec(
        name="bthome_button",
        protocol="ble",
        # Buttons advertise only when pressed (and a heartbeat): allow an hour of quiet.
        expected_interval_s=3600.0,
        metrics=(
            "button",
            "button_2",
            "button_3",
            "button_4",
            "battery_pct",
            "packet_id",
            "rssi_dbm",
        ),
        description="BTHome button or remote (Shelly BLU Button1, RC Button 4); presses are events",
    ),
    DeviceTypeSpec(
        name="bthome_sensor",
        protocol="ble",
        expected_interval_s=60.0,
        metrics=tuple(m.key for m in BLE_METRICS),
        description="Any BTHome v2 sensor: every object and event bthome-ble knows",
    ),
)

FAMILY = DriverFamily(
    name="ble",
    description="BLE sensors: BTHome v2 (every object, events, encryption), pvvx, atc1441",
    protocols=("ble",),
    metrics=BLE_METRICS,
    device_types=BLE_DEVICE_TYPES,
    config_model=BleSensorConfig,
    create_stream=create_scanner,
)
