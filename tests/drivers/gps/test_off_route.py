"""Distance to a vehicle's route: zero on it, the offset beside it, the nearest leg wins."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.gps import GPS_METRICS
from drivers.gps.gps_fix import GpsFix, distance_m
from drivers.gps.routes import Route, RouteError, load_routes
from drivers.gps.simulated_vehicle import RouteMotion

ROUTES = load_routes()


def test_the_demo_routes_load() -> None:
    assert {"k1", "dlh-genuk-1"} <= set(ROUTES)
    assert ROUTES["dlh-genuk-1"].loop
    assert "off_route_m" in {m.key for m in GPS_METRICS}


@given(st.floats(0, 200_000), st.floats(0, 1))
def test_a_bus_driving_its_corridor_is_on_it(elapsed_s: float, offset: float) -> None:
    route = ROUTES["k1"]
    fix = RouteMotion(path=route.points, offset=offset).fix_at(elapsed_s)
    assert route.distance_m(fix.lat, fix.lon) < 1.0


def test_a_point_beside_a_leg_is_its_perpendicular_distance() -> None:
    # A leg due east along the equator-ish latitude of Semarang; 0.005 deg north of its
    # middle is about 556 m off (great circle), whatever the leg's length.
    route = Route("r", "r", ((-7.0, 110.40), (-7.0, 110.42)))
    lat, lon = -6.995, 110.41
    expected = distance_m(lat, lon, -7.0, lon)
    assert route.distance_m(lat, lon) == pytest.approx(expected, rel=0.005)
    # Past the end of the leg, the distance is to the end point.
    assert route.distance_m(-7.0, 110.43) == pytest.approx(
        distance_m(-7.0, 110.43, -7.0, 110.42), rel=0.005
    )


def test_a_loop_counts_its_closing_leg() -> None:
    square = ((-7.0, 110.40), (-7.0, 110.41), (-7.01, 110.41), (-7.01, 110.40))
    midway_home = (-7.005, 110.40)  # on the leg from the last point back to the first
    assert Route("o", "o", square, loop=True).distance_m(*midway_home) < 1.0
    assert Route("o", "o", square, loop=False).distance_m(*midway_home) > 500


def test_off_route_m_is_a_checked_metric_of_the_fix() -> None:
    fix = GpsFix(lat=-7.0, lon=110.4, speed_kmh=20, heading=90, off_route_m=640.5)
    reading = fix.reading("veh-1", datetime(2026, 12, 3, tzinfo=UTC), 1)
    assert reading.metrics["off_route_m"] == 640.5
    with pytest.raises(ValueError, match="off_route_m"):
        GpsFix(lat=-7.0, lon=110.4, speed_kmh=20, heading=90, off_route_m=-1).reading(
            "veh-1", datetime(2026, 12, 3, tzinfo=UTC), 2
        )


def test_a_bad_routes_file_names_the_route(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text(json.dumps({"routes": {"k9": {"points": [[-97.0, 110.0]]}}}))
    with pytest.raises(RouteError, match="k9"):
        load_routes(path)
