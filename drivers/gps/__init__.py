"""GPS trackers on BRT buses and garbage trucks: they publish the contract themselves."""

from __future__ import annotations

from drivers.contract import device_topic
from drivers.framework import DeviceTypeSpec, DriverConfig, DriverFamily, Metric

GPS_METRICS: tuple[Metric, ...] = (
    Metric(key="lat", unit="deg", type="float", description="Latitude, WGS 84."),
    Metric(key="lon", unit="deg", type="float", description="Longitude, WGS 84."),
    Metric(key="speed_kmh", unit="km/h", type="float", description="Ground speed."),
    Metric(key="heading", unit="deg", type="float", description="Course over ground, 0 = north."),
    Metric(key="satellites", unit="", type="int", description="Satellites in the fix (optional)."),
    Metric(
        key="hdop",
        unit="",
        type="float",
        description="Horizontal dilution of precision (optional).",
    ),
    Metric(
        key="off_route_m",
        unit="m",
        type="float",
        description="Distance to the vehicle's route (its registry tag 'route'), optional: "
        "from drivers.gps.routes where the tracker or its gateway knows the route.",
    ),
)

# No poller and no stream: the agent leaves these devices alone, they speak MQTT directly.
FAMILY = DriverFamily(
    name="gps",
    description=f"GPS trackers publishing {device_topic('{id}', 'telemetry')} themselves",
    protocols=("mqtt_gps",),
    metrics=GPS_METRICS,
    device_types=(
        DeviceTypeSpec(
            name="gps_tracker",
            protocol="mqtt_gps",
            expected_interval_s=30.0,
            metrics=tuple(m.key for m in GPS_METRICS),
            description="GPS tracker on a BRT bus or garbage truck (publishes MQTT itself)",
        ),
    ),
    config_model=DriverConfig,
)
