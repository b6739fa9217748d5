"""Decode BTHome v2 service data (UUID 0xFCD2) into metrics.

Layout (bthome.io/format): one device-information byte (bit 0 encrypted, bit 2 trigger
based, bits 5-7 version = 2), then object-id + value pairs, little-endian, each object's
length fixed by its id. An unknown id stops decoding: its length is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"


class BTHomeError(ValueError):
    """The service data is not decodable BTHome v2."""


@dataclass(frozen=True, slots=True)
class BTHomeObject:
    """One object type of the format: where it goes and how it is scaled."""

    metric: str
    size: int
    signed: bool
    factor: float


# Object ids from the BTHome v2 table; metrics named for Kotahub (unit in the name).
OBJECTS: dict[int, BTHomeObject] = {
    0x00: BTHomeObject("packet_id", 1, False, 1),
    0x01: BTHomeObject("battery_pct", 1, False, 1),
    0x02: BTHomeObject("temperature_c", 2, True, 0.01),
    0x03: BTHomeObject("humidity_pct", 2, False, 0.01),
    0x04: BTHomeObject("pressure_hpa", 3, False, 0.01),
    0x05: BTHomeObject("illuminance_lux", 3, False, 0.01),
    0x08: BTHomeObject("dewpoint_c", 2, True, 0.01),
    0x0C: BTHomeObject("battery_v", 2, False, 0.001),
    0x10: BTHomeObject("power_on", 1, False, 1),
    0x14: BTHomeObject("moisture_pct", 2, False, 0.01),
    0x15: BTHomeObject("battery_low", 1, False, 1),
    0x20: BTHomeObject("water_leak", 1, False, 1),  # "moisture" binary sensor: wet = 1
    0x2E: BTHomeObject("humidity_pct", 1, False, 1),
    0x2F: BTHomeObject("moisture_pct", 1, False, 1),
    0x45: BTHomeObject("temperature_c", 2, True, 0.1),
}
BINARY = {"power_on", "battery_low", "water_leak"}


def decode_bthome(data: bytes) -> dict[str, float | int | bool]:
    """Metrics from one BTHome v2 service-data payload; BTHomeError when it cannot be read."""
    if not data:
        raise BTHomeError("empty service data")
    info = data[0]
    version = info >> 5
    if version != 2:
        raise BTHomeError(f"BTHome version {version}, expected 2")
    if info & 0x01:
        raise BTHomeError("encrypted BTHome payload (no bindkey support)")
    metrics: dict[str, float | int | bool] = {}
    pos = 1
    while pos < len(data):
        object_id = data[pos]
        spec = OBJECTS.get(object_id)
        if spec is None:
            raise BTHomeError(f"unknown object id 0x{object_id:02X} at byte {pos}")
        raw = data[pos + 1 : pos + 1 + spec.size]
        if len(raw) != spec.size:
            raise BTHomeError(f"object 0x{object_id:02X} truncated at byte {pos}")
        value = int.from_bytes(raw, "little", signed=spec.signed)
        pos += 1 + spec.size
        if spec.metric in BINARY:
            metrics[spec.metric] = bool(value)
        elif spec.factor == 1:
            metrics[spec.metric] = value
        else:
            metrics[spec.metric] = round(value * spec.factor, 6)
    metrics.pop("packet_id", None)
    return metrics
