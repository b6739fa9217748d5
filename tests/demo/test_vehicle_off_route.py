"""Simulated vehicles report off_route_m: about 0 on their route, hundreds on a detour."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_registry.family_types import driver_families
from device_registry.mqtt_identities import (
    BrokerAdmin,
    DynamicSecurityClient,
    DynsecIdentities,
    IdentitySpec,
)
from drivers.contract import device_topic
from drivers.gps.gps_fix import validate_gps_metrics
from drivers.gps.routes import DEFAULT_ROUTES, load_routes
from drivers.gps.simulated_vehicle import Detour
from drivers.gps.simulator import GpsSimulator, plan_of
from drivers.simulation import FaultBoard, SimClock, SimulatedDevice, SimulatorContext
from hub.demo.fleet import all_simulators, load_document, simulated_devices
from hub.demo.fleet_routes import routes_document
from tests.conftest import MqttClientFactory, RunningStack

ROUTES = load_routes()


def fleet_vehicles(scale: str) -> list[SimulatedDevice]:
    doc = load_document("city" if scale == "city" else "sample", None)
    devices = simulated_devices(doc, driver_families(), all_simulators())
    return [d for d in devices if d.family == "gps"]


SAMPLE_VEHICLES = fleet_vehicles("sample")


def test_the_committed_routes_file_is_the_generator_output() -> None:
    assert json.loads(DEFAULT_ROUTES.read_text(encoding="utf-8")) == routes_document()
    assert {"k1", "dlh-genuk-1"} <= set(ROUTES)


@pytest.mark.parametrize("scale", ["sample", "city"])
def test_every_demo_vehicle_names_a_route_of_the_file_and_one_bus_detours(scale: str) -> None:
    vehicles = fleet_vehicles(scale)
    assert vehicles
    for vehicle in vehicles:
        assert vehicle.tags.get("route") in ROUTES, vehicle.device_id
        assert vehicle.tags.get("fleet") in {"brt", "garbage"}, vehicle.device_id
        # The path it drives is its route's geometry (a garbage round may start elsewhere).
        path = [tuple(p) for p in vehicle.params["path"]]
        assert set(path) == set(ROUTES[vehicle.tags["route"]].points), vehicle.device_id
    detouring = {v.device_id for v in vehicles if "detour" in v.params}
    assert "brt-k1-002" in detouring
    # The garbage-truck rule's scope (tag fleet=garbage) holds a truck that detours.
    assert any(v.tags["fleet"] == "garbage" for v in vehicles if v.device_id in detouring)


@given(
    elapsed_s=st.floats(0, 7 * 86_400, allow_nan=False),
    hour=st.floats(0, 23.99),
    index=st.integers(0, 10_000),
)
def test_a_vehicle_keeps_to_its_route_unless_detouring(
    elapsed_s: float, hour: float, index: int
) -> None:
    vehicle = SAMPLE_VEHICLES[index % len(SAMPLE_VEHICLES)]
    plan = plan_of(vehicle, ROUTES)
    fix = plan.fix_at(elapsed_s, hour)
    assert fix.off_route_m is not None
    validate_gps_metrics({"lat": fix.lat, "lon": fix.lon, "speed_kmh": 0, "heading": 0})
    if plan.detour is None or not plan.detour.active(elapsed_s):
        assert fix.off_route_m < 50, vehicle.device_id
    else:
        # Beside the route by the detour's offset, never further.
        assert fix.off_route_m <= plan.detour.offset_m(elapsed_s) + 1.0


@given(st.floats(0, 20 * 3600, allow_nan=False))
def test_the_demo_bus_is_well_off_its_route_in_the_middle_of_each_detour(t: float) -> None:
    bus = next(v for v in SAMPLE_VEHICLES if v.device_id == "brt-k1-002")
    plan = plan_of(bus, ROUTES)
    assert plan.detour is not None
    detour = plan.detour
    # A time in the full-offset middle of a detour: past the ramp in, before the ramp out.
    start = (t // detour.every_s) * detour.every_s - detour.phase_s + detour.every_s
    elapsed = start + detour.ramp_s + (t % (detour.for_s - 2 * detour.ramp_s))
    assert detour.offset_m(elapsed) == pytest.approx(detour.metres)
    off = plan.fix_at(elapsed, 10.0).off_route_m
    assert off is not None
    assert off > 200


@given(
    every_h=st.floats(0.5, 6),
    share=st.floats(0.05, 1),
    metres=st.floats(0, 2000),
    elapsed_s=st.floats(0, 1e7, allow_nan=False),
)
def test_a_detour_offset_stays_within_its_metres_and_its_window(
    every_h: float, share: float, metres: float, elapsed_s: float
) -> None:
    every_s = every_h * 3600
    detour = Detour(every_s=every_s, for_s=every_s * share, metres=metres, ramp_s=120)
    offset = detour.offset_m(elapsed_s)
    assert 0 <= offset <= metres
    if elapsed_s % every_s >= detour.for_s:
        assert offset == 0


def test_a_detour_longer_than_its_period_is_refused() -> None:
    bus = SimulatedDevice(
        device_id="bus", family="gps", device_type="gps_tracker", gateway_id=None,
        kecamatan="Tugu", kelurahan=None, lat=-6.97, lon=110.30,
        params={"detour": {"every_h": 1, "for_min": 90}},
    )  # fmt: skip
    with pytest.raises(ValueError, match="detour"):
        plan_of(bus, ROUTES)


async def test_simulated_buses_publish_off_route_m_on_route_and_on_a_detour(
    running_stack: RunningStack, mqtt_client: MqttClientFactory, unique_id: str, tmp_path: Path
) -> None:
    client = DynamicSecurityClient(
        BrokerAdmin(
            host=running_stack.mqtt_host,
            port=running_stack.mqtt_port,
            username=running_stack.settings.mqtt.username,
            password=running_stack.mqtt_password,
        )
    )
    identities = DynsecIdentities(client)
    ids = (f"{unique_id}-bus-on", f"{unique_id}-bus-detour")
    issued = await asyncio.to_thread(
        identities.create, [IdentitySpec(device_id=i, kind="device") for i in ids]
    )
    secrets = {item.spec.device_id: item.password for item in issued}
    # From the clock's start (elapsed 300 s into the detour's period) for 1,380 simulated
    # seconds (46 s of wall time at 30x) the second bus is at its full 500 m offset.
    detour: Mapping[str, Any] = {
        "every_h": 1.0, "for_min": 30, "m": 500, "ramp_min": 2, "phase_h": 300 / 3600,
    }  # fmt: skip
    route = ROUTES["k1"]
    path = [list(p) for p in route.points]
    plain: dict[str, Any] = {"route": "k1", "path": path, "offset": 0.3}
    buses = [
        SimulatedDevice(
            device_id=device_id,
            family="gps",
            device_type="gps_tracker",
            gateway_id=None,
            kecamatan="Tugu",
            kelurahan=None,
            lat=route.points[0][0],
            lon=route.points[0][1],
            mqtt_username=device_id,
            mqtt_password=secrets[device_id],
            tags={"route": "k1"},
            params=params,
        )
        for device_id, params in zip(ids, (plain, {**plain, "detour": detour}), strict=True)
    ]
    listeners = {}
    for device_id in ids:
        listeners[device_id] = mqtt_client()
        listeners[device_id].subscribe(device_topic(device_id, "telemetry"))
    simulator = GpsSimulator()
    ctx = SimulatorContext(
        clock=SimClock(30),  # a report a second (the 30 s interval at 30x)
        faults=FaultBoard(),
        mqtt_host=running_stack.mqtt_host,
        mqtt_port=running_stack.mqtt_port,
        state_dir=tmp_path,
    )
    task = asyncio.create_task(simulator.run(buses, ctx))
    try:
        received = {
            device_id: await asyncio.to_thread(listener.wait_for, 2, 20.0)
            for device_id, listener in listeners.items()
        }
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(identities.revoke, [item.spec for item in issued])
        client.close()
    off = {
        device_id: [json.loads(m.payload)["metrics"]["off_route_m"] for m in messages]
        for device_id, messages in received.items()
    }
    assert len(off[ids[0]]) >= 2
    assert len(off[ids[1]]) >= 2
    assert all(0 <= d < 50 for d in off[ids[0]]), off
    assert all(d > 200 for d in off[ids[1]]), off
