"""One BLE scanner for all registered sensors: advertisements in, Readings out.

bleak does the radio; ``bthome.py`` (through ``bthome-ble``) decodes BTHome v2 (0xFCD2)
and ``pvvx.py`` the pvvx and atc1441 formats (0x181A), for sensors registered by MAC
address. Everything else is ignored and counted. A device whose adverts cannot be
decoded (a wrong bindkey, say) is logged once when that starts and once when it ends,
and costs no other device anything.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from drivers.ble.bthome import (
    BTHOME_UUID,
    BTHomeAdvert,
    BTHomeDecoder,
    BTHomeError,
    BTHomeKeyError,
    parse_bindkey,
)
from drivers.ble.pvvx import PVVX_UUID, PvvxError, decode_pvvx
from drivers.framework import DeviceSpec, DriverConfig, MetricValue, Reading, utc_now

log = logging.getLogger(__name__)
MAC = re.compile(r"^([0-9A-F]{2}:){5}[0-9A-F]{2}$")
QUEUE_SIZE = 1000


class BleSensorConfig(DriverConfig):
    """A registered BLE sensor: its MAC (the registry's address) and how often to publish."""

    address: str = Field(description="MAC address AA:BB:CC:DD:EE:FF")
    format: Literal["auto", "bthome", "pvvx"] = "auto"
    min_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="Sensors advertise every second or so: publish at most this often "
        "(events and trigger-based adverts are always published).",
    )
    contact_means_leak: bool = Field(
        default=False, description="pvvx contact input wired to a water-leak probe"
    )
    bindkey: SecretStr | None = Field(
        default=None, description="BTHome encryption key: 32 hex characters (AES-128)."
    )

    @field_validator("address")
    @classmethod
    def _mac(cls, value: str) -> str:
        mac = value.upper().replace("-", ":")
        if not MAC.match(mac):
            raise ValueError("must be a MAC address like A4:C1:38:C6:77:14")
        return mac

    @field_validator("bindkey")
    @classmethod
    def _bindkey(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_bindkey(value.get_secret_value())  # raises without quoting the key
        return value

    def key_bytes(self) -> bytes | None:
        """The bindkey as the 16 bytes AES wants, or None."""
        return None if self.bindkey is None else parse_bindkey(self.bindkey.get_secret_value())


class BleSensorScanner:
    """Scans, decodes and yields readings of the registered sensors."""

    def __init__(
        self,
        devices: Sequence[tuple[DeviceSpec, DriverConfig]],
        *,
        backend: type[Any] | None = None,
    ) -> None:
        self.devices: dict[str, tuple[str, BleSensorConfig]] = {}
        self._bthome: dict[str, BTHomeDecoder] = {}
        for spec, config in devices:
            assert isinstance(config, BleSensorConfig)
            self.devices[config.address] = (spec.device_id, config)
            if config.format != "pvvx":
                self._bthome[spec.device_id] = BTHomeDecoder(bindkey=config.key_bytes())
        self.backend = backend
        self.unknown_adverts = 0
        self.undecodable = 0
        self.key_errors = 0
        self.duplicates = 0
        self.dropped = 0
        # device id -> why its last advert gave nothing (logged once per change).
        self.errors: dict[str, str] = {}
        self._last_sent: dict[str, float] = {}
        self._queue: asyncio.Queue[Reading] = asyncio.Queue(QUEUE_SIZE)

    def on_advertisement(self, device: Any, adv: Any) -> None:
        """bleak's detection callback: decode a registered sensor's advert, queue readings."""
        address = str(device.address).upper()
        service_data: dict[str, bytes] = dict(adv.service_data)
        registered = self.devices.get(address)
        advert: BTHomeAdvert | None = None
        try:
            # BTHome first: a sensor may send both, and 0x181A then holds other layouts.
            decoder = self._bthome.get(registered[0]) if registered is not None else None
            if decoder is not None and BTHOME_UUID in service_data:
                advert = decoder.decode(
                    address, service_data[BTHOME_UUID], name=adv.local_name, rssi=adv.rssi
                )
            elif PVVX_UUID in service_data and (
                registered is None or registered[1].format != "bthome"
            ):
                mac, decoded = decode_pvvx(service_data[PVVX_UUID])
                # Random-address adapters report another address; the payload names the sensor.
                registered = registered or self.devices.get(mac)
                advert = BTHomeAdvert(metrics=dict(decoded))
        except (BTHomeError, PvvxError) as err:
            if registered is not None:
                self.undecodable += 1
                self.key_errors += isinstance(err, BTHomeKeyError)
                self._failing(registered[0], address, str(err))
            return
        except Exception as err:
            # A decoder bug costs this advert only, never the scanner or the other sensors.
            self.undecodable += 1
            if registered is not None:
                self._failing(registered[0], address, f"decoder error {type(err).__name__}: {err}")
            return
        if registered is None or advert is None:
            self.unknown_adverts += 1
            return
        device_id, config = registered
        self._recovered(device_id)
        if advert.duplicate:
            self.duplicates += 1
            return
        now = utc_now()
        if advert.events:
            self._put(Reading(device_id=device_id, ts=now, metrics=advert.events, kind="event"))
        metrics: dict[str, MetricValue] = dict(advert.metrics)
        if not metrics and advert.events:
            return  # an event-only advert (a button): no telemetry of the RSSI alone
        if "contact" in metrics:
            contact = metrics.pop("contact")
            if config.contact_means_leak:
                metrics["water_leak"] = contact
        metrics["rssi_dbm"] = int(adv.rssi)
        clock = time.monotonic()
        last = self._last_sent.get(device_id, float("-inf"))
        # A trigger-based advert (a door opening) is news, whatever min_interval_s says.
        if not advert.trigger_based and clock - last < config.min_interval_s:
            return
        self._last_sent[device_id] = clock
        self._put(Reading(device_id=device_id, ts=now, metrics=metrics))

    def _put(self, reading: Reading) -> None:
        try:
            self._queue.put_nowait(reading)
        except asyncio.QueueFull:
            self.dropped += 1

    def _failing(self, device_id: str, address: str, reason: str) -> None:
        if self.errors.get(device_id) != reason:
            log.warning("BLE %s (%s): %s", device_id, address, reason)
        self.errors[device_id] = reason

    def _recovered(self, device_id: str) -> None:
        if self.errors.pop(device_id, None) is not None:
            log.info("BLE %s: decoding again", device_id)

    async def stream(self) -> AsyncIterator[Reading]:
        """Scan until cancelled, yielding readings as sensors advertise."""
        from bleak import BleakScanner

        kwargs: dict[str, Any] = {"backend": self.backend} if self.backend is not None else {}
        scanner = BleakScanner(detection_callback=self.on_advertisement, **kwargs)
        await scanner.start()
        try:
            while True:
                yield await self._queue.get()
        finally:
            await scanner.stop()


def create_scanner(devices: Sequence[tuple[DeviceSpec, DriverConfig]]) -> BleSensorScanner:
    """The family's factory: one scanner for all of a gateway's BLE sensors."""
    return BleSensorScanner(devices)
