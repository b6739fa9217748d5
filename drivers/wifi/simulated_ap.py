"""Simulated MikroTik and UniFi access points: clients come and go, reboots, counter wraps.

Served by ``drivers.snmp.simulated_agent``. ``clock`` is a parameter so tests step time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from drivers.snmp.simulated_agent import SimulatedTarget, SimValue
from drivers.wifi.access_point import (
    IF_HC_IN_OCTETS,
    IF_HC_OUT_OCTETS,
    IF_NAME,
    IF_OPER_STATUS,
    MIKROTIK_CLIENT_COUNT,
    SYS_UPTIME,
    UNIFI_VAP_NUM_STATIONS,
)
from drivers.wifi.if_counters import COUNTER64


@dataclass(slots=True)
class SimulatedAccessPoint(SimulatedTarget):
    """An AP: two interfaces (lo, wlan), counters at rx/tx bit rates, clients per radio."""

    vendor: Literal["mikrotik", "unifi", "generic"] = "mikrotik"
    clock: Callable[[], float] = time.monotonic
    rx_bps: float = 8_000_000.0
    tx_bps: float = 2_000_000.0
    counter_start: int = 0
    clients_by_radio: tuple[int, ...] = (7, 3)
    wlan_up: bool = True
    new_wifi_package: bool = False  # RouterOS 7 wifi: the old AP table answers noSuchObject
    booted: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.booted = self.clock()

    def reboot(self) -> None:
        """Restart: uptime and the counters start from zero."""
        self.booted = self.clock()
        self.counter_start = 0

    def objects(self) -> Mapping[str, SimValue]:
        """The AP's objects now."""
        up = self.clock() - self.booted
        rx = (self.counter_start + int(self.rx_bps / 8 * up)) % COUNTER64
        tx = (self.counter_start + int(self.tx_bps / 8 * up)) % COUNTER64
        out: dict[str, SimValue] = {
            SYS_UPTIME: ("timeticks", int(up * 100) % 2**32),
            f"{IF_NAME}.1": ("octets", b"lo"),
            f"{IF_NAME}.2": ("octets", b"wlan1"),
            f"{IF_OPER_STATUS}.1": ("integer", 1),
            f"{IF_OPER_STATUS}.2": ("integer", 1 if self.wlan_up else 2),
            f"{IF_HC_IN_OCTETS}.1": ("counter64", 1000),
            f"{IF_HC_IN_OCTETS}.2": ("counter64", rx),
            f"{IF_HC_OUT_OCTETS}.1": ("counter64", 1000),
            f"{IF_HC_OUT_OCTETS}.2": ("counter64", tx),
        }
        if self.vendor == "mikrotik" and not self.new_wifi_package:
            for radio, count in enumerate(self.clients_by_radio, start=2):
                out[f"{MIKROTIK_CLIENT_COUNT}.{radio}"] = ("integer", count)
        elif self.vendor == "unifi":
            for vap, count in enumerate(self.clients_by_radio, start=1):
                out[f"{UNIFI_VAP_NUM_STATIONS}.{vap}"] = ("integer", count)
        return out
