"""Decode the ATC_MiThermometer firmware formats on service data UUID 0x181A.

- pvvx "custom" (15 bytes, little-endian): MAC[6] low byte first, temperature int16 x 0.01
  degC, humidity uint16 x 0.01 %, battery uint16 mV, battery uint8 %, counter, flags.
- atc1441 (13 bytes, big-endian): MAC[6] in order, temperature int16 x 0.1 degC, humidity
  uint8 %, battery uint8 %, battery uint16 mV, counter (the layout in the atc1441
  firmware's README, read the same way by ble_monitor's ``unpack(">hBBHB")``).
"""

from __future__ import annotations

import struct

PVVX_UUID = "0000181a-0000-1000-8000-00805f9b34fb"
PVVX_LENGTH = 15
ATC1441_LENGTH = 13


class PvvxError(ValueError):
    """The service data is neither the pvvx custom nor the atc1441 format."""


def decode_pvvx(data: bytes) -> tuple[str, dict[str, float | int | bool]]:
    """The sensor's MAC (AA:BB:..) and its metrics, from either format on 0x181A."""
    if len(data) == ATC1441_LENGTH:
        return decode_atc1441(data)
    if len(data) != PVVX_LENGTH:
        raise PvvxError(
            f"expected {PVVX_LENGTH} (pvvx) or {ATC1441_LENGTH} (atc1441) bytes, got {len(data)}"
        )
    mac = ":".join(f"{b:02X}" for b in reversed(data[:6]))
    temp, humidity, battery_mv, battery_pct, _counter, flags = struct.unpack("<hHHBBB", data[6:])
    return mac, {
        "temperature_c": temp / 100,
        "humidity_pct": humidity / 100,
        "battery_v": battery_mv / 1000,
        "battery_pct": battery_pct,
        # Flag bit 0 is the reed-switch input; the scanner reads it as a leak probe if told to.
        "contact": bool(flags & 0x01),
    }


def decode_atc1441(data: bytes) -> tuple[str, dict[str, float | int | bool]]:
    """The sensor's MAC and its metrics from the 13-byte atc1441 format."""
    if len(data) != ATC1441_LENGTH:
        raise PvvxError(f"expected {ATC1441_LENGTH} bytes (atc1441), got {len(data)}")
    mac = ":".join(f"{b:02X}" for b in data[:6])
    temp, humidity, battery_pct, battery_mv, _counter = struct.unpack(">hBBHB", data[6:])
    return mac, {
        "temperature_c": temp / 10,
        "humidity_pct": float(humidity),
        "battery_v": battery_mv / 1000,
        "battery_pct": battery_pct,
    }
