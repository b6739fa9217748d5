"""The demo's WiFi APs: simulated MikroTik/UniFi SNMP agents read by the real wifi driver."""

from __future__ import annotations

import random
from typing import Any

from drivers.simulation import SimulatedDevice, SimulatorContext
from drivers.snmp.simulated_agent import SimulatedTarget
from drivers.snmp.simulated_fleet import SnmpFleetSimulator
from drivers.wifi.simulated_ap import SimulatedAccessPoint


class BusyAccessPoint(SimulatedAccessPoint):
    """An AP whose clients follow the hour (a hotspot fills in the evening)."""

    def objects(self):  # type: ignore[no-untyped-def]
        """Clients drift each request, then the AP's objects."""
        rng = random.Random(self.seed + int(self.clock() // 60))
        self.clients_by_radio = (rng.randint(0, 30), rng.randint(0, 20))
        return SimulatedAccessPoint.objects(self)


def _target(device: SimulatedDevice, _ctx: SimulatorContext) -> SimulatedTarget:
    seed = sum(device.device_id.encode())
    return BusyAccessPoint(
        vendor="unifi" if device.device_type == "unifi_ap" else "mikrotik",
        seed=seed,
        rx_bps=2e6 + seed % 7 * 1e6,
    )


def _config(_device: SimulatedDevice) -> dict[str, Any]:
    return {"timeout_s": 5, "request_timeout_s": 1.5, "retries": 1}


SIMULATOR = SnmpFleetSimulator("wifi", _target, _config)
