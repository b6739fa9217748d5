"""Decode the "custom" (pvvx) format of ATC_MiThermometer firmware: service data on 0x181A.

15 bytes, little-endian: MAC[6] (low byte first), temperature int16 x 0.01 degC,
humidity uint16 x 0.01 %, battery uint16 mV, battery uint8 %, counter uint8, flags uint8.
"""

from __future__ import annotations

import struct

PVVX_UUID = "0000181a-0000-1000-8000-00805f9b34fb"
PVVX_LENGTH = 15


class PvvxError(ValueError):
    """The service data is not the pvvx custom format."""


def decode_pvvx(data: bytes) -> tuple[str, dict[str, float | int | bool]]:
    """The sensor's MAC (AA:BB:..) and its metrics."""
    if len(data) != PVVX_LENGTH:
        # 13 bytes is the older atc1441 format (big-endian, 0.1 degC): not this one.
        raise PvvxError(f"expected {PVVX_LENGTH} bytes, got {len(data)}")
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
