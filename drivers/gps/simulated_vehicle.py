"""A simulated BRT bus or garbage truck: drives a route (stops, traffic) and yields fixes."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from itertools import pairwise

from drivers.gps.gps_fix import GpsFix, bearing_deg, distance_m

# A few stops along Semarang's BRT corridor I (Mangkang - Penggaron), demo data only.
BRT_CORRIDOR_1: tuple[tuple[float, float], ...] = (
    (-6.9739, 110.2985),
    (-6.9817, 110.3485),
    (-6.9837, 110.4091),
    (-6.9932, 110.4225),
    (-7.0052, 110.4381),
    (-7.0215, 110.4640),
)


def drive(
    route: Sequence[tuple[float, float]], *, start: datetime, every_s: float = 10.0
) -> Iterator[tuple[datetime, GpsFix]]:
    """One fix per stop-to-stop leg, with the leg's heading and average speed."""
    ts = start
    for (lat1, lon1), (lat2, lon2) in pairwise(route):
        metres = distance_m(lat1, lon1, lat2, lon2)
        leg_s = max(every_s, metres / (30 / 3.6))  # about 30 km/h in city traffic
        yield (
            ts,
            GpsFix(
                lat=lat1,
                lon=lon1,
                speed_kmh=round(metres / leg_s * 3.6, 1),
                heading=round(bearing_deg(lat1, lon1, lat2, lon2), 1),
            ),
        )
        ts += timedelta(seconds=leg_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteMotion:
    """A vehicle going round a route for ever: cruising between stops, dwelling at each.

    ``loop``: a round (garbage truck) returns from the last stop to the first; otherwise
    the vehicle turns back along the corridor (a BRT bus). ``offset`` (0..1) spreads the
    vehicles of one route over its cycle. The position is a pure function of time.
    """

    path: tuple[tuple[float, float], ...]
    cruise_kmh: float = 30.0
    dwell_s: float = 30.0
    loop: bool = False
    offset: float = 0.0

    def legs(self) -> list[tuple[tuple[float, float], tuple[float, float]]]:
        """The stop-to-stop legs of one cycle."""
        points = list(self.path)
        if self.loop:
            points.append(points[0])
        else:
            points += points[-2::-1]
        return list(pairwise(points))

    def _cycle(
        self, kmh: float
    ) -> list[tuple[float, float, tuple[float, float], tuple[float, float]]]:
        out = []
        for a, b in self.legs():
            metres = distance_m(a[0], a[1], b[0], b[1])
            out.append((self.dwell_s, metres / (kmh / 3.6), a, b))
        return out

    def fix_at(self, elapsed_s: float, *, traffic: float = 1.0) -> GpsFix:
        """Where the vehicle is ``elapsed_s`` into its rounds; ``traffic`` scales its speed."""
        kmh = max(5.0, self.cruise_kmh * traffic)
        cycle = self._cycle(kmh)
        total = sum(dwell + drive_s for dwell, drive_s, _a, _b in cycle)
        t = (elapsed_s + self.offset * total) % total
        for dwell, drive_s, a, b in cycle:
            heading = round(bearing_deg(a[0], a[1], b[0], b[1]), 1) % 360
            if t < dwell:
                return GpsFix(lat=a[0], lon=a[1], speed_kmh=0.0, heading=heading)
            t -= dwell
            if t < drive_s:
                f = t / drive_s
                return GpsFix(
                    lat=round(a[0] + (b[0] - a[0]) * f, 6),
                    lon=round(a[1] + (b[1] - a[1]) * f, 6),
                    speed_kmh=round(kmh, 1),
                    heading=heading,
                )
            t -= drive_s
        first = cycle[0][2]
        return GpsFix(lat=first[0], lon=first[1], speed_kmh=0.0, heading=0.0)


def traffic_factor(local_hour: float) -> float:
    """How free the roads are (1 = free flow) at a local hour: slow in the rush hours."""
    morning = math.exp(-(((local_hour - 7.0) / 1.2) ** 2))
    evening = math.exp(-(((local_hour - 17.0) / 1.5) ** 2))
    return max(0.45, 1.0 - 0.5 * morning - 0.55 * evening)


@dataclass(frozen=True, slots=True, kw_only=True)
class Detour:
    """A vehicle that leaves its route now and then (a closed road, a driver's errand).

    Every ``every_s`` (simulated) the vehicle drives ``metres`` beside its route for
    ``for_s``, easing out and back over ``ramp_s`` at each end; ``phase_s`` shifts when.
    """

    every_s: float = 3600.0
    for_s: float = 900.0
    metres: float = 500.0
    ramp_s: float = 120.0
    phase_s: float = 0.0

    def offset_m(self, elapsed_s: float) -> float:
        """How far beside the route the vehicle is at ``elapsed_s`` (0 outside a detour)."""
        t = (elapsed_s + self.phase_s) % self.every_s
        if t >= self.for_s:
            return 0.0
        ramp = max(1e-9, min(self.ramp_s, self.for_s / 2))
        return self.metres * min(1.0, t / ramp, (self.for_s - t) / ramp)

    def active(self, elapsed_s: float) -> bool:
        """Whether a detour is under way at ``elapsed_s``."""
        return self.offset_m(elapsed_s) > 0.0


def beside(fix: GpsFix, metres: float) -> GpsFix:
    """The fix moved ``metres`` to the right of its heading (same speed and heading)."""
    if metres == 0:
        return fix
    right = math.radians(fix.heading + 90.0)
    # Metres to degrees on a local flat projection: a city's detours are a few hundred metres.
    dlat = metres * math.cos(right) / 111_320.0
    dlon = metres * math.sin(right) / (111_320.0 * math.cos(math.radians(fix.lat)))
    return replace(fix, lat=round(fix.lat + dlat, 6), lon=round(fix.lon + dlon, 6))
