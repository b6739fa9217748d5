"""Illegal parking over a live stream: a car stops in the zone, served by the real MJPEG server.

The camera is polled the way the agent polls it (ONVIF health against the stand-in, then a
sample of the stream), so the frames come over HTTP from the MJPEG server at its own pace
and the detector's clock is the agent's. The event must come within 2 s of the dwell limit.
"""

from __future__ import annotations

import datetime as dt

import pytest

from drivers.cctv import FAMILY, generated_scenes
from drivers.cctv.camera_driver import CctvCamera, create_camera
from drivers.cctv.mjpeg_server import MjpegServer
from drivers.framework import DeviceSpec
from tests.drivers.cctv.conftest import StandInFactory

DWELL_S = 4.0
ARRIVE_S = 2.0
SAMPLE_S = ARRIVE_S + DWELL_S + 1.5


async def test_parking_event_over_mjpeg_within_two_seconds_of_the_dwell_limit(
    onvif_stand_in: StandInFactory, mjpeg_server: MjpegServer, unique_id: str
) -> None:
    scene = generated_scenes.car_parks(seconds=SAMPLE_S + 1, arrive_s=ARRIVE_S)
    stand_in = await onvif_stand_in()
    stand_in.camera.stream_uri = mjpeg_server.add_clip("parking", scene.frames)
    spec = DeviceSpec(
        device_id=f"cam-park-{unique_id}",
        device_type="rt_camera",
        protocol="onvif",
        address=stand_in.address(),
        driver_config={
            "password": stand_in.camera.password,
            "sample_every_s": 0,
            # The whole clip once: the server loops it, and the car must not drive in again.
            "sample_s": SAMPLE_S,
            "timeout_s": 30,
            "events": False,
            "analytics": {
                "no_parking_zone": [list(point) for point in scene.zone],
                "parking_dwell_s": DWELL_S,
            },
        },
    )
    camera = create_camera(spec, FAMILY.validate(spec))
    assert isinstance(camera, CctvCamera)
    try:
        readings = await camera.poll()
    finally:
        await camera.close()
    telemetry = readings[0].metrics
    assert telemetry["stream_ok"] is True, telemetry
    assert telemetry["parked_vehicles"] == 1
    events = [r for r in readings if r.kind == "event"]
    assert [e.metrics["event"] for e in events] == ["illegal_parking"]
    event = events[0]
    assert float(event.metrics["dwell_s"]) == pytest.approx(DWELL_S, abs=2.0)
    # When it was raised: the sample ends one frame after SAMPLE_S from its first frame and
    # the telemetry is stamped then, the clip starts with the stream (each client's first
    # frame is the clip's first), and the car stops ARRIVE_S into it.
    first_frame_at = readings[0].ts - dt.timedelta(seconds=SAMPLE_S)
    stopped_at = first_frame_at + dt.timedelta(seconds=ARRIVE_S)
    late_s = (event.ts - stopped_at).total_seconds()
    assert late_s == pytest.approx(DWELL_S, abs=2.0), (late_s, telemetry)
    assert set(event.metrics) <= set(FAMILY.device_type("rt_camera").metrics)
