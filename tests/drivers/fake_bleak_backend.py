"""FAKE bleak scanner backend: stands in for the BLE radio, which no test machine has.

It plugs into the real ``bleak.BleakScanner`` through its ``backend=`` argument, so the
scanner code under test runs unchanged; tests call ``advertise`` to deliver an advert
exactly as bleak's platform backends do (``create_or_update_device`` then the callbacks).
"""

from __future__ import annotations

from typing import Any, ClassVar

from bleak.backends.scanner import AdvertisementData, BaseBleakScanner


class FakeBleakScannerBackend(BaseBleakScanner):
    """A fake radio: remembers running scanners, delivers adverts on request."""

    running: ClassVar[list[FakeBleakScannerBackend]] = []

    def __init__(
        self, detection_callback: Any, service_uuids: Any, scanning_mode: Any = "active", **_: Any
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.scanning_mode = scanning_mode

    async def start(self) -> None:
        """Start 'scanning'."""
        self.seen_devices = {}
        FakeBleakScannerBackend.running.append(self)

    async def stop(self) -> None:
        """Stop 'scanning'."""
        FakeBleakScannerBackend.running.remove(self)

    def advertise(
        self,
        address: str,
        *,
        service_data: dict[str, bytes] | None = None,
        rssi: int = -70,
        name: str | None = None,
    ) -> None:
        """Deliver one advertisement to the registered callbacks."""
        adv = AdvertisementData(
            local_name=name,
            manufacturer_data={},
            service_data=service_data or {},
            service_uuids=list((service_data or {}).keys()),
            tx_power=None,
            rssi=rssi,
            platform_data=(),
        )
        device = self.create_or_update_device(address, address, name, None, adv)
        self.call_detection_callbacks(device, adv)
