"""Routes vehicles keep to, and how far a fix is from its route (``off_route_m``).

Routes live in a data file (``routes.json`` here by default; a city passes its own), not in
code. A vehicle names its route in the registry tag ``route``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

DEFAULT_ROUTES = Path(__file__).resolve().parent / "routes.json"
EARTH_M = 6_371_000.0


class RouteError(ValueError):
    """A routes file is missing or invalid; the message names the file and the route."""


@dataclass(frozen=True, slots=True)
class Route:
    """A polyline of [lat, lon] points in driving order; ``loop`` closes it."""

    route_id: str
    name: str
    points: tuple[tuple[float, float], ...]
    loop: bool = False

    def segments(self) -> list[tuple[tuple[float, float], tuple[float, float]]]:
        """The route's legs (the closing one of a loop included)."""
        points = list(self.points)
        if self.loop:
            points.append(points[0])
        return list(pairwise(points))

    def distance_m(self, lat: float, lon: float) -> float:
        """Metres from a position to the nearest point of the route."""
        if len(self.points) == 1:
            return _segment_m(lat, lon, self.points[0], self.points[0])
        return min(_segment_m(lat, lon, a, b) for a, b in self.segments())


def _segment_m(lat: float, lon: float, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Distance to a segment on a local flat projection around the position.

    Within a city (legs of a few km) the projection's error is well under a metre.
    """
    scale = math.cos(math.radians(lat))

    def xy(p: tuple[float, float]) -> tuple[float, float]:
        return (
            math.radians(p[1] - lon) * scale * EARTH_M,
            math.radians(p[0] - lat) * EARTH_M,
        )

    (ax, ay), (bx, by) = xy(a), xy(b)
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length2))
    return math.hypot(ax + t * dx, ay + t * dy)


def load_routes(path: Path = DEFAULT_ROUTES) -> dict[str, Route]:
    """Read a routes file; RouteError names the file and the route that is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["routes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RouteError(f"{path}: cannot read routes: {err}") from err
    if not isinstance(entries, dict):
        raise RouteError(f"{path}: 'routes' must be an object of route id -> route")
    routes: dict[str, Route] = {}
    for route_id, entry in entries.items():
        try:
            points = tuple((float(p[0]), float(p[1])) for p in entry["points"])
            route = Route(
                str(route_id),
                str(entry.get("name", route_id)),
                points,
                bool(entry.get("loop", False)),
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise RouteError(f"{path}: route {route_id}: {err}") from err
        if not points or not all(-90 <= la <= 90 and -180 <= lo <= 180 for la, lo in points):
            raise RouteError(f"{path}: route {route_id}: points must be [lat, lon] in range")
        routes[route.route_id] = route
    return routes
