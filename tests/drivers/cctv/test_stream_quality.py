"""Stream quality on generated video served by a real MJPEG server and a real RTSP server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.cctv import FAMILY, generated_scenes
from drivers.cctv.camera_driver import CctvCamera, create_camera
from drivers.cctv.device_types import QualityThresholds, thresholds_for
from drivers.cctv.mjpeg_server import MjpegServer
from drivers.cctv.stream_quality import (
    BackgroundModel,
    StreamError,
    frame_stats,
    redact,
    sample_stream,
    small_grey,
)
from drivers.framework import DeviceSpec
from tests.conftest import free_port
from tests.drivers.cctv.conftest import StandInFactory

FPS = 10.0
DEFAULT = QualityThresholds()


async def sample(url: str, background: BackgroundModel | None = None, seconds: float = 1.0) -> Any:
    return await asyncio.to_thread(sample_stream, url, sample_s=seconds, background=background)


async def test_mjpeg_feeds_measure_as_generated(mjpeg_server: MjpegServer) -> None:
    urls = {
        name: mjpeg_server.add_clip(name, frames)
        for name, frames in {
            "moving": generated_scenes.moving_shapes(12),
            "frozen": generated_scenes.frozen(5),
            "black": generated_scenes.black(5),
            "blurred": generated_scenes.blurred(12),
        }.items()
    }
    # Sampled together, each in its own worker thread, as the agent's decode slots do.
    samples = await asyncio.gather(*(sample(url) for url in urls.values()))
    measured = {name: s.quality(DEFAULT, FPS) for name, s in zip(urls, samples, strict=True)}
    moving = measured["moving"]
    assert moving["stream_status"] == "ok"
    assert moving["fps_measured"] == pytest.approx(FPS, abs=1.5)
    assert moving["fps_ratio"] == pytest.approx(1.0, abs=0.15)
    assert 0 <= float(moving["first_frame_s"]) < 3
    assert float(moving["blur_var"]) > 150
    assert measured["frozen"]["frozen"] is True
    assert measured["frozen"]["stream_status"] == "frozen"
    assert measured["black"]["black"] is True
    assert float(measured["black"]["luma_mean"]) < 10
    assert measured["black"]["stream_status"] == "black"
    assert measured["blurred"]["blurred"] is True
    assert float(measured["blurred"]["blur_var"]) < 40
    assert measured["blurred"]["frozen"] is False


async def test_covered_lens_shows_against_the_background_of_earlier_samples(
    mjpeg_server: MjpegServer,
) -> None:
    normal = mjpeg_server.add_clip("normal", generated_scenes.moving_shapes(12))
    covered = mjpeg_server.add_clip("covered", generated_scenes.covered(5))
    background = BackgroundModel()
    first = (await sample(normal, background)).quality(DEFAULT, FPS)
    assert first["scene_changed"] is False
    assert float(first["foreground_ratio"]) < 0.1
    second = (await sample(covered, background)).quality(DEFAULT, FPS)
    assert second["scene_changed"] is True
    assert float(second["foreground_ratio"]) > 0.6
    assert second["stream_status"] == "scene_changed"


async def test_rtsp_stream_from_a_real_rtsp_server(
    rtsp_server: Callable[[dict[str, list[Any]]], str],
) -> None:
    base = rtsp_server({"street": generated_scenes.moving_shapes(35)})
    measured = (await sample(f"{base}/street", seconds=2.0)).quality(DEFAULT, FPS)
    assert measured["stream_ok"] is True
    assert measured["fps_measured"] == pytest.approx(FPS, abs=2.0)
    assert measured["frozen"] is False
    assert measured["black"] is False
    assert float(measured["first_frame_s"]) < 4


async def test_dead_stream_is_open_failed_within_the_timeout() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/nothing"
    with pytest.raises(StreamError) as caught:
        await asyncio.to_thread(sample_stream, url, sample_s=1.0, open_timeout_s=2.0)
    assert caught.value.status == "open_failed"


async def test_camera_poll_samples_the_onvif_stream(
    onvif_stand_in: StandInFactory, mjpeg_server: MjpegServer, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    stand_in.camera.stream_uri = mjpeg_server.add_clip("cam", generated_scenes.frozen(3))
    stand_in.camera.nominal_fps = 25
    spec = DeviceSpec(
        device_id=f"cam-{unique_id}",
        device_type="corporate_camera",
        protocol="onvif",
        address=stand_in.address(),
        driver_config={
            "password": stand_in.camera.password,
            "sample_every_s": 0,
            "sample_s": 1.0,
            "events": False,
            "profile": 0,  # the main stream, whose profile promises 25 fps
        },
    )
    camera = create_camera(spec, FAMILY.validate(spec))
    assert isinstance(camera, CctvCamera)
    try:
        readings = await camera.poll()
    finally:
        await camera.close()
    metrics = readings[0].metrics
    assert metrics["onvif_status"] == "ok"
    assert metrics["stream_ok"] is True
    assert metrics["frozen"] is True
    # 10 fps served against a profile that promises 25: the ratio says so.
    assert metrics["fps_ratio"] == pytest.approx(0.4, abs=0.08)
    assert metrics["stream_status"] == "frozen"
    assert set(metrics) <= set(FAMILY.device_type("corporate_camera").metrics)


def test_thresholds_differ_per_device_type() -> None:
    assert thresholds_for("rt_camera").frozen_diff < thresholds_for("atcs_camera").frozen_diff
    assert thresholds_for("unknown") == QualityThresholds()


@settings(max_examples=30, deadline=None)
@given(
    width=st.integers(1, 700),
    height=st.integers(1, 50),
    grey=st.integers(0, 255),
)
def test_frame_stats_of_any_frame_are_finite(width: int, height: int, grey: int) -> None:
    import numpy as np

    frame = np.full((height, width, 3), grey, np.uint8)
    small = small_grey(frame)
    stats = frame_stats(small, small, BackgroundModel())
    assert stats.luma_mean == pytest.approx(grey, abs=1)
    assert stats.diff == 0
    assert stats.blur_var >= 0


@given(user=st.text(min_size=1, max_size=10).filter(lambda s: "@" not in s and "/" not in s))
def test_redact_never_shows_credentials(user: str) -> None:
    uri = f"rtsp://{user}:secret@10.0.0.1/stream"
    assert "secret" not in redact(uri)
