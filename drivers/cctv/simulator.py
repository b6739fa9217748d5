"""The cctv family's demo simulator: ONVIF stand-ins for every camera, a few streams for real.

Every camera gets a port of its own on one ONVIF SOAP stand-in server (ONVIF fixes the
device service at ``http://host:port/onvif/device_service``), so the agent's real cctv
driver checks each camera's health, clock and events as it would in the field. The first
``REAL_STREAMS`` cameras also get a real video stream (generated scenes on an HTTP MJPEG
server: walking people, traffic) that the driver decodes and analyses; the rest are
health-only (``driver_config.stream = false``), so a city-scale demo does not need
10,700 decoders. NVRs get an ISAPI stand-in each.

Produced points: each camera's and NVR's calls are grouped into the driver's polls
(``drivers.simulation.PollCounter`` over the device's ``timeout_s``); a poll whose last call
was answered is one point, one that found the device dead is a failed poll.

Faults: a device the fault board kills drops every connection (an outage). Per-device
``params``: ``tamper_every_h`` (a tamper alarm every so many simulated hours, lasting
``tamper_for_min`` simulated minutes; a real stream shows a covered lens meanwhile) and
``clock_offset_s`` (a camera whose clock drifts).

A port another program holds when the simulator starts does not stop the family: that
device is skipped (one warning names the ports and devices) and every other one is served;
with the video server's port taken, the demo runs without real streams.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections.abc import Sequence
from dataclasses import replace

from drivers.cctv import generated_scenes
from drivers.cctv.device_types import NVR_TYPES
from drivers.cctv.isapi_stand_in import IsapiStandIn
from drivers.cctv.mjpeg_server import MjpegServer
from drivers.cctv.onvif_stand_in import TAMPER_TOPIC, OnvifStandIn, StandInCamera
from drivers.patient_timeout import longest_s
from drivers.simulation import PollCounter, SimulatedDevice, SimulatorContext, SimulatorStats

log = logging.getLogger(__name__)
REAL_STREAMS = 3
TICK_S = 1.0
FLUSH_TICKS = 5  # close the finished polls every 5 ticks
CAMERA_TIMEOUT_S = 20.0  # CameraConfig's timeout_s, when the config sets none
STAND_IN_PASSWORD = "demo-stand-in"  # noqa: S105 (the demo stand-ins' own password)
CLIPS = ("people", "traffic", "crowd")
KERB = [[0.5, 0.6], [1, 0.6], [1, 1], [0.5, 1]]  # the demo's no-parking zone


def _port(device: SimulatedDevice) -> int:
    return int((device.address or ":0").rpartition(":")[2])


class CctvSimulator:
    """Serves every cctv device of the fleet until cancelled."""

    family = "cctv"

    def __init__(self) -> None:
        self.stats = SimulatorStats()
        self.onvif: OnvifStandIn | None = None
        self.isapi: dict[str, IsapiStandIn] = {}
        self.video: MjpegServer | None = None
        self.tampered: set[str] = set()
        # Devices whose port another program held when ``run`` started: not served.
        self.skipped: set[str] = set()

    def assign_addresses(
        self, devices: Sequence[SimulatedDevice], first_port: int, host: str = "127.0.0.1"
    ) -> dict[str, SimulatedDevice]:
        """A port per device from ``first_port``; the video server takes the next one."""
        ordered = sorted(devices, key=lambda d: d.device_id)
        video_port = first_port + len(ordered)
        out: dict[str, SimulatedDevice] = {}
        cameras = 0
        for index, device in enumerate(ordered):
            config = dict(device.driver_config)
            config.setdefault("password", STAND_IN_PASSWORD)
            if device.device_type in NVR_TYPES:
                config.setdefault("timeout_s", 60)
            else:
                real = cameras < REAL_STREAMS
                config.setdefault("stream", real)
                if real:
                    clip = CLIPS[cameras % len(CLIPS)]
                    config.setdefault("stream_uri", f"http://{host}:{video_port}/{clip}.mjpg")
                    config.setdefault("sample_every_s", 300)
                    config.setdefault(
                        "analytics",
                        {
                            "people": True,
                            "no_parking_zone": [[0.5, 0.6], [1, 0.6], [1, 1], [0.5, 1]],
                        },
                    )
                cameras += 1
            out[device.device_id] = replace(
                device, address=f"{host}:{first_port + index}", driver_config=config
            )
        return out

    def ports_used(self, devices: Sequence[SimulatedDevice]) -> set[int]:
        """Each device's port, and the video server's after them."""
        ports = {_port(d) for d in devices if d.address}
        return ports | {max(ports) + 1} if ports else ports

    async def run(self, devices: Sequence[SimulatedDevice], ctx: SimulatorContext) -> None:
        """Start the stand-ins and the video server; apply faults every second."""
        served = [d for d in devices if d.address]
        cameras = [d for d in served if d.device_type not in NVR_TYPES]
        nvrs = [d for d in served if d.device_type in NVR_TYPES]
        _raise_open_files(len(served) + 256)
        host = (served[0].address or "127.0.0.1:0").rpartition(":")[0] if served else "127.0.0.1"
        try:
            self.onvif = OnvifStandIn(host=host, ports=[_port(d) for d in cameras])
            for device, camera in zip(cameras, self.onvif.cameras, strict=True):
                camera.password = str(device.driver_config.get("password", STAND_IN_PASSWORD))
                camera.username = str(device.driver_config.get("username", "kotahub"))
                camera.clock_offset_s = float(device.params.get("clock_offset_s", 0.0))
                camera.stream_uri = str(device.driver_config.get("stream_uri", camera.stream_uri))
                camera.polls = self._poll_counter(device)
            taken = set(await self.onvif.start(skip_taken=True))
            for device in nvrs:
                stand_in = IsapiStandIn(host=host, port=_port(device))
                stand_in.nvr.password = str(device.driver_config.get("password", STAND_IN_PASSWORD))
                stand_in.nvr.polls = self._poll_counter(device)
                if await _listen(stand_in):
                    self.isapi[device.device_id] = stand_in
                else:
                    taken.add(stand_in.port)
            if served:
                self.video = MjpegServer(host=host, port=max(_port(d) for d in served) + 1)
                self.video.add_clip("people", generated_scenes.walking_people(20, 3))
                self.video.add_clip("traffic", generated_scenes.moving_shapes(20))
                self.video.add_clip("crowd", generated_scenes.walking_people(20, 5))
                self.video.add_clip("covered", generated_scenes.covered(5))
                if not await _listen(self.video):
                    taken.add(self.video.port)
                    self.video = None
            self.skipped = {d.device_id for d in served if _port(d) in taken}
            if taken:
                # Once, not per tick: the demo goes on with every device it could serve.
                log.warning(
                    "cctv: port(s) %s already in use: not serving %s%s",
                    ", ".join(map(str, sorted(taken))),
                    ", ".join(sorted(self.skipped)) or "no device",
                    "; real streams off (video server port taken)" if self.video is None else "",
                )
            cameras_served = [
                (d, c)
                for d, c in zip(cameras, self.onvif.cameras, strict=True)
                if d.device_id not in self.skipped
            ]
            log.info(
                "cctv: %d ONVIF stand-ins, %d NVR stand-ins", len(cameras_served), len(self.isapi)
            )
            # A city's 10,700 cameras each second add up: the faults are applied when the
            # board changes, the tamper schedules only for the cameras that have one, the
            # polls closed every few seconds (they are counted when over, not at once).
            tampering = [(d, c) for d, c in cameras_served if d.params.get("tamper_every_h")]
            revision = -1
            ticks = 0
            while True:
                if ctx.faults.revision != revision:
                    revision = ctx.faults.revision
                    for device, camera in cameras_served:
                        camera.offline = ctx.faults.is_dead(device.device_id)
                    for device_id, stand_in in self.isapi.items():
                        stand_in.nvr.offline = ctx.faults.is_dead(device_id)
                for device, camera in tampering:
                    try:
                        self._tamper(device, camera, ctx)
                    except Exception:  # one device's failure never stops the others
                        self.stats.failed(device.device_id)
                        log.exception("cctv simulator: %s", device.device_id)
                ticks += 1
                if ticks % FLUSH_TICKS == 0:
                    self.flush_polls(force=False)
                await asyncio.sleep(TICK_S)
        finally:
            self.flush_polls()
            if self.video is not None:
                await self.video.stop()
            for stand_in in self.isapi.values():
                await stand_in.stop()
            if self.onvif is not None:
                await self.onvif.stop()

    def _poll_counter(self, device: SimulatedDevice) -> PollCounter:
        # The agent's poll lasts up to its timeout, stretched by its own lateness.
        span_s = longest_s(float(device.driver_config.get("timeout_s", CAMERA_TIMEOUT_S)))
        return PollCounter(self.stats, device.device_id, span_s)

    def flush_polls(self, *, force: bool = True) -> None:
        """Count the polls that are over (``force``: every open one, the end of a run)."""
        counters = [c.polls for c in self.onvif.cameras] if self.onvif is not None else []
        counters += [s.nvr.polls for s in self.isapi.values()]
        for counter in counters:
            if counter is not None:
                counter.flush(force=force)

    def _tamper(
        self, device: SimulatedDevice, camera: StandInCamera, ctx: SimulatorContext
    ) -> None:
        every_h = float(device.params.get("tamper_every_h", 0) or 0)
        if every_h <= 0:
            return
        minutes = float(device.params.get("tamper_for_min", 10))
        hours = ctx.clock.elapsed_s() / 3600
        tampered = (hours % every_h) * 60 < minutes and hours >= every_h
        if tampered != (device.device_id in self.tampered):
            if tampered:
                self.tampered.add(device.device_id)
            else:
                self.tampered.discard(device.device_id)
            camera.raise_event(TAMPER_TOPIC, tampered)
            uri = str(device.driver_config.get("stream_uri", ""))
            if uri and self.video is not None:
                clip = uri.rpartition("/")[2].removesuffix(".mjpg")
                if tampered:
                    self.video.substitutes[clip] = "covered"
                else:
                    self.video.substitutes.pop(clip, None)


async def _listen(server: IsapiStandIn | MjpegServer) -> bool:
    """Start ``server``; False (and nothing left half-open) when its port is in use."""
    try:
        await server.start()
    except OSError as err:
        await server.stop()
        if err.errno != errno.EADDRINUSE:
            raise
        return False
    return True


def _raise_open_files(needed: int) -> None:
    """A city's stand-ins listen on thousands of ports: lift the soft open-file limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed * 2, soft)), hard))


SIMULATOR = CctvSimulator()
