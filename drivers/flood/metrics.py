"""The flood family's metrics, as one table."""

from __future__ import annotations

from drivers.framework import Metric

FLOOD_METRICS: tuple[Metric, ...] = (
    Metric(
        key="level_m",
        unit="m",
        type="float",
        description="Water level; negative below the coastal datum.",
    ),
    Metric(key="rain_mm", unit="mm", type="float", description="Rain since the previous reading."),
    Metric(key="pump_on", unit="", type="bool", description="At least one pump is running."),
    Metric(key="pumps_running", unit="", type="int", description="Number of pumps running."),
    Metric(key="basin_level_m", unit="m", type="float", description="Pump-station basin level."),
    Metric(key="pump_run_hours", unit="h", type="float", description="Pump run hours (counter)."),
    Metric(
        key="battery_v", unit="V", type="float", description="Logger or sensor battery voltage."
    ),
    Metric(
        key="signal_quality_db", unit="dB", type="float", description="Radar echo signal quality."
    ),
    Metric(
        key="sensor_status",
        unit="",
        type="str",
        description="ok, invalid, failure, check, maintenance, out_of_spec, fault...",
    ),
)
