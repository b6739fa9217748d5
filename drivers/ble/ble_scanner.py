"""One BLE scanner for all registered sensors: advertisements in, Readings out.

bleak does the radio; this module decodes BTHome v2 (0xFCD2) and the pvvx custom format
(0x181A) for sensors registered by MAC address, and ignores everything else (counted).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from drivers.ble.bthome import BTHOME_UUID, BTHomeError, decode_bthome
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
        description="Sensors advertise every second or so: publish at most this often.",
    )
    contact_means_leak: bool = Field(
        default=False, description="pvvx contact input wired to a water-leak probe"
    )

    @field_validator("address")
    @classmethod
    def _mac(cls, value: str) -> str:
        mac = value.upper().replace("-", ":")
        if not MAC.match(mac):
            raise ValueError("must be a MAC address like A4:C1:38:C6:77:14")
        return mac


class BleSensorScanner:
    """Scans, decodes and yields readings of the registered sensors."""

    def __init__(
        self,
        devices: Sequence[tuple[DeviceSpec, DriverConfig]],
        *,
        backend: type[Any] | None = None,
    ) -> None:
        self.devices: dict[str, tuple[str, BleSensorConfig]] = {}
        for spec, config in devices:
            assert isinstance(config, BleSensorConfig)
            self.devices[config.address] = (spec.device_id, config)
        self.backend = backend
        self.unknown_adverts = 0
        self.undecodable = 0
        self.dropped = 0
        self._last_sent: dict[str, float] = {}
        self._queue: asyncio.Queue[Reading] = asyncio.Queue(QUEUE_SIZE)

    def on_advertisement(self, device: Any, adv: Any) -> None:
        """bleak's detection callback: decode a registered sensor's advert, queue a reading."""
        address = str(device.address).upper()
        service_data: dict[str, bytes] = dict(adv.service_data)
        registered = self.devices.get(address)
        metrics: dict[str, MetricValue] | None = None
        try:
            if PVVX_UUID in service_data and (
                registered is None or registered[1].format != "bthome"
            ):
                mac, decoded = decode_pvvx(service_data[PVVX_UUID])
                # Random-address adapters report another address; the payload names the sensor.
                registered = registered or self.devices.get(mac)
                metrics = dict(decoded)
            elif BTHOME_UUID in service_data and (
                registered is None or registered[1].format != "pvvx"
            ):
                metrics = dict(decode_bthome(service_data[BTHOME_UUID]))
        except (BTHomeError, PvvxError) as err:
            if registered is not None:
                self.undecodable += 1
                log.warning("BLE %s (%s): %s", registered[0], address, err)
            return
        if registered is None or metrics is None:
            self.unknown_adverts += 1
            return
        device_id, config = registered
        if "contact" in metrics:
            contact = metrics.pop("contact")
            if config.contact_means_leak:
                metrics["water_leak"] = contact
        metrics["rssi_dbm"] = int(adv.rssi)
        now = time.monotonic()
        if now - self._last_sent.get(device_id, float("-inf")) < config.min_interval_s:
            return
        self._last_sent[device_id] = now
        try:
            self._queue.put_nowait(Reading(device_id=device_id, ts=utc_now(), metrics=metrics))
        except asyncio.QueueFull:
            self.dropped += 1

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
