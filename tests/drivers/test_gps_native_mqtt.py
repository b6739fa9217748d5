"""Devices that publish the contract themselves: a simulated GPS vehicle over the real broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from drivers.contract import device_topic, epoch_ms
from drivers.framework import discover_families
from drivers.gps.gps_fix import GpsFix, GpsFixError, validate_gps_metrics
from drivers.gps.simulated_vehicle import BRT_CORRIDOR_1, drive
from tests.conftest import MqttClientFactory


@pytest.mark.parametrize(
    ("metrics", "field"),
    [
        ({"lat": -91.0, "lon": 110.4, "speed_kmh": 30, "heading": 10}, "lat"),
        ({"lat": -6.9, "lon": 181.0, "speed_kmh": 30, "heading": 10}, "lon"),
        ({"lat": -6.9, "lon": 110.4, "speed_kmh": -1, "heading": 10}, "speed_kmh"),
        ({"lat": -6.9, "lon": 110.4, "speed_kmh": 30, "heading": 360}, "heading"),
        ({"lat": float("nan"), "lon": 110.4, "speed_kmh": 30, "heading": 1}, "lat"),
        ({"lat": -6.9, "lon": 110.4, "speed_kmh": 30}, "heading"),
        ({"lat": -6.9, "lon": 110.4, "speed_kmh": 30, "heading": 1, "alt": 3}, "alt"),
    ],
)
def test_gps_schema_range_checks_name_the_metric(metrics: dict[str, float], field: str) -> None:
    with pytest.raises(GpsFixError, match=field):
        validate_gps_metrics(metrics)


def test_gps_family_needs_no_agent() -> None:
    family = discover_families()["gps"]
    assert family.create_poller is None
    assert family.create_stream is None
    assert [m.key for m in family.metrics][:4] == ["lat", "lon", "speed_kmh", "heading"]


def test_simulated_bus_drives_east_along_the_corridor() -> None:
    fixes = list(drive(BRT_CORRIDOR_1, start=datetime(2026, 11, 22, 7, tzinfo=UTC)))
    assert len(fixes) == len(BRT_CORRIDOR_1) - 1
    times = [ts for ts, _ in fixes]
    assert times == sorted(times)
    for _, fix in fixes:
        validate_gps_metrics(
            {"lat": fix.lat, "lon": fix.lon, "speed_kmh": fix.speed_kmh, "heading": fix.heading}
        )
        assert 45 < fix.heading < 180  # east to south-east
        assert 0 < fix.speed_kmh <= 31


def test_vehicle_publishing_the_contract_reaches_the_broker(
    mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    truck = f"truck-{unique_id}"
    topic = device_topic(truck, "telemetry")
    listener = mqtt_client()
    listener.subscribe(topic)
    vehicle = mqtt_client(client_id=f"{truck}-tracker")
    start = datetime(2026, 11, 22, 6, 30, tzinfo=UTC)
    sent = []
    for seq, (ts, fix) in enumerate(drive(BRT_CORRIDOR_1, start=start), start=1):
        payload = fix.reading(truck, ts, seq).payload()
        sent.append(payload)
        vehicle.publish(topic, payload, qos=1)
    messages = listener.wait_for(len(sent))
    assert [m.payload for m in messages] == sent
    received = [json.loads(m.payload) for m in messages]
    assert received[0]["ts"] == epoch_ms(start)
    assert set(received[0]["metrics"]) == {"lat", "lon", "speed_kmh", "heading"}
    assert all(m.qos == 1 for m in messages)
    with pytest.raises(GpsFixError):
        GpsFix(lat=-6.9, lon=110.4, speed_kmh=400, heading=0).reading(truck, start, 99)
