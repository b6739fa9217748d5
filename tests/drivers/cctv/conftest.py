"""Fixtures for the cctv tests: the ONVIF SOAP stand-in, a real MJPEG server, a real RTSP server.

Cameras cannot be reached from here, so ONVIF is answered by a stand-in (named as such);
video is generated in the test and served by real servers on free loopback ports: an
aiohttp MJPEG server in-process and GStreamer's RTSP server as its own process.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from drivers.cctv import generated_scenes
from drivers.cctv.mjpeg_server import MjpegServer
from drivers.cctv.onvif_stand_in import OnvifStandIn
from tests.conftest import free_port

GST_SERVER = Path(__file__).resolve().parents[3] / "drivers" / "cctv" / "gst_rtsp_server.py"
StandInFactory = Callable[..., Coroutine[Any, Any, OnvifStandIn]]


@pytest_asyncio.fixture
async def onvif_stand_in() -> AsyncIterator[StandInFactory]:
    """Factory of started ONVIF stand-ins (``cameras`` ports each); all stopped afterwards."""
    started: list[OnvifStandIn] = []

    async def factory(cameras: int = 1) -> OnvifStandIn:
        stand_in = OnvifStandIn(ports=[free_port() for _ in range(cameras)])
        await stand_in.start()
        started.append(stand_in)
        return stand_in

    yield factory
    for stand_in in started:
        await stand_in.stop()


@pytest_asyncio.fixture
async def mjpeg_server() -> AsyncIterator[MjpegServer]:
    """A started MJPEG server at 10 fps; add clips with ``add_clip``."""
    server = MjpegServer(port=free_port(), fps=10.0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def rtsp_server(tmp_path: Path) -> Iterator[Callable[[dict[str, list[Any]]], str]]:
    """Start GStreamer's RTSP server (system python3) on clips; returns the base URL."""
    procs: list[subprocess.Popen[str]] = []

    def start(clips: dict[str, list[Any]]) -> str:
        port = free_port()
        args = []
        for name, frames in clips.items():
            path = generated_scenes.write_clip(frames, tmp_path / f"{name}.avi")
            args.append(f"{name}={path}")
        proc = subprocess.Popen(
            ["/usr/bin/python3", str(GST_SERVER), str(port), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "ready", f"RTSP server did not start: {line!r}"
        return f"rtsp://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
