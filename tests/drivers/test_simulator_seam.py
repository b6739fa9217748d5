"""The simulators' seam: simulated time, the fault board, discovery, vehicles on their routes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.gps.gps_fix import distance_m, validate_gps_metrics
from drivers.gps.simulated_vehicle import BRT_CORRIDOR_1, RouteMotion, traffic_factor
from drivers.simulation import (
    AddressAssigner,
    FamilySimulator,
    FaultBoard,
    SimClock,
    discover_simulators,
)


def test_clock_runs_speed_times_real_time() -> None:
    start = datetime(2026, 12, 2, tzinfo=UTC)
    clock = SimClock(3600, start)
    assert clock.now() >= start
    assert clock.wall_seconds(3600) == pytest.approx(1.0)
    assert clock.now() - start < timedelta(hours=1)  # well under a second has passed
    with pytest.raises(ValueError, match="greater than 0"):
        SimClock(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        SimClock(1, datetime(2026, 12, 2))


async def test_clock_sleep_is_in_simulated_seconds() -> None:
    clock = SimClock(600)
    before = clock.elapsed_s()
    await clock.sleep(60)  # 0.1 s of wall time
    assert clock.elapsed_s() - before >= 60


def test_faults_from_many_threads_and_heal() -> None:
    board = FaultBoard()
    ids = [f"dev-{n}" for n in range(200)]
    threads = [threading.Thread(target=board.device_dies, args=(d,)) for d in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    board.flood_rises("Genuk")
    assert all(board.is_dead(d) for d in ids)
    assert board.is_flooding("genuk")
    assert board.is_flooding("GENUK")
    assert not board.is_flooding("Tugu")
    assert not board.is_flooding(None)
    revision = board.revision
    board.heal()
    assert board.revision > revision
    assert board.snapshot() == {"dead_devices": [], "flooding_areas": []}


@given(
    dead=st.lists(st.text(min_size=1, max_size=10), max_size=5),
    flooding=st.lists(st.text(min_size=1, max_size=10), max_size=5),
)
def test_a_snapshot_round_trips_to_another_board(dead: list[str], flooding: list[str]) -> None:
    board = FaultBoard()
    for device_id in dead:
        board.device_dies(device_id)
    for area in flooding:
        board.flood_rises(area)
    other = FaultBoard()
    other.apply_snapshot(board.snapshot())
    assert other.snapshot() == board.snapshot()
    assert all(other.is_dead(d) for d in dead)
    assert all(other.is_flooding(a) for a in flooding)


def test_a_bad_snapshot_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="must be lists"):
        FaultBoard().apply_snapshot({"dead_devices": "dev-1"})


def test_each_existing_family_has_a_discovered_simulator() -> None:
    found = discover_simulators()
    assert {"flood", "gps", "ble"} <= set(found)
    for family, simulator in found.items():
        assert isinstance(simulator, FamilySimulator)
        assert simulator.family == family
    assert isinstance(found["flood"], AddressAssigner)


@settings(max_examples=200)
@given(
    elapsed=st.floats(min_value=0, max_value=7 * 86400),
    hour=st.floats(min_value=0, max_value=23.99),
    offset=st.floats(min_value=0, max_value=1),
    loop=st.booleans(),
)
def test_vehicles_stay_on_their_route_at_traffic_speeds(
    elapsed: float, hour: float, offset: float, loop: bool
) -> None:
    motion = RouteMotion(path=BRT_CORRIDOR_1, offset=offset, loop=loop)
    traffic = traffic_factor(hour)
    fix = motion.fix_at(elapsed, traffic=traffic)
    validate_gps_metrics(
        {"lat": fix.lat, "lon": fix.lon, "speed_kmh": fix.speed_kmh, "heading": fix.heading}
    )
    # Stopped at a stop, or driving at the cruise speed the traffic allows.
    assert fix.speed_kmh == 0.0 or fix.speed_kmh == pytest.approx(max(5.0, 30.0 * traffic), abs=0.1)
    # Somewhere on a leg: never further from the nearest stop than the longest leg.
    longest = max(distance_m(*a, *b) for a, b in motion.legs())
    nearest = min(distance_m(fix.lat, fix.lon, *stop) for stop in BRT_CORRIDOR_1)
    assert nearest <= longest / 2 + 50


def test_rush_hour_is_slower_than_the_night() -> None:
    assert traffic_factor(7.0) < traffic_factor(11.0) < traffic_factor(2.0) + 1e-9
    assert traffic_factor(17.0) < traffic_factor(21.0)
    assert traffic_factor(17.0) >= 0.45


def test_a_bus_dwells_at_its_stops() -> None:
    motion = RouteMotion(path=BRT_CORRIDOR_1, dwell_s=30)
    at_start = motion.fix_at(10)
    assert at_start.speed_kmh == 0.0
    assert (at_start.lat, at_start.lon) == BRT_CORRIDOR_1[0]
    assert motion.fix_at(60).speed_kmh == 30.0
