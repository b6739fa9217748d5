"""The BLE family's demo simulator and its FAKE radio (no machine here has a BLE radio).

Sensors are simulated as advertisements (pvvx custom format on 0x181A, or BTHome v2 on
0xFCD2), sent as UDP datagrams on loopback to the FAKE radio of their gateway. The radio
is a bleak scanner backend (``SimulatedRadioBackend``) living in the agent's process: it
binds a loopback UDP port, writes it to ``<state_dir>/ble-radio/<gateway_id>.port`` and
hands each datagram to bleak's callbacks exactly as a platform backend does, so the
real ``BleSensorScanner`` decodes it unchanged.

In the agent's process, call ``route_bleak_to_simulated_radio(state_dir, gateway_id)``
before the agent starts: bleak's ``BleakScanner`` then uses the fake radio by default.

Per-device ``params``: ``sleeps`` (no adverts 22:00-05:00 WIB), ``battery_start_v``
(the battery sags 0.01 V a simulated day), ``dies_after_h``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from drivers.ble.bthome import BTHOME_UUID
from drivers.ble.pvvx import PVVX_UUID
from drivers.simulation import SimulatedDevice, SimulatorContext, SimulatorStats

log = logging.getLogger(__name__)
RADIO_DIR = "ble-radio"
ADVERT_INTERVAL_S = 60.0  # simulated seconds between the adverts that get published


def radio_port_file(state_dir: Path, gateway_id: str) -> Path:
    """Where a gateway's fake radio writes its UDP port."""
    return state_dir / RADIO_DIR / f"{gateway_id}.port"


def pvvx_payload(
    mac: str, temp_c: float, humidity: float, battery_v: float, leak: bool, n: int
) -> bytes:
    """The 15-byte pvvx custom advert (see ``drivers.ble.pvvx``)."""
    mac_bytes = bytes(int(part, 16) for part in reversed(mac.split(":")))
    pct = max(0, min(100, round((battery_v - 2.2) / 0.9 * 100)))
    return mac_bytes + struct.pack(
        "<hHHBBB",
        round(temp_c * 100),
        round(humidity * 100),
        round(battery_v * 1000),
        pct,
        n % 256,
        int(leak),
    )


def bthome_payload(temp_c: float, humidity: float, battery_v: float) -> bytes:
    """A BTHome v2 advert: battery %, temperature, humidity, voltage (unencrypted)."""
    pct = max(0, min(100, round((battery_v - 2.2) / 0.9 * 100)))
    return (
        bytes([0x40, 0x01, pct, 0x02])
        + struct.pack("<h", round(temp_c * 100))
        + bytes([0x03])
        + struct.pack("<H", round(humidity * 100))
        + bytes([0x0C])
        + struct.pack("<H", round(battery_v * 1000))
    )


class BleSimulator:
    """Advertises every BLE sensor of the fleet to its gateway's fake radio."""

    family = "ble"

    def __init__(self) -> None:
        self.stats = SimulatorStats()

    async def run(self, devices: Sequence[SimulatedDevice], ctx: SimulatorContext) -> None:
        """Send adverts until cancelled; a sensor whose radio is not up yet waits for it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        counts: dict[str, int] = {}
        started = ctx.clock.elapsed_s()
        interval = max(1.0, ctx.clock.wall_seconds(ADVERT_INTERVAL_S))
        try:
            while True:
                hour = (ctx.clock.now().hour + 7) % 24 + ctx.clock.now().minute / 60
                age_h = (ctx.clock.elapsed_s() - started) / 3600
                for device in devices:
                    try:
                        self._advertise(sock, device, ctx, counts, hour, age_h)
                    except (OSError, ValueError) as err:
                        self.stats.failed(device.device_id)
                        log.debug("ble simulator %s: %s", device.device_id, err)
                await asyncio.sleep(interval)
        finally:
            sock.close()

    def _advertise(
        self,
        sock: socket.socket,
        device: SimulatedDevice,
        ctx: SimulatorContext,
        counts: dict[str, int],
        hour: float,
        age_h: float,
    ) -> None:
        params = device.params
        dies = params.get("dies_after_h")
        if ctx.faults.is_dead(device.device_id) or (
            isinstance(dies, int | float) and age_h >= dies
        ):
            return
        if params.get("sleeps") and (hour >= 22 or hour < 5):
            return  # asleep: a sensor in power-saving mode stops advertising at night
        if device.gateway_id is None or not device.address:
            return
        port_file = radio_port_file(ctx.state_dir, device.gateway_id)
        if not port_file.exists():
            return  # the gateway's agent (and its radio) is not up: nobody hears the advert
        port = int(port_file.read_text().strip())
        n = counts.get(device.device_id, 0) + 1
        counts[device.device_id] = n
        temp = (
            28.0
            + 4.0 * math.sin(2 * math.pi * (hour - 9) / 24)
            + (zlib.crc32(device.device_id.encode()) % 10) / 10
        )
        humidity = 75.0 - 15.0 * math.sin(2 * math.pi * (hour - 9) / 24)
        battery = max(2.2, float(params.get("battery_start_v", 3.0)) - 0.01 * age_h / 24)
        if device.driver_config.get("format") == "pvvx":
            uuid = PVVX_UUID
            payload = pvvx_payload(device.address, temp, humidity, battery, False, n)
        else:
            uuid, payload = BTHOME_UUID, bthome_payload(temp, humidity, battery)
        message = {
            "address": device.address,
            "rssi": -60 - n % 20,
            "service_data": {uuid: payload.hex()},
        }
        sock.sendto(json.dumps(message).encode(), ("127.0.0.1", port))
        self.stats.produced(device.device_id)


def _backend_class() -> type[Any]:
    from bleak.backends.scanner import AdvertisementData, BaseBleakScanner

    class SimulatedRadioBackend(BaseBleakScanner):
        """FAKE bleak backend: adverts arrive as loopback UDP datagrams from the simulator."""

        port_file: ClassVar[Path | None] = None

        def __init__(
            self,
            detection_callback: Any,
            service_uuids: Any,
            scanning_mode: Any = "active",
            **_: Any,
        ) -> None:
            super().__init__(detection_callback, service_uuids)
            self._transport: asyncio.DatagramTransport | None = None

        async def start(self) -> None:
            """Bind the radio's port and announce it."""
            self.seen_devices = {}
            loop = asyncio.get_running_loop()
            backend = self

            class _Receiver(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, _addr: Any) -> None:
                    backend._deliver(data)

            transport, _ = await loop.create_datagram_endpoint(
                _Receiver, local_addr=("127.0.0.1", 0)
            )
            self._transport = transport
            if self.port_file is not None:
                self.port_file.parent.mkdir(parents=True, exist_ok=True)
                self.port_file.write_text(str(transport.get_extra_info("sockname")[1]))

        async def stop(self) -> None:
            """Close the radio."""
            if self._transport is not None:
                self._transport.close()
                self._transport = None
            if self.port_file is not None:
                self.port_file.unlink(missing_ok=True)

        def _deliver(self, data: bytes) -> None:
            try:
                message = json.loads(data)
                service_data = {k: bytes.fromhex(v) for k, v in message["service_data"].items()}
                address, rssi = str(message["address"]), int(message["rssi"])
            except (ValueError, KeyError, TypeError, AttributeError):
                return  # not an advert of the simulator: a radio ignores noise
            adv = AdvertisementData(
                local_name=None,
                manufacturer_data={},
                service_data=service_data,
                service_uuids=list(service_data),
                tx_power=None,
                rssi=rssi,
                platform_data=(),
            )
            device = self.create_or_update_device(address, address, None, None, adv)
            self.call_detection_callbacks(device, adv)

    return SimulatedRadioBackend


def simulated_radio_backend(state_dir: Path, gateway_id: str) -> type[Any]:
    """The FAKE radio backend class of one gateway (pass it as bleak's ``backend=``)."""
    backend = _backend_class()
    backend.port_file = radio_port_file(state_dir, gateway_id)
    return backend


def route_bleak_to_simulated_radio(state_dir: Path, gateway_id: str) -> None:
    """In the agent's process: make ``bleak.BleakScanner`` use the gateway's FAKE radio."""
    import bleak

    backend = simulated_radio_backend(state_dir, gateway_id)
    original = bleak.BleakScanner

    class _SimulatedScanner(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("backend", backend)
            super().__init__(*args, **kwargs)

    bleak.BleakScanner = _SimulatedScanner  # type: ignore[misc]


SIMULATOR = BleSimulator()
