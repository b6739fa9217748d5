"""A simulated BRT bus or garbage truck: drives a route and yields contract payloads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
