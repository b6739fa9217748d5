"""Flood gauges, rain gauges and pump stations over Modbus TCP and RTU-over-TCP."""

from __future__ import annotations

from drivers.flood.device_types import flood_device_types
from drivers.flood.flood_gauge import FloodGaugeConfig, check_device, create_flood_gauge
from drivers.flood.metrics import FLOOD_METRICS
from drivers.flood.register_map import shipped_models
from drivers.framework import DriverFamily

FAMILY = DriverFamily(
    name="flood",
    description="Radar and 4-20 mA level sensors, tipping-bucket rain gauges, pump-station PLCs",
    protocols=("modbus_tcp", "modbus_rtu_tcp"),
    metrics=FLOOD_METRICS,
    config_model=FloodGaugeConfig,
    models=shipped_models(),
    device_types=flood_device_types(),
    create_poller=create_flood_gauge,
    check=check_device,
)
