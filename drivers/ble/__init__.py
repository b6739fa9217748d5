"""BLE sensors (BTHome v2, pvvx custom format) heard by a scanner on the gateway."""

from __future__ import annotations

from drivers.ble.ble_scanner import BleSensorConfig, create_scanner
from drivers.ble.metrics import BLE_METRICS
from drivers.framework import DriverFamily

FAMILY = DriverFamily(
    name="ble",
    description="BLE temperature, humidity, battery and leak sensors (BTHome v2, pvvx)",
    protocols=("ble",),
    metrics=BLE_METRICS,
    config_model=BleSensorConfig,
    create_stream=create_scanner,
)
