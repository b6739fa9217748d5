"""BLE sensors (BTHome v2, pvvx custom format) heard by a scanner on the gateway."""

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
        name="bthome_sensor",
        protocol="ble",
        expected_interval_s=60.0,
        metrics=tuple(m.key for m in BLE_METRICS),
        description="Any BTHome v2 sensor",
    ),
)

FAMILY = DriverFamily(
    name="ble",
    description="BLE temperature, humidity, battery and leak sensors (BTHome v2, pvvx)",
    protocols=("ble",),
    metrics=BLE_METRICS,
    device_types=BLE_DEVICE_TYPES,
    config_model=BleSensorConfig,
    create_stream=create_scanner,
)
