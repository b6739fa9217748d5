"""Analytics with no downloaded weights on generated scenes: HOG people, crowd zone, parking."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from drivers.cctv import FAMILY, generated_scenes
from drivers.cctv.analytics import (
    CrowdLevels,
    ParkingDetector,
    PeopleDetector,
    count_people,
    inside,
)
from drivers.cctv.camera_driver import (
    AnalyticsConfig,
    CctvCamera,
    SampleAnalytics,
    create_camera,
)
from drivers.cctv.mjpeg_server import MjpegServer
from drivers.framework import DeviceSpec
from tests.drivers.cctv.conftest import StandInFactory


@pytest.mark.parametrize("people", [1, 3, 4])
def test_hog_counts_walking_figures_within_one(people: int) -> None:
    detector = PeopleDetector()
    frames = generated_scenes.walking_people(12, people)
    counts = [len(detector.detect(frame)) for frame in frames[::4]]
    assert all(abs(count - people) <= 1 for count in counts), counts


def test_empty_street_has_nobody() -> None:
    detector = PeopleDetector()
    assert detector.detect(generated_scenes.moving_shapes(1)[0]) == []


def test_crowd_zone_counts_only_feet_inside() -> None:
    frame = generated_scenes.walking_people(1, 4)[0]
    boxes = PeopleDetector().detect(frame)
    left_half = ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))
    total, in_zone = count_people(boxes, frame.shape, left_half)
    assert abs(total - 4) <= 1
    assert abs(in_zone - 2) <= 1
    assert in_zone < total
    assert CrowdLevels(low=1, medium=3, high=6).level(in_zone) in ("low", "medium")


def test_parking_event_within_two_seconds_of_the_dwell_limit() -> None:
    scene = generated_scenes.car_parks(seconds=10, arrive_s=2.0)
    detector = ParkingDetector(zone=scene.zone, dwell_limit_s=6.0)
    events = []
    for index, frame in enumerate(scene.frames):
        events += detector.update(frame, index / scene.fps)
    assert len(events) == 1
    assert events[0].at_s == pytest.approx(scene.stopped_at_s + 6.0, abs=2.0)
    assert events[0].dwell_s == pytest.approx(6.0, abs=2.0)
    assert detector.parked == 1


def test_parking_becomes_an_event_reading_of_the_family_table() -> None:
    scene = generated_scenes.car_parks(seconds=9, arrive_s=2.0)
    config = AnalyticsConfig(no_parking_zone=scene.zone, parking_dwell_s=5.0)
    assert config.no_parking_zone is not None
    parking = ParkingDetector(zone=config.no_parking_zone, dwell_limit_s=5.0)
    now = [0.0]
    analytics = SampleAnalytics("cam-p", config, parking, clock=lambda: now[0])
    for index, frame in enumerate(scene.frames):
        now[0] = index / scene.fps
        analytics.on_frame(frame, now[0])
    assert len(analytics.events) == 1
    event = analytics.events[0]
    assert event.kind == "event"
    assert event.metrics["event"] == "illegal_parking"
    assert float(event.metrics["dwell_s"]) == pytest.approx(5.0, abs=2.0)
    assert set(event.metrics) <= set(FAMILY.device_type("rt_camera").metrics)
    assert analytics.metrics()["parked_vehicles"] == 1


def test_traffic_that_keeps_moving_is_not_parking() -> None:
    frames = generated_scenes.moving_shapes(80)
    zone = ((0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0))
    detector = ParkingDetector(zone=zone, dwell_limit_s=5.0)
    events = [e for i, f in enumerate(frames) for e in detector.update(f, i / 10.0)]
    assert events == []
    assert detector.motion_ratio > 0


async def test_camera_counts_people_and_stays_inside_the_agent(
    onvif_stand_in: StandInFactory, mjpeg_server: MjpegServer, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    stand_in.camera.stream_uri = mjpeg_server.add_clip(
        "people", generated_scenes.walking_people(20, 3)
    )
    spec = DeviceSpec(
        device_id=f"cam-{unique_id}",
        device_type="rt_camera",
        protocol="onvif",
        address=stand_in.address(),
        driver_config={
            "password": stand_in.camera.password,
            "sample_every_s": 0,
            "sample_s": 1.0,
            "events": False,
            "analytics": {
                "people": True,
                "crowd_zone": [[0, 0], [1, 0], [1, 1], [0, 1]],
                "crowd_levels": [1, 3, 10],
                "no_parking_zone": [[0.5, 0.5], [1, 0.5], [1, 1], [0.5, 1]],
            },
        },
    )
    camera = create_camera(spec, FAMILY.validate(spec))
    assert isinstance(camera, CctvCamera)
    try:
        readings = await camera.poll()
    finally:
        await camera.close()
    metrics = readings[0].metrics
    assert abs(int(metrics["people_count"]) - 3) <= 1
    assert abs(int(metrics["zone_people"]) - 3) <= 1
    assert metrics["crowd_level"] in ("low", "medium")
    assert metrics["parked_vehicles"] == 0
    assert "motion_ratio" in metrics
    assert set(metrics) <= set(FAMILY.device_type("rt_camera").metrics)
    # Only numbers, flags and short words are published: no picture.
    assert all(not isinstance(v, str) or len(v) <= 200 for v in metrics.values())


@given(x=st.floats(-1, 2), y=st.floats(-1, 2))
def test_point_in_unit_square(x: float, y: float) -> None:
    # OpenCV tests in float32: points within 1e-3 of an edge may fall either way.
    assume(min(abs(x), abs(x - 1), abs(y), abs(y - 1)) > 1e-3)
    square = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))
    assert inside(square, x, y) == (0 <= x <= 1 and 0 <= y <= 1)


@given(count=st.integers(0, 1000))
def test_crowd_levels_are_monotonic(count: int) -> None:
    levels = CrowdLevels(low=1, medium=10, high=30)
    order = ["none", "low", "medium", "high"]
    assert order.index(levels.level(count)) <= order.index(levels.level(count + 1))
