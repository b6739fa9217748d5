"""BTHome v2 (service data UUID 0xFCD2) through the reference library, ``bthome-ble``.

The library (the one Home Assistant's integration uses) does the format: every object id
it knows, repeated objects, the device-information byte, packet-id de-duplication and
AES-CCM decryption with the device's bindkey and its replay counter. This module is the
thin adapter from its ``SensorUpdate`` to the family's metric table (``metrics.py``):
sensors and binary sensors become telemetry metrics, button, dimmer and command events
become event metrics, and a repeated object becomes a numbered metric.

One ``BTHomeDecoder`` per registered sensor, since the library keeps per-device state.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drivers.ble.metrics import (
    BINARY_KEYS,
    EVENT_KEYS,
    MAX_REPEATS,
    SENSOR_KEYS,
    LibraryKey,
    numbered,
)
from drivers.framework import MetricValue

if TYPE_CHECKING:
    from bthome_ble import BTHomeBluetoothDeviceData, SensorUpdate

BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
BINDKEY = re.compile(r"^[0-9a-fA-F]{32}$")
# AES-CCM advertisement: info byte, at least one 2-byte object, counter[4] and MIC[4].
ENCRYPTED_MIN_BYTES = 1 + 2 + 8
# The hub stores strings of at most 256 characters without control characters (but tab).
MAX_TEXT = 256
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Device-information objects (type id, firmware version): the library keeps them as
# device metadata, not as sensor values.
DEVICE_INFO_IDS = frozenset({0xF0, 0xF1, 0xF2})
_SENSORS = {(k.device_class, k.unit): k for k in SENSOR_KEYS}
_BINARIES = {k.device_class: k for k in BINARY_KEYS}
_EVENTS = {k.device_class: k for k in EVENT_KEYS}
_POSTFIX = re.compile(r"^(?P<base>.+?)(?:_(?P<index>\d+))?$")
# The library's per-update dicts, which it never empties: values of earlier adverts would
# come back in every update. Cleared before each update so a reading holds this advert only.
_UPDATE_DICTS = (
    "_sensor_descriptions_updates",
    "_sensor_values_updates",
    "_binary_sensor_descriptions_updates",
    "_binary_sensor_values_updates",
)


class BTHomeError(ValueError):
    """The service data is not decodable BTHome v2; the message says why."""


class BTHomeKeyError(BTHomeError):
    """An encryption problem of one device: no bindkey, a wrong one, or a plaintext advert."""


@dataclass(frozen=True, slots=True)
class BTHomeAdvert:
    """One advertisement's telemetry metrics and event metrics (either may be empty)."""

    metrics: dict[str, MetricValue] = field(default_factory=dict)
    events: dict[str, MetricValue] = field(default_factory=dict)
    duplicate: bool = False  # a packet id or encrypted advert the library already had
    trigger_based: bool = False  # info bit 2: the device sends on events, not on a clock


def parse_bindkey(text: str) -> bytes:
    """The 16-byte AES key from 32 hex characters; ValueError (never quoting it) otherwise."""
    if not BINDKEY.fullmatch(text.strip()):
        raise ValueError(f"must be 32 hex characters (16 bytes), got {len(text.strip())} chars")
    return bytes.fromhex(text.strip())


def _quiet_library() -> None:
    """The library logs each failed advert (every second); the scanner logs once per change."""
    logger = logging.getLogger("bthome_ble")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


class BTHomeDecoder:
    """One sensor's decoder: the library's state (packet id, replay counter, key) for it."""

    def __init__(self, *, bindkey: bytes | None = None) -> None:
        from bthome_ble import BTHomeBluetoothDeviceData

        _quiet_library()
        self._device: BTHomeBluetoothDeviceData = BTHomeBluetoothDeviceData(bindkey=bindkey)
        self.encrypted = bindkey is not None
        self.unmapped = 0  # library keys the metric table has no row for (counted, dropped)

    def __repr__(self) -> str:
        # Never the key: this object may end up in a log line or a traceback.
        return f"BTHomeDecoder(encrypted={self.encrypted})"

    def decode(
        self, address: str, data: bytes, *, name: str | None = None, rssi: int = 0
    ) -> BTHomeAdvert:
        """This advertisement's metrics; BTHomeError (BTHomeKeyError) when it gives none."""
        if not data:
            raise BTHomeError("empty service data")
        info = data[0]
        version = info >> 5
        if version != 2:
            raise BTHomeError(f"BTHome version {version}, expected 2")
        encrypted = bool(info & 0x01)
        if encrypted and not self.encrypted:
            raise BTHomeKeyError("encrypted advertisement, and driver_config has no bindkey")
        if not encrypted and self.encrypted:
            raise BTHomeKeyError(
                "plaintext advertisement from a sensor with a bindkey: refused (downgrade)"
            )
        if encrypted and len(data) < ENCRYPTED_MIN_BYTES + (6 if info & 0x02 else 0):
            raise BTHomeError(f"encrypted advertisement of {len(data)} bytes is too short")
        device = self._device
        for name_of_dict in _UPDATE_DICTS:
            getattr(device, name_of_dict).clear()
        update = device.update(_service_info(address, data, name=name, rssi=rssi))
        if encrypted and device.decryption_failed:
            raise BTHomeKeyError("decryption failed: wrong bindkey, or a forged advertisement")
        metrics, events = self._metrics(update)
        trigger = bool(info & 0x04)
        if metrics or events:
            return BTHomeAdvert(metrics, events, trigger_based=trigger)
        return _empty(data, encrypted, trigger)

    def _metrics(self, update: SensorUpdate) -> tuple[dict[str, MetricValue], dict[str, Any]]:
        metrics: dict[str, MetricValue] = {}
        for key, description in update.entity_descriptions.items():
            if key.key == "signal_strength":
                continue  # the scanner adds rssi_dbm for every format
            unit = description.native_unit_of_measurement
            row = _SENSORS.get((str(description.device_class), None if unit is None else str(unit)))
            value = update.entity_values[key].native_value
            self._put(metrics, row, key.key, str(description.device_class), value)
        for key, binary in update.binary_entity_descriptions.items():
            row = _BINARIES.get(str(binary.device_class))
            value = update.binary_entity_values[key].native_value
            self._put(metrics, row, key.key, str(binary.device_class), value)
        events: dict[str, MetricValue] = {}
        for key, event in update.events.items():
            match = _POSTFIX.fullmatch(key.key)
            row = _EVENTS.get(match["base"]) if match else None
            name = self._put(events, row, key.key, match["base"] if match else "", event.event_type)
            if name is None:
                continue
            for prop, value in (event.event_properties or {}).items():
                if isinstance(value, int | float | str):
                    events[f"{name}_{prop}"] = _text(value) if isinstance(value, str) else value
        return metrics, events

    def _put(
        self,
        out: dict[str, MetricValue],
        row: LibraryKey | None,
        library_key: str,
        base: str,
        value: object,
    ) -> str | None:
        """Store one library value under its numbered metric; the metric name, or None."""
        index = 1
        if library_key != base:
            suffix = library_key.removeprefix(f"{base}_")
            index = int(suffix) if suffix.isdigit() else 0
        if row is None or not 1 <= index <= MAX_REPEATS or value is None:
            self.unmapped += row is None or value is not None
            return None
        name = numbered(row.metric, index)
        out[name] = _typed(row, value)
        return name


def _typed(row: LibraryKey, value: object) -> MetricValue:
    """A library value as the metric table's type says."""
    if isinstance(value, datetime):
        return int(value.timestamp())
    if row.type == "bool":
        return bool(value)
    if row.type == "str":
        return _text(str(value))
    if row.type == "int" and isinstance(value, int | float):
        return int(value)
    if isinstance(value, int | float):
        return float(value)
    return _text(str(value))


def _text(value: str) -> str:
    """Text the hub can store: control characters replaced, at most MAX_TEXT characters."""
    return _CONTROL.sub("\ufffd", value)[:MAX_TEXT]


def _empty(data: bytes, encrypted: bool, trigger: bool) -> BTHomeAdvert:
    """Why the library found nothing: a repeat (ignored), an empty advert, or an error."""
    if encrypted:
        # Decrypted, yet nothing: a repeated packet id or counter (replay protection).
        return BTHomeAdvert(duplicate=True, trigger_based=trigger)
    start = 7 if data[0] & 0x02 else 1
    payload = data[start:]
    if data[0] & 0x02 and len(data) < 7:
        raise BTHomeError(
            f"info byte bit 1 (MAC included) is set, but only {len(data) - 1} bytes follow it"
        )
    if not payload or payload[0] in DEVICE_INFO_IDS:
        return BTHomeAdvert(trigger_based=trigger)
    from bthome_ble.const import MEAS_TYPES

    object_id = payload[0]
    if object_id not in MEAS_TYPES:
        raise BTHomeError(f"unknown object id 0x{object_id:02X} at byte {start}")
    if object_id == 0x00 and len(payload) >= 2:
        return BTHomeAdvert(duplicate=True, trigger_based=trigger)
    size = MEAS_TYPES[object_id].data_length
    if MEAS_TYPES[object_id].data_format in ("raw", "string", "command"):
        # A length byte leads these: a command's low 5 bits count its arguments.
        size = 1 + (payload[1] & 0x1F if len(payload) > 1 else 0xFF)
    if len(payload) < 1 + size:
        raise BTHomeError(f"object 0x{object_id:02X} at byte {start} is truncated")
    raise BTHomeError(
        f"object 0x{object_id:02X} at byte {start} holds a value BTHome does not define"
    )


def _service_info(address: str, data: bytes, *, name: str | None, rssi: int) -> Any:
    """The library's input: one advertisement as habluetooth's service info."""
    from bleak.backends.device import BLEDevice
    from habluetooth import BluetoothServiceInfoBleak

    return BluetoothServiceInfoBleak(
        name=name or address,  # the library reads the name and fails on None
        address=address,
        rssi=rssi,
        manufacturer_data={},
        service_data={BTHOME_UUID: data},
        service_uuids=[BTHOME_UUID],
        source="kotahub",
        device=BLEDevice(address, name, None),
        advertisement=None,
        connectable=False,
        time=time.monotonic(),  # the library's 4 s packet-id window
        tx_power=None,
    )


def decode_bthome(data: bytes, *, bindkey: bytes | None = None) -> dict[str, MetricValue]:
    """Telemetry and event metrics of one advertisement to a fresh decoder (tests, tools)."""
    advert = BTHomeDecoder(bindkey=bindkey).decode("00:00:00:00:00:00", data)
    return {**advert.metrics, **advert.events}
