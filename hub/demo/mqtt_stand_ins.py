"""MQTT-LEVEL STAND-INS for families whose driver (and protocol simulator) does not exist yet.

Cameras (cctv), WiFi access points (wifi) and ATCS controllers with their detectors (atcs,
atcs_detector) are registered with stand-in device types (``*_stand_in``) and their
readings are published straight onto the broker, as an agent would after polling them,
through a stand-in gateway per area (``gw-<area>-stand-in``, a registered gateway with its
own identity, so no real agent's session is touched). Nothing here speaks SNMP, ONVIF or
NTCIP: when ``drivers/<family>/simulator.py`` exists, ``hub.demo.fleet.all_simulators``
uses it instead and these stand-ins step aside.

Metric names and kinds are rows of the families' own metric tables (a test keeps them so),
so boards built on the stand-ins keep working and InfluxDB never sees one field with two
types: ``atcs`` (control_mode, flash, alarm_critical, pattern, cycle_s), ``atcs_detector``
(volume, occupancy_pct, fault, alarms), ``wifi`` (up, uptime_s, clients, rx_bps, tx_bps,
reboots), ``cctv`` (onvif_status, stream_ok, fps_measured, people_count, crowd_level).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from device_registry.schemas import DeviceTypeCreate, MetricSpec
from drivers.contract import MetricValue, gateway_device_topic, readings_payload
from drivers.simulation import (
    SimulatedDevice,
    SimulatedMqttLink,
    SimulatorContext,
    SimulatorStats,
)

log = logging.getLogger(__name__)
STAND_IN_PROTOCOL = "mqtt_stand_in"
STAND_IN_GATEWAY_SUFFIX = "-stand-in"
TICK_S = 1.0  # wall seconds between publishing rounds


def _type(name: str, family: str, interval: float, metrics: dict[str, str], what: str) -> Any:
    return DeviceTypeCreate(
        name=name,
        family=family,
        protocol=STAND_IN_PROTOCOL,
        expected_interval_s=interval,
        metrics=[MetricSpec(name=k, kind=v) for k, v in metrics.items()],
        description=f"STAND-IN (MQTT level only, no {what} protocol) until drivers/{family} "
        "ships a simulator",
    )


STAND_IN_TYPES: dict[str, DeviceTypeCreate] = {
    t.name: t
    for t in (
        _type(
            "cctv_stand_in",
            "cctv",
            60,
            {
                "onvif_status": "string",
                "stream_ok": "boolean",
                "fps_measured": "number",
                "people_count": "integer",
                "crowd_level": "string",
            },
            "ONVIF/RTSP",
        ),
        _type(
            "wifi_ap_stand_in",
            "wifi",
            300,
            {
                "up": "boolean",
                "uptime_s": "number",
                "clients": "integer",
                "rx_bps": "number",
                "tx_bps": "number",
                "reboots": "integer",
            },
            "SNMP",
        ),
        _type(
            "atcs_controller_stand_in",
            "atcs",
            60,
            {
                "control_mode": "string",
                "flash": "boolean",
                "alarm_critical": "boolean",
                "pattern": "integer",
                "cycle_s": "integer",
            },
            "NTCIP 1202",
        ),
        _type(
            "atcs_detector_stand_in",
            "atcs_detector",
            60,
            {
                "volume": "integer",
                "occupancy_pct": "number",
                "fault": "string",
                "alarms": "integer",
            },
            "NTCIP 1202",
        ),
    )
}
STAND_IN_FAMILIES = {t.family: t.name for t in STAND_IN_TYPES.values()}


def stand_in_gateway(gateway_id: str) -> str:
    """The stand-in gateway that publishes for an area's stand-in devices."""
    return f"{gateway_id}{STAND_IN_GATEWAY_SUFFIX}"


def _busy(hour: float) -> float:
    """0..1: how busy the city is at a local hour (two rush hours, quiet at night)."""
    return max(
        0.05,
        0.9 * math.exp(-(((hour - 7.5) / 1.5) ** 2)) + math.exp(-(((hour - 17.0) / 2.0) ** 2)),
    )


def _local_hour(ctx: SimulatorContext) -> float:
    now = ctx.clock.now()
    return ((now.hour + 7) % 24) + now.minute / 60  # Semarang is UTC+7 (WIB)


MetricsFn = Callable[[SimulatedDevice, random.Random, float, int], dict[str, MetricValue]]


def cctv_metrics(
    device: SimulatedDevice, rng: random.Random, hour: float, n: int
) -> dict[str, MetricValue]:
    """Stream health and a people count that follows the day."""
    stream_ok = rng.random() > 0.01
    people = int(rng.gauss(25 * _busy(hour), 4)) if stream_ok else 0
    people = max(0, people)
    level = "high" if people > 30 else "medium" if people > 12 else "low" if people else "none"
    return {
        "onvif_status": "ok",
        "stream_ok": stream_ok,
        "fps_measured": 25.0 if stream_ok else 0.0,
        "people_count": people,
        "crowd_level": level,
    }


def wifi_metrics(
    device: SimulatedDevice, rng: random.Random, hour: float, n: int
) -> dict[str, MetricValue]:
    """Clients by time of day (0-50 per hotspot), counters that grow, rare reboots."""
    clients = max(0, min(50, int(rng.gauss(30 * _busy(hour), 5))))
    return {
        "up": True,
        "uptime_s": 300.0 * n,
        "clients": clients,
        "rx_bps": round(clients * rng.uniform(20e3, 200e3), 1),
        "tx_bps": round(clients * rng.uniform(100e3, 900e3), 1),
        "reboots": 0,
    }


def atcs_metrics(
    device: SimulatedDevice, rng: random.Random, hour: float, n: int
) -> dict[str, MetricValue]:
    """Coordinated by day, flashing yellow late at night (a common practice)."""
    night = hour < 4.5 or hour >= 23
    return {
        "control_mode": "timebase" if night else "systemControl",
        "flash": night,
        "alarm_critical": rng.random() < 0.02,
        "pattern": 255 if night else 1 + int(hour) // 6,
        "cycle_s": 0 if night else (140 if _busy(hour) > 0.6 else 100),
    }


def detector_metrics(
    device: SimulatedDevice, rng: random.Random, hour: float, n: int
) -> dict[str, MetricValue]:
    """Vehicles per minute and occupancy by the time of day."""
    volume = max(0, int(rng.gauss(30 * _busy(hour), 3)))
    return {
        "volume": volume,
        "occupancy_pct": round(min(100.0, volume * 1.6), 1),
        "fault": "ok",
        "alarms": 0,
    }


METRICS_BY_TYPE: dict[str, MetricsFn] = {
    "cctv_stand_in": cctv_metrics,
    "wifi_ap_stand_in": wifi_metrics,
    "atcs_controller_stand_in": atcs_metrics,
    "atcs_detector_stand_in": detector_metrics,
}


@dataclass
class StandInSimulator:
    """A STAND-IN family simulator: publishes each device's metrics at its type's interval."""

    family: str
    type_name: str

    def __post_init__(self) -> None:
        self.stats = SimulatorStats()
        self.interval_s = STAND_IN_TYPES[self.type_name].expected_interval_s

    async def run(self, devices: Sequence[SimulatedDevice], ctx: SimulatorContext) -> None:
        """One MQTT link per stand-in gateway; rounds every second; until cancelled."""
        by_gateway: dict[str, list[SimulatedDevice]] = {}
        for device in devices:
            if device.gateway_id is None or device.mqtt_username is None:
                log.warning("stand-in %s has no stand-in gateway login: skipped", device.device_id)
                continue
            by_gateway.setdefault(device.gateway_id, []).append(device)
        links: dict[str, SimulatedMqttLink] = {}
        for gateway, members in by_gateway.items():
            link = SimulatedMqttLink(
                ctx,
                username=members[0].mqtt_username or gateway,
                password=members[0].mqtt_password,
            )
            link.start()
            links[gateway] = link
        log.info(
            "STAND-IN %s: %d devices over %d stand-in gateways (MQTT level only)",
            self.family,
            sum(len(m) for m in by_gateway.values()),
            len(links),
        )
        try:
            await self._rounds(by_gateway, links, ctx)
        finally:
            for link in links.values():
                await asyncio.to_thread(link.stop)

    async def _rounds(
        self,
        by_gateway: dict[str, list[SimulatedDevice]],
        links: dict[str, SimulatedMqttLink],
        ctx: SimulatorContext,
    ) -> None:
        flat = [(gw, d) for gw, members in by_gateway.items() for d in members]
        # Phases spread the devices over the interval, as a real poller's start-up does.
        phase = {
            d.device_id: (i / max(1, len(flat))) * self.interval_s for i, (_g, d) in enumerate(flat)
        }
        rngs = {d.device_id: random.Random(d.device_id) for _g, d in flat}
        counts: dict[str, int] = {}
        last = ctx.clock.elapsed_s()
        while True:
            await asyncio.sleep(TICK_S)
            now_s = ctx.clock.elapsed_s()
            hour = _local_hour(ctx)
            ts_ms = time.time_ns() // 1_000_000  # real time: the hub refuses future stamps
            for gateway, device in flat:
                p = phase[device.device_id]
                due = math.floor((now_s - p) / self.interval_s) - math.floor(
                    (last - p) / self.interval_s
                )
                if due <= 0 or ctx.faults.is_dead(device.device_id):
                    continue
                try:
                    n = counts.get(device.device_id, 0) + 1
                    counts[device.device_id] = n
                    metrics = METRICS_BY_TYPE[self.type_name](
                        device, rngs[device.device_id], hour, n
                    )
                    links[gateway].publish(
                        gateway_device_topic(gateway, device.device_id, "telemetry"),
                        readings_payload(metrics, ts_ms=ts_ms, seq=n),
                    )
                    self.stats.produced(device.device_id)
                except Exception:  # one device's failure never stops the others
                    self.stats.failed(device.device_id)
                    log.exception("stand-in %s failed", device.device_id)
            last = now_s


def stand_in_simulators() -> dict[str, StandInSimulator]:
    """A STAND-IN simulator per stand-in family, by family name."""
    return {
        family: StandInSimulator(family, type_name)
        for family, type_name in STAND_IN_FAMILIES.items()
    }
