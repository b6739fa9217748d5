"""The BLE family's metrics, as one table."""

from __future__ import annotations

from drivers.framework import Metric

BLE_METRICS: tuple[Metric, ...] = (
    Metric(key="temperature_c", unit="degC", type="float", description="Air temperature."),
    Metric(key="humidity_pct", unit="%", type="float", description="Relative humidity."),
    Metric(key="battery_pct", unit="%", type="int", description="Battery level."),
    Metric(key="battery_v", unit="V", type="float", description="Battery voltage."),
    Metric(key="water_leak", unit="", type="bool", description="Leak probe is wet."),
    Metric(key="moisture_pct", unit="%", type="float", description="Soil or material moisture."),
    Metric(key="dewpoint_c", unit="degC", type="float", description="Dew point."),
    Metric(key="pressure_hpa", unit="hPa", type="float", description="Air pressure."),
    Metric(key="illuminance_lux", unit="lx", type="float", description="Illuminance."),
    Metric(key="power_on", unit="", type="bool", description="Power present."),
    Metric(key="battery_low", unit="", type="bool", description="Battery low flag."),
    Metric(key="rssi_dbm", unit="dBm", type="int", description="Received signal strength."),
)
