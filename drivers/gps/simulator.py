"""The GPS family's demo simulator: trackers publishing the contract under their own identity.

Every vehicle has its own MQTT connection, logged in as itself (``mqtt_username``,
``mqtt_password`` from the registry's issued identity), with a retained ``offline`` Last
Will on its status topic, as a real tracker has. Per-device ``params``:

* ``path``: ``[[lat, lon], ...]`` stops of its route; BRT buses (``route``) go back and
  forth along their corridor at traffic speeds, dwelling at stops; garbage trucks
  (``round``) loop through their kelurahan, working 05:00-13:00 WIB and parked otherwise;
* ``offset`` (0..1): where in its cycle the vehicle starts;
* ``detour``: ``{"every_h", "for_min", "m", "ramp_min", "phase_h"}``, now and then the
  vehicle drives ``m`` metres beside its route (a closed road), while it is moving.

A vehicle whose registry tag ``route`` names a route of ``drivers/gps/routes.json`` also
reports ``off_route_m``, its distance to that route (``drivers.gps.routes``), as a tracker
that knows its route does: a metre or so on it, hundreds during a detour.

Reports every ``expected_interval_s / speed`` wall seconds (at least one second); ``ts`` is
real time (the hub refuses stamps from the future), the position is simulated time's.
A dead vehicle (fault board or ``dies_after_h``) stops reporting until healed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from drivers.contract import device_topic, status_payload
from drivers.framework import utc_now
from drivers.gps.gps_fix import GpsFix
from drivers.gps.routes import Route, RouteError, load_routes
from drivers.gps.simulated_vehicle import (
    BRT_CORRIDOR_1,
    Detour,
    RouteMotion,
    beside,
    traffic_factor,
)
from drivers.simulation import (
    SimulatedDevice,
    SimulatedMqttLink,
    SimulatorContext,
    SimulatorStats,
)

log = logging.getLogger(__name__)
BUS_INTERVAL_S = 30.0  # the gps_tracker type's expected interval
MIN_WALL_INTERVAL_S = 1.0


def motion_of(device: SimulatedDevice) -> RouteMotion:
    """The vehicle's route from its params (a bus on corridor 1 when none is given)."""
    params = device.params
    raw = params.get("path")
    path: tuple[tuple[float, float], ...]
    if isinstance(raw, list | tuple) and len(raw) >= 2:
        path = tuple((float(p[0]), float(p[1])) for p in raw)
    else:
        path = BRT_CORRIDOR_1
    is_round = "round" in params
    return RouteMotion(
        path=path,
        cruise_kmh=18.0 if is_round else 30.0,
        dwell_s=120.0 if is_round else 30.0,
        loop=is_round,
        offset=float(params.get("offset", 0.0)),
    )


def detour_of(device: SimulatedDevice) -> Detour | None:
    """The vehicle's detours from ``params["detour"]``, or None when it keeps to its route."""
    raw = device.params.get("detour")
    if not isinstance(raw, Mapping):
        return None
    every_s = float(raw.get("every_h", 1.0)) * 3600
    for_s = float(raw.get("for_min", 15.0)) * 60
    if not 0 < for_s <= every_s:
        raise ValueError(f"{device.device_id}: detour: for_min must be > 0 and within every_h")
    return Detour(
        every_s=every_s,
        for_s=for_s,
        metres=float(raw.get("m", 500.0)),
        ramp_s=float(raw.get("ramp_min", 2.0)) * 60,
        phase_s=float(raw.get("phase_h", 0.0)) * 3600,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class VehiclePlan:
    """What one simulated vehicle does: its motion, its detours, the route it reports on."""

    motion: RouteMotion
    is_round: bool = False  # a garbage truck: works 05:00-13:00 WIB, parked otherwise
    detour: Detour | None = None
    route: Route | None = None  # set: the fix carries off_route_m

    def fix_at(self, elapsed_s: float, hour: float) -> GpsFix:
        """The vehicle's fix ``elapsed_s`` simulated seconds in, at local ``hour``."""
        if self.is_round and not 5.0 <= hour < 13.0:
            fix = self.motion.fix_at(0.0)  # parked at the depot (the first stop)
        else:
            fix = self.motion.fix_at(elapsed_s, traffic=traffic_factor(hour))
            if self.detour is not None:
                fix = beside(fix, self.detour.offset_m(elapsed_s))
        if self.route is None:
            return fix
        return replace(fix, off_route_m=round(self.route.distance_m(fix.lat, fix.lon), 1))


def plan_of(device: SimulatedDevice, routes: Mapping[str, Route]) -> VehiclePlan:
    """The vehicle's plan from its params and its registry tag ``route``."""
    route_id = device.tags.get("route")
    route = routes.get(route_id) if route_id else None
    if route_id and route is None:
        log.warning("gps simulator: %s: no route %r in the routes file", device.device_id, route_id)
    return VehiclePlan(
        motion=motion_of(device),
        is_round="round" in device.params,
        detour=detour_of(device),
        route=route,
    )


def local_hour(ctx: SimulatorContext) -> float:
    """The simulated hour of day in Semarang (WIB, UTC+7)."""
    now = ctx.clock.now()
    return (now.hour + 7) % 24 + now.minute / 60


class GpsSimulator:
    """Drives every vehicle of the fleet until cancelled."""

    family = "gps"

    def __init__(self, routes: Mapping[str, Route] | None = None) -> None:
        self.stats = SimulatorStats()
        self._routes = routes

    def routes(self) -> Mapping[str, Route]:
        """The routes vehicles report off_route_m on (``routes.json`` unless given)."""
        if self._routes is None:
            try:
                self._routes = load_routes()
            except RouteError as err:  # the vehicles still drive, without off_route_m
                log.error("gps simulator: %s", err)
                self._routes = {}
        return self._routes

    async def run(self, devices: Sequence[SimulatedDevice], ctx: SimulatorContext) -> None:
        """One task per vehicle; a vehicle that fails is logged and the others drive on."""
        self.routes()  # read once, before the vehicles start
        async with asyncio.TaskGroup() as group:
            for device in devices:
                group.create_task(self._guarded(device, ctx), name=f"gps-sim-{device.device_id}")

    async def _guarded(self, device: SimulatedDevice, ctx: SimulatorContext) -> None:
        try:
            await self.drive(device, ctx)
        except asyncio.CancelledError:
            raise
        except Exception:  # one vehicle's failure never stops the others
            self.stats.failed(device.device_id)
            log.exception("gps simulator: %s stopped", device.device_id)

    async def drive(self, device: SimulatedDevice, ctx: SimulatorContext) -> None:
        """Connect as the vehicle and report its position until cancelled."""
        status = device_topic(device.device_id, "status")
        link = SimulatedMqttLink(
            ctx,
            username=device.mqtt_username or device.device_id,
            password=device.mqtt_password,
            will=(status, status_payload(False, "connection lost")),
        )
        plan = plan_of(device, self.routes())
        interval = max(MIN_WALL_INTERVAL_S, ctx.clock.wall_seconds(BUS_INTERVAL_S))
        started = ctx.clock.elapsed_s()
        dies = device.params.get("dies_after_h")
        await asyncio.to_thread(link.start)
        link.publish(status, status_payload(True, ts_ms=time.time_ns() // 1_000_000), retain=True)
        seq = 0
        # Spread the vehicles' reports over the interval instead of all at once.
        await asyncio.sleep(interval * (zlib.crc32(device.device_id.encode()) % 1000) / 1000)
        try:
            while True:
                age_h = (ctx.clock.elapsed_s() - started) / 3600
                dead = ctx.faults.is_dead(device.device_id) or (
                    isinstance(dies, int | float) and age_h >= dies
                )
                if not dead:
                    fix = plan.fix_at(ctx.clock.elapsed_s(), local_hour(ctx))
                    seq += 1
                    reading = fix.reading(device.device_id, utc_now(), seq)
                    link.publish(device_topic(device.device_id, "telemetry"), reading.payload())
                    self.stats.produced(device.device_id)
                await asyncio.sleep(interval)
        finally:
            last = (status, status_payload(False, "simulator stopped"))
            await asyncio.to_thread(link.stop, last)


SIMULATOR = GpsSimulator()
