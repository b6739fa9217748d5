"""The SNMP driver of the wifi family: uptime and reboots, interfaces, traffic and clients.

One GET (sysUpTime) and one GETBULK walk of the interface columns per poll, plus one walk
of the vendor's client column (MikroTik's AP table or UniFi's VAP table), by device type.
An object the agent lacks (noSuchObject, an empty table) leaves its metric out: an AP
that cannot count clients never reports zero clients.
"""

from __future__ import annotations

import logging
import time
from typing import Final, Literal

from pydantic import Field

from drivers.framework import DeviceSpec, DriverConfig, DriverError, MetricValue, Reading, utc_now
from drivers.snmp import SnmpTargetConfig, SnmpValue, Unsupported, client_for_family
from drivers.snmp.values import WrongTypeError, integer, text
from drivers.wifi.if_counters import RateMeter, uptime_rebooted

log = logging.getLogger(__name__)
FAMILY_NAME: Final = "wifi"
SYS_UPTIME: Final = "1.3.6.1.2.1.1.3.0"
IF_NAME: Final = "1.3.6.1.2.1.31.1.1.1.1"
IF_OPER_STATUS: Final = "1.3.6.1.2.1.2.2.1.8"
IF_HC_IN_OCTETS: Final = "1.3.6.1.2.1.31.1.1.1.6"
IF_HC_OUT_OCTETS: Final = "1.3.6.1.2.1.31.1.1.1.10"
IF_COLUMNS: Final = (IF_NAME, IF_OPER_STATUS, IF_HC_IN_OCTETS, IF_HC_OUT_OCTETS)
MIKROTIK_CLIENT_COUNT: Final = "1.3.6.1.4.1.14988.1.1.1.3.1.6"
UNIFI_VAP_NUM_STATIONS: Final = "1.3.6.1.4.1.41112.1.6.1.2.1.8"
Vendor = Literal["mikrotik", "unifi", "generic"]
CLIENT_COLUMN: Final[dict[str, str | None]] = {
    "mikrotik": MIKROTIK_CLIENT_COUNT,
    "unifi": UNIFI_VAP_NUM_STATIONS,
    "generic": None,
}
DEVICE_VENDORS: Final[dict[str, Vendor]] = {
    "mikrotik_ap": "mikrotik",
    "unifi_ap": "unifi",
    "generic_snmp_ap": "generic",
}
OPER_UP: Final = 1


class AccessPointConfig(SnmpTargetConfig):
    """A WiFi AP: SNMP target and the interfaces whose traffic counts (by ifName)."""

    interfaces: tuple[str, ...] | None = Field(
        default=None,
        description="ifNames to count; unset: every interface except loopback",
    )


class AccessPoint:
    """Polls one AP; keeps the counters' previous values to turn them into rates."""

    def __init__(self, spec: DeviceSpec, config: AccessPointConfig) -> None:
        self.device_id = spec.device_id
        self.config = config
        self.vendor: Vendor = DEVICE_VENDORS.get(spec.device_type, "generic")
        self.reboots = 0
        self._uptime: tuple[int, float] | None = None
        self._rx: dict[str, RateMeter] = {}
        self._tx: dict[str, RateMeter] = {}
        self._seq = 0
        self._wrong_logged: set[str] = set()
        self._rows: int | None = None  # interface rows seen last poll: sizes the GETBULK
        self.clock = time.monotonic  # the rates' time base (tests step a clock of their own)

    async def poll(self) -> list[Reading]:
        """GET uptime, walk interfaces and clients; one Reading."""
        client = client_for_family(FAMILY_NAME)
        column = CLIENT_COLUMN[self.vendor]
        columns = IF_COLUMNS if column is None else (*IF_COLUMNS, column)
        # One GETBULK: sysUpTime as a non-repeater, the interface and client columns.
        scalars, table = await client.get_and_walk(
            self.device_id, self.config, [SYS_UPTIME], columns, rows_hint=self._rows
        )
        self._rows = max((len(rows) for rows in table.values()), default=0) or None
        clients = None if column is None else table.pop(column)
        return [self.decode(scalars[SYS_UPTIME], table, clients, self.clock())]

    def decode(
        self,
        uptime: SnmpValue | Unsupported,
        table: dict[str, dict[str, SnmpValue | Unsupported]],
        clients: dict[str, SnmpValue | Unsupported] | None,
        now_s: float,
    ) -> Reading:
        """Values to metrics; ``now_s`` is a monotonic clock for the rates."""
        metrics: dict[str, MetricValue] = {}
        rebooted = False
        ticks = self._int(uptime, "sysUpTime")
        if ticks is not None:
            if self._uptime is not None:
                before, at = self._uptime
                rebooted = uptime_rebooted(before, ticks, now_s - at)
                self.reboots += rebooted
            self._uptime = (ticks, now_s)
            metrics["uptime_s"] = ticks / 100
        metrics["reboots"] = self.reboots
        names = table.get(IF_NAME, {})
        wanted = [index for index in table.get(IF_OPER_STATUS, {}) if self._counted(names, index)]
        if wanted:
            statuses = [self._int(table[IF_OPER_STATUS][i], f"ifOperStatus.{i}") for i in wanted]
            metrics["up"] = any(s == OPER_UP for s in statuses)
        for column, meters, metric in (
            (IF_HC_IN_OCTETS, self._rx, "rx_bps"),
            (IF_HC_OUT_OCTETS, self._tx, "tx_bps"),
        ):
            rates: list[float | None] = []
            for index in wanted:
                octets = self._int(table.get(column, {}).get(index, Unsupported()), metric)
                if octets is None:
                    continue  # no 64-bit counter on this interface: not counted, never zero
                meter = meters.setdefault(index, RateMeter())
                rates.append(meter.update(octets, now_s, reset=rebooted))
            if rates and all(r is not None for r in rates):
                metrics[metric] = round(sum(r for r in rates if r is not None), 3)
        if clients:
            counts = [self._int(v, "client count") for v in clients.values()]
            if all(c is not None for c in counts):
                metrics["clients"] = sum(c for c in counts if c is not None)
        self._seq += 1
        return Reading(device_id=self.device_id, ts=utc_now(), metrics=metrics, seq=self._seq)

    def _counted(self, names: dict[str, SnmpValue | Unsupported], index: str) -> bool:
        name = names.get(index)
        label = "" if name is None else self._text(name)
        if self.config.interfaces is not None:
            return label in self.config.interfaces
        return not label.startswith("lo")

    def _text(self, value: SnmpValue | Unsupported) -> str:
        try:
            out = text(value, "ifName")
        except WrongTypeError:
            return ""
        return "" if isinstance(out, Unsupported) else out

    def _int(self, value: SnmpValue | Unsupported, name: str) -> int | None:
        try:
            out = integer(value, name)
        except WrongTypeError as err:
            if name not in self._wrong_logged:
                self._wrong_logged.add(name)
                log.warning("device %s: %s; that metric is left out", self.device_id, err)
            return None
        return None if isinstance(out, Unsupported) else out

    async def close(self) -> None:
        """Nothing per device: the family's engine is shared."""


def create_access_point(spec: DeviceSpec, config: DriverConfig) -> AccessPoint:
    """The family's factory: a poller for one AP."""
    assert isinstance(config, AccessPointConfig)
    return AccessPoint(spec, config)


def check_device(spec: DeviceSpec, config: DriverConfig) -> None:
    """Start-up check: the device type names a known vendor."""
    if spec.device_type not in DEVICE_VENDORS:
        raise DriverError(spec.device_id, f"unknown AP type {spec.device_type!r}")
