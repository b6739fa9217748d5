"""A real HTTP MJPEG server (multipart/x-mixed-replace), as many IP cameras serve video.

Used by the tests, the benchmark and the demo to serve generated scenes: ``/video.mjpg``
sends the clip's JPEG frames at its frame rate, looping; ``/snapshot.jpg`` one frame.
"""

from __future__ import annotations

import asyncio
import itertools

import cv2
from aiohttp import web

from drivers.cctv.generated_scenes import Frame

BOUNDARY = "kotahubframe"


def encode_jpeg(frames: list[Frame], quality: int = 90) -> list[bytes]:
    """JPEG bytes of each frame."""
    out = []
    for frame in frames:
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("a frame could not be encoded as JPEG")
        out.append(data.tobytes())
    return out


class MjpegServer:
    """Serves one looping clip per path: ``clips[name]`` at ``/{name}.mjpg``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int, fps: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.fps = fps
        self.clips: dict[str, list[bytes]] = {}
        # name -> another clip shown in its place (the demo's covered lens), frame by frame.
        self.substitutes: dict[str, str] = {}
        self.clients = 0
        self._runner: web.AppRunner | None = None

    def add_clip(self, name: str, frames: list[Frame]) -> str:
        """Serve ``frames`` at ``/{name}.mjpg``; returns its URL."""
        self.clips[name] = encode_jpeg(frames)
        return self.url(name)

    def url(self, name: str) -> str:
        """The clip's stream URL."""
        return f"http://{self.host}:{self.port}/{name}.mjpg"

    async def start(self) -> None:
        """Listen on host:port."""
        app = web.Application()
        app.router.add_get("/{name}.mjpg", self._stream)
        app.router.add_get("/{name}.jpg", self._snapshot)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        """Stop listening and end every stream."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _snapshot(self, request: web.Request) -> web.Response:
        clip = self.clips.get(request.match_info["name"])
        if not clip:
            raise web.HTTPNotFound()
        return web.Response(body=clip[0], content_type="image/jpeg")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not self.clips.get(name):
            raise web.HTTPNotFound()
        response = web.StreamResponse(
            headers={"Content-Type": f"multipart/x-mixed-replace;boundary={BOUNDARY}"}
        )
        await response.prepare(request)
        self.clients += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            for index in itertools.count():
                # Paced on a grid from the start, so the measured fps is the clip's.
                await asyncio.sleep(max(0.0, started + index / self.fps - loop.time()))
                clip = self.clips.get(self.substitutes.get(name, name)) or self.clips[name]
                jpeg = clip[index % len(clip)]
                await response.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg
                    + b"\r\n"
                )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients -= 1
        return response
