"""The BLE family's metrics, as one table, and how the BTHome library's keys map onto it.

The BTHome objects are data here (no import of ``bthome-ble``, so the hub and the registry
can list the table without the ``ble`` extra); ``tests/drivers/test_ble_metrics.py`` holds
this table to the pinned library's own object table, so an upgrade that adds an object
fails a test instead of being dropped in the field.

An advertisement that carries one kind of object more than once (two temperatures, four
buttons) gives numbered metrics, the way Home Assistant's integration names its entities:
the first keeps the plain name, the next ones are ``temperature_c_2`` .. ``temperature_c_4``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from drivers.framework import Metric, MetricType

# How many of one object an advertisement may carry and still be published: the most a
# real device sends (Shelly BLU RC Button 4: four buttons).
MAX_REPEATS = 4
LibraryKind = Literal["sensor", "binary", "event"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LibraryKey:
    """One key the library reports (device class and unit) and the metric it becomes."""

    kind: LibraryKind
    device_class: str
    unit: str | None
    metric: str
    type: MetricType
    metric_unit: str
    description: str


def _s(cls: str, unit: str | None, metric: str, kind: MetricType, mu: str, text: str) -> LibraryKey:
    return LibraryKey(
        kind="sensor",
        device_class=cls,
        unit=unit,
        metric=metric,
        type=kind,
        metric_unit=mu,
        description=text,
    )


def _b(cls: str, metric: str, text: str) -> LibraryKey:
    return LibraryKey(
        kind="binary",
        device_class=cls,
        unit=None,
        metric=metric,
        type="bool",
        metric_unit="",
        description=text,
    )


def _e(cls: str, metric: str, kind: MetricType, text: str) -> LibraryKey:
    return LibraryKey(
        kind="event",
        device_class=cls,
        unit=None,
        metric=metric,
        type=kind,
        metric_unit="",
        description=text,
    )


# Sensors: (device class, unit) as bthome-ble reports them -> Kotahub metric (unit in the
# name). ``int`` where every object of the class is an integer (factor 1).
SENSOR_KEYS: tuple[LibraryKey, ...] = (
    _s("packet_id", None, "packet_id", "int", "", "BTHome packet id (0x00)."),
    _s("battery", "%", "battery_pct", "int", "%", "Battery level (0x01)."),
    _s("temperature", "°C", "temperature_c", "float", "degC", "Temperature (0x02 0x45 0x57 0x58)."),
    _s("humidity", "%", "humidity_pct", "float", "%", "Relative humidity (0x03 0x2E)."),
    _s("pressure", "mbar", "pressure_hpa", "float", "hPa", "Air pressure (0x04)."),
    _s("illuminance", "lx", "illuminance_lux", "float", "lx", "Illuminance (0x05)."),
    _s("mass", "kg", "mass_kg", "float", "kg", "Mass (0x06)."),
    _s("mass", "lb", "mass_lb", "float", "lb", "Mass in pounds (0x07)."),
    _s("dew_point", "°C", "dewpoint_c", "float", "degC", "Dew point (0x08)."),
    _s("count", None, "count", "int", "", "Count (0x09 0x3D 0x3E 0x59 0x5A 0x5B)."),
    _s("energy", "kWh", "energy_kwh", "float", "kWh", "Energy (0x0A 0x4D)."),
    _s("power", "W", "power_w", "float", "W", "Power (0x0B 0x5C)."),
    _s("voltage", "V", "voltage_v", "float", "V", "Voltage (0x0C 0x4A)."),
    _s("pm25", "µg/m³", "pm25_ugm3", "int", "ug/m3", "PM2.5 (0x0D)."),
    _s("pm10", "µg/m³", "pm10_ugm3", "int", "ug/m3", "PM10 (0x0E)."),
    _s("carbon_dioxide", "ppm", "co2_ppm", "int", "ppm", "CO2 (0x12)."),
    _s("volatile_organic_compounds", "µg/m³", "voc_ugm3", "int", "ug/m3", "VOC (0x13)."),
    _s("moisture", "%", "moisture_pct", "float", "%", "Soil or material moisture (0x14 0x2F)."),
    _s("rotation", "°", "rotation_deg", "float", "deg", "Rotation (0x3F)."),
    _s("distance", "mm", "distance_mm", "int", "mm", "Distance (0x40)."),
    _s("distance", "m", "distance_m", "float", "m", "Distance (0x41)."),
    _s("duration", "s", "duration_s", "float", "s", "Duration (0x42)."),
    _s("current", "A", "current_a", "float", "A", "Current (0x43 0x5D)."),
    _s("speed", "m/s", "speed_ms", "float", "m/s", "Speed (0x44 0x62)."),
    _s("uv_index", None, "uv_index", "float", "", "UV index (0x46)."),
    _s("volume", "L", "volume_l", "float", "L", "Volume (0x47 0x4E)."),
    _s("volume", "mL", "volume_ml", "int", "mL", "Volume (0x48)."),
    _s("volume_flow_rate", "m³/h", "flow_m3h", "float", "m3/h", "Volume flow rate (0x49)."),
    _s("gas", "m³", "gas_m3", "float", "m3", "Gas meter (0x4B 0x4C)."),
    _s("water", "L", "water_l", "float", "L", "Water meter (0x4F)."),
    _s("timestamp", None, "timestamp_s", "int", "s", "Device time, epoch seconds (0x50)."),
    _s("acceleration", "m/s²", "acceleration_ms2", "float", "m/s2", "Acceleration (0x51 0x63)."),
    _s("gyroscope", "°/s", "gyroscope_dps", "float", "deg/s", "Gyroscope (0x52)."),
    _s("text", None, "text", "str", "", "Text (0x53)."),
    _s("raw", None, "raw_hex", "str", "", "Raw bytes as hex (0x54)."),
    _s("volume_storage", "L", "volume_storage_l", "float", "L", "Stored volume (0x55)."),
    _s("conductivity", "µS/cm", "conductivity_uscm", "int", "uS/cm", "Conductivity (0x56)."),
    _s("direction", "°", "direction_deg", "float", "deg", "Direction (0x5E)."),
    _s("precipitation", "mm", "precipitation_mm", "float", "mm", "Precipitation (0x5F)."),
    _s("channel", None, "channel", "int", "", "Channel (0x60)."),
    _s("rotational_speed", "rpm", "rotational_speed_rpm", "int", "rpm", "Rotational speed (0x61)."),
    _s("light_level", None, "light_level", "int", "", "Light level (0x64)."),
    _s("settings_revision", None, "settings_revision", "int", "", "Settings revision (0x65)."),
)

# Binary sensors: true means what Home Assistant's device class means by "on".
BINARY_KEYS: tuple[LibraryKey, ...] = (
    _b("generic", "binary_on", "Generic on/off (0x0F)."),
    _b("power", "power_on", "Power present (0x10)."),
    _b("opening", "open", "Open (0x11)."),
    _b("battery", "battery_low", "Battery low (0x15)."),
    _b("battery_charging", "battery_charging", "Battery charging (0x16)."),
    _b("carbon_monoxide", "co_detected", "Carbon monoxide detected (0x17)."),
    _b("cold", "cold", "Cold (0x18)."),
    _b("connectivity", "connected", "Connected (0x19)."),
    _b("door", "door_open", "Door open (0x1A)."),
    _b("garage_door", "garage_door_open", "Garage door open (0x1B)."),
    _b("gas", "gas_detected", "Gas detected (0x1C)."),
    _b("heat", "heat", "Hot (0x1D)."),
    _b("light", "light_detected", "Light detected (0x1E)."),
    _b("lock", "unlocked", "Unlocked (0x1F)."),
    _b("moisture", "water_leak", "Wet: leak probe or moisture detected (0x20)."),
    _b("motion", "motion", "Motion detected (0x21)."),
    _b("moving", "moving", "Moving (0x22)."),
    _b("occupancy", "occupied", "Occupied (0x23)."),
    _b("plug", "plugged_in", "Plugged in (0x24)."),
    _b("presence", "present", "Present (0x25)."),
    _b("problem", "problem", "Problem (0x26)."),
    _b("running", "running", "Running (0x27)."),
    _b("safety", "unsafe", "Unsafe (0x28)."),
    _b("smoke", "smoke", "Smoke detected (0x29)."),
    _b("sound", "sound", "Sound detected (0x2A)."),
    _b("tamper", "tamper", "Tampered (0x2B)."),
    _b("vibration", "vibration", "Vibration (0x2C)."),
    _b("window", "window_open", "Window open (0x2D)."),
)

# Events (published on the device's event topic): the event type as text, its properties
# as ``<event>_<property>`` metrics.
EVENT_KEYS: tuple[LibraryKey, ...] = (
    _e("button", "button", "str", "Button event: press, double_press, long_press... (0x3A)."),
    _e("dimmer", "dimmer", "str", "Dimmer event: rotate_left or rotate_right (0x3C)."),
    _e("command", "command", "str", "Command event: on, off, toggle, step_up... (0x3B)."),
)
EVENT_PROPERTIES: tuple[tuple[str, str, MetricType, str], ...] = (
    ("dimmer", "steps", "int", "Dimmer steps turned (0x3C)."),
    ("command", "args", "str", "Command arguments as hex (0x3B)."),
)

# Metrics that are not BTHome objects: the radio's, and the pvvx/atc1441 formats'.
OTHER_METRICS: tuple[Metric, ...] = (
    Metric(key="battery_v", unit="V", type="float", description="Battery voltage (pvvx)."),
    Metric(key="rssi_dbm", unit="dBm", type="int", description="Received signal strength."),
)


def numbered(metric: str, index: int) -> str:
    """The metric name of the ``index``-th object of one kind (1: the plain name)."""
    return metric if index == 1 else f"{metric}_{index}"


def _rows() -> tuple[Metric, ...]:
    seen: dict[str, Metric] = {}
    for key in (*SENSOR_KEYS, *BINARY_KEYS, *EVENT_KEYS):
        for index in range(1, MAX_REPEATS + 1):
            name = numbered(key.metric, index)
            text = key.description if index == 1 else f"{key.description} Object {index}."
            seen.setdefault(
                name, Metric(key=name, unit=key.metric_unit, type=key.type, description=text)
            )
    for event, prop, kind, text in EVENT_PROPERTIES:
        for index in range(1, MAX_REPEATS + 1):
            name = f"{numbered(event, index)}_{prop}"
            seen[name] = Metric(key=name, unit="", type=kind, description=text)
    for metric in OTHER_METRICS:
        seen[metric.key] = metric
    return tuple(seen.values())


BLE_METRICS: tuple[Metric, ...] = _rows()
