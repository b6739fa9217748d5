"""CCTV benchmark: frames/s per core of each stage, the ffmpeg decode floor, ONVIF checks/min.

One run measures, on the same generated H.264 clip (ffmpeg/libx264, the substream size the
sampling plan decodes):

- decode only: OpenCV (FFmpeg backend, one thread), frames per CPU-second;
- the floor: ``ffmpeg -threads 1 -i clip -f null -`` on the same file, frames per CPU-second;
- quality checks, the HOG people detector, the parking tracker: frames per CPU-second each;
- ONVIF health checks per minute by one agent process against a fleet of ONVIF stand-ins
  served by another process (so the stand-ins' CPU is not the agent's);
- the city-scale agent: resident memory and CPU of one agent process holding N camera
  pollers (the driver's ``CctvCamera``, ONVIF session and pull point each) at two sizes,
  extrapolated linearly to 10,700 (``agent_rss_mb_for_10700``, an extrapolation).

``cores_for_10700`` applies the sampling plan of docs/drivers/cctv.md to these figures.
The last line is one JSON object. ``--quick`` runs at a tiny size (the smoke test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from drivers.cctv import FAMILY, generated_scenes
from drivers.cctv.analytics import ParkingDetector, PeopleDetector, scaled
from drivers.cctv.camera_driver import CctvCamera, create_camera
from drivers.cctv.onvif_health import OnvifHealth, OnvifTarget
from drivers.cctv.onvif_stand_in import OnvifStandIn
from drivers.cctv.stream_quality import BackgroundModel, frame_stats, small_grey
from drivers.framework import DeviceSpec, DriverError

AGENT_SIZES = (500, 2000)  # pollers per agent measured; 10,700 is extrapolated from them
POLL_CONCURRENCY = 50  # the agent spreads its polls over the interval: never all at once


@dataclass(frozen=True, slots=True)
class SamplingPlan:
    """The city's sampling plan (docs/drivers/cctv.md): what one city must decode and check."""

    cameras: int = 10_700
    health_every_s: float = 300.0  # every camera over ONVIF within 5 minutes
    sample_s: float = 4.0  # seconds of stream per quality sample
    sample_every_s: float = 3600.0  # each stream once an hour
    stream_fps: float = 10.0  # the substream that is sampled and analysed
    analytics_cameras: int = 100  # markets, crowd points, no-parking streets: watched all the time
    people_per_s: float = 1.0  # HOG frames per second of an analytics stream

    @property
    def onvif_checks_per_min(self) -> float:
        """Checks a minute the whole city needs."""
        return self.cameras * 60 / self.health_every_s

    @property
    def sampled_fps(self) -> float:
        """Frames per second decoded (and quality-checked) for the rotation samples."""
        return self.cameras * self.sample_s / self.sample_every_s * self.stream_fps

    def cores(
        self,
        *,
        decode_fps: float,
        quality_fps: float,
        people_fps: float,
        parking_fps: float,
        onvif_checks_per_core_min: float,
    ) -> float:
        """Cores for the city from per-core stage rates (frames per CPU-second)."""
        sampled = self.sampled_fps * (1 / decode_fps + 1 / quality_fps)
        watched_fps = self.analytics_cameras * self.stream_fps
        watched = watched_fps * (1 / decode_fps + 1 / quality_fps + 1 / parking_fps)
        watched += self.analytics_cameras * self.people_per_s / people_fps
        onvif = self.onvif_checks_per_min / onvif_checks_per_core_min
        return sampled + watched + onvif


def cpu_s() -> float:
    """CPU seconds of this process (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_clip(folder: Path, seconds: float, width: int, height: int, fps: float) -> Path:
    """A generated street scene with walkers, as H.264 (libx264, 2 s GOP) in MP4."""
    frames = generated_scenes.walking_people(int(seconds * fps), 3, fps=fps)
    if (width, height) != (generated_scenes.WIDTH, generated_scenes.HEIGHT):
        frames = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]
    source = generated_scenes.write_clip(frames, folder / "source.avi", fps)
    clip = folder / "clip.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(source),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            str(int(2 * fps)),
            "-pix_fmt",
            "yuv420p",
            str(clip),
        ],
        check=True,
    )
    return clip


def decode_opencv(clip: Path, loops: int = 10) -> tuple[float, list[Any]]:
    """Frames per CPU-second decoding with OpenCV (one thread, as the driver opens streams).

    Opening is included (a sample opens its stream each time), as ffmpeg's probe is not:
    this errs against OpenCV. Returns the rate and one pass's frames.
    """
    frames: list[Any] = []
    decoded = 0
    started = cpu_s()
    for loop in range(loops):
        capture = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            decoded += 1
            if loop == 0:
                frames.append(frame)
        capture.release()
    return decoded / (cpu_s() - started), frames


def _ffmpeg_cpu_s(clip: Path, loops: int) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-threads",
            "1",
            "-stream_loop",
            str(loops),
            "-i",
            str(clip),
            "-f",
            "null",
            "-",
        ],
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def decode_ffmpeg(clip: Path, frames: int, loops: int = 10) -> float:
    """Frames per CPU-second of ``ffmpeg -threads 1 -f null``, its start-up cost taken out.

    The clip decoded once and ``loops + 1`` times: the difference is ``loops`` clips of
    pure decoding, without the process start and the probe.
    """
    once = _ffmpeg_cpu_s(clip, 0)
    many = _ffmpeg_cpu_s(clip, loops)
    return frames * loops / max(many - once, 1e-6)


def stage_fps(frames: list[Any], stage: Any, repeat: int = 1) -> float:
    """Frames per CPU-second of ``stage(frame, index)`` over the frames."""
    started = cpu_s()
    count = 0
    for _ in range(repeat):
        for index, frame in enumerate(frames):
            stage(frame, index)
            count += 1
    return count / (cpu_s() - started)


def measure_stages(frames: list[Any], fps: float) -> dict[str, float]:
    """Quality, people and parking rates on decoded frames."""
    background = BackgroundModel()
    previous: list[Any] = [None]

    def quality(frame: Any, _index: int) -> None:
        grey = small_grey(frame)
        frame_stats(grey, previous[0], background)
        previous[0] = grey

    detector = PeopleDetector()
    people_frames = frames[:: max(1, int(fps))] or frames[:1]
    parking = ParkingDetector(
        zone=((0.5, 0.55), (0.95, 0.55), (0.95, 0.95), (0.5, 0.95)), dwell_limit_s=60
    )
    return {
        "quality": stage_fps(frames, quality),
        "people": stage_fps(people_frames, lambda f, _i: detector.detect(scaled(f))),
        "parking": stage_fps(frames, lambda f, i: parking.update(f, i / fps)),
    }


def serve_stand_ins(ports: list[int]) -> None:
    """Child process: serve an ONVIF stand-in fleet until stdin closes."""

    async def main() -> None:
        stand_in = OnvifStandIn(ports=ports)
        for camera in stand_in.cameras:
            camera.password = "bench"
        await stand_in.start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await stand_in.stop()

    asyncio.run(main())


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on (bound and released, like tests.conftest.free_port)."""
    import socket

    socks, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    return ports


def start_stand_ins(cameras: int) -> tuple[subprocess.Popen[str], list[int]]:
    """The ONVIF stand-in fleet in a process of its own (``wait_ready`` before use)."""
    ports = free_ports(cameras)
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.cctv", "--serve-stand-ins", ",".join(map(str, ports))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return server, ports


def wait_ready(server: subprocess.Popen[str]) -> None:
    """Block until the stand-in fleet listens."""
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        stop_stand_ins(server)
        raise RuntimeError("the ONVIF stand-in fleet did not start")


def stop_stand_ins(server: subprocess.Popen[str]) -> None:
    """Close its stdin (it stops), or kill it after 10 s."""
    if server.stdin is not None:
        server.stdin.close()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def onvif_rate(ports: list[int], seconds: float) -> tuple[float, float, int]:
    """Checks/min (wall), checks per CPU-minute of this process, and failures."""
    checkers = [
        OnvifHealth(
            OnvifTarget(
                device_id=f"bench-{p}",
                host="127.0.0.1",
                port=p,
                username="kotahub",
                password="bench",
            )
        )
        for p in ports
    ]
    # First contact (services, media, pull point: WSDL parsing, CPU-heavy) is not the steady
    # state: do it first, a few at a time, as the agent's concurrency limit would. A camera
    # that does not answer in time is a failure counted, never the end of the benchmark.
    gate = asyncio.Semaphore(POLL_CONCURRENCY // 5)
    warm_failures = 0

    async def first_contact(checker: OnvifHealth) -> None:
        nonlocal warm_failures
        async with gate:
            try:
                await checker.check()
            except DriverError:
                warm_failures += 1

    await asyncio.gather(*(first_contact(c) for c in checkers))
    done, failures = 0, warm_failures
    started, cpu_started = time.monotonic(), cpu_s()

    async def loop(checker: OnvifHealth) -> None:
        nonlocal done, failures
        while time.monotonic() - started < seconds:
            try:
                result = await checker.check()
            except DriverError:
                failures += 1
                continue
            if result.metrics.get("onvif_status") == "ok":
                done += 1
            else:
                failures += 1

    await asyncio.gather(*(loop(c) for c in checkers))
    wall, cpu = time.monotonic() - started, cpu_s() - cpu_started
    for checker in checkers:
        await checker.close()
    return done * 60 / wall, done * 60 / cpu, failures


def rss_mb() -> float:
    """This process's resident set now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def hold_sessions(ports: list[int], rounds: int) -> dict[str, Any]:
    """Child process: one agent's camera pollers against the fleet; its RSS and CPU per poll.

    Health and events only (``stream`` off): a rotation sample is transient, a session and
    its pull point are what an agent holds for every camera all the time.
    """
    import hub.agent.agent  # noqa: F401  (the agent's own imports are part of its memory)

    base = rss_mb()
    cameras: list[CctvCamera] = []
    for port in ports:
        spec = DeviceSpec(
            device_id=f"bench-cam-{port}",
            device_type="rt_camera",
            protocol="onvif",
            address=f"127.0.0.1:{port}",
            driver_config={"password": "bench", "stream": False},
        )
        camera = create_camera(spec, FAMILY.validate(spec))
        assert isinstance(camera, CctvCamera)
        cameras.append(camera)
    gate = asyncio.Semaphore(POLL_CONCURRENCY)
    failures = 0
    reasons: dict[str, int] = {}

    async def poll(camera: CctvCamera) -> None:
        nonlocal failures
        async with gate:
            try:
                readings = await camera.poll()
            except DriverError as err:
                failures += 1
                reasons.setdefault(str(err.cause)[:80], 0)
                reasons[str(err.cause)[:80]] += 1
                return
            status = str(readings[0].metrics.get("onvif_status"))
            if status != "ok":
                failures += 1
                reasons[status] = reasons.get(status, 0) + 1

    # First contact (services, media, pull point) is not the steady state: not counted.
    await asyncio.gather(*(poll(c) for c in cameras))
    cpu_started = cpu_s()
    for _ in range(rounds):
        await asyncio.gather(*(poll(c) for c in cameras))
    cpu = cpu_s() - cpu_started
    held = rss_mb()
    fds = len(os.listdir("/proc/self/fd"))
    for camera in cameras:
        await camera.close()
    return {
        "sessions": len(ports),
        "base_rss_mb": round(base, 1),
        "rss_mb": round(held, 1),
        "cpu_s_per_poll": cpu / (rounds * len(ports)),
        "failures": failures,
        "fds": fds,
        "failure_reasons": reasons,
    }


def agent_footprint(sizes: tuple[int, ...], rounds: int) -> list[dict[str, Any]]:
    """Per size: a stand-in fleet of that many cameras and one agent process holding them."""
    found = []
    for size in sizes:
        server, ports = start_stand_ins(size)
        try:
            wait_ready(server)
            child = subprocess.run(
                [
                    *(sys.executable, "-m", "bench.cctv", "--rounds", str(rounds)),
                    *("--agent-sessions", ",".join(map(str, ports))),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=900,
            )
        finally:
            stop_stand_ins(server)
        found.append(json.loads(child.stdout.strip().splitlines()[-1]))
    return found


def extrapolate_rss(found: list[dict[str, Any]], cameras: int) -> tuple[float, float]:
    """MB per held poller (the slope from the smallest to the largest size), RSS at ``cameras``."""
    low, high = found[0], found[-1]
    per = (high["rss_mb"] - low["rss_mb"]) / max(high["sessions"] - low["sessions"], 1)
    return per, high["rss_mb"] + per * (cameras - high["sessions"])


def main() -> None:
    """Run every measurement and print the figures, then the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny size, for the smoke test")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument(
        "--agent-sizes",
        default=",".join(map(str, AGENT_SIZES)),
        help="pollers held by one agent, smallest and largest (default %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="steady polls per poller")
    parser.add_argument("--serve-stand-ins", help=argparse.SUPPRESS)
    parser.add_argument("--agent-sessions", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stand_ins:
        serve_stand_ins([int(p) for p in args.serve_stand_ins.split(",")])
        return
    if args.agent_sessions:
        ports = [int(p) for p in args.agent_sessions.split(",")]
        print(json.dumps(asyncio.run(hold_sessions(ports, args.rounds))))
        return
    plan = SamplingPlan()
    if args.quick:
        seconds, width, height, cameras, onvif_s = 1.0, 320, 180, 4, 0.5
    else:
        seconds, width, height, cameras, onvif_s = 20.0, 640, 360, 100, 20.0
    sizes = (5, 15) if args.quick else tuple(int(n) for n in args.agent_sizes.split(","))
    rounds = 1 if args.quick else args.rounds
    say = (lambda *_a: None) if args.json_only else print
    # Started first so that its start-up overlaps the video stages (CPU is counted per
    # process, so it does not skew them).
    server, ports = start_stand_ins(cameras)
    with tempfile.TemporaryDirectory(prefix="kotahub-bench-cctv-") as tmp:
        clip = make_clip(Path(tmp), seconds, width, height, plan.stream_fps)
        decode, frames = decode_opencv(clip)
        floor = decode_ffmpeg(clip, len(frames))
    stages = measure_stages(frames, plan.stream_fps)
    per_frame = 1 / stages["quality"] + 1 / stages["parking"]
    per_frame += plan.people_per_s / plan.stream_fps / stages["people"]
    analytics = 1 / per_frame
    try:
        wait_ready(server)
        checks_min, checks_core_min, failures = asyncio.run(onvif_rate(ports, onvif_s))
    finally:
        stop_stand_ins(server)
    found = agent_footprint(sizes, rounds)
    per_poller_mb, rss_city = extrapolate_rss(found, plan.cameras)
    # Each camera polled once per health interval: CPU share of one agent at city size.
    agent_cores = plan.cameras / plan.health_every_s * found[-1]["cpu_s_per_poll"]
    cores = plan.cores(
        decode_fps=decode,
        quality_fps=stages["quality"],
        people_fps=stages["people"],
        parking_fps=stages["parking"],
        onvif_checks_per_core_min=checks_core_min,
    )
    say(f"clip: {len(frames)} frames {width}x{height} H.264 at {plan.stream_fps:g} fps")
    say(f"decode (OpenCV, 1 thread): {decode:9.1f} frames/CPU-s")
    say(
        f"decode floor (ffmpeg -f null, 1 thread): {floor:9.1f} frames/CPU-s"
        f"  -> ratio {decode / floor:.2f} (target >= 0.8)"
    )
    for name, rate in stages.items():
        say(f"{name:>8}: {rate:9.1f} frames/CPU-s")
    say(
        f"analytics (quality + parking every frame, HOG {plan.people_per_s:g}/s): "
        f"{analytics:.1f} frames/CPU-s"
    )
    say(
        f"ONVIF: {checks_min:.0f} checks/min against {cameras} stand-ins "
        f"({checks_core_min:.0f} per CPU-minute, {failures} failed; target >= 2140/min)"
    )
    for row in found:
        say(
            f"agent holding {row['sessions']:.0f} pollers: RSS {row['rss_mb']:.1f} MB "
            f"(imports {row['base_rss_mb']:.1f} MB), {row['cpu_s_per_poll'] * 1000:.2f} "
            f"CPU-ms/poll, {row['fds']:.0f} fds, {row['failures']:.0f} failed"
        )
    say(
        f"agent at {plan.cameras} pollers (extrapolated, {per_poller_mb * 1024:.0f} kB each): "
        f"RSS {rss_city:.0f} MB, {agent_cores:.2f} cores polling every "
        f"{plan.health_every_s:g} s"
    )
    say(
        f"plan: {plan.cameras} cameras, {plan.sampled_fps:.0f} sampled frames/s, "
        f"{plan.analytics_cameras} analytics streams -> {cores:.1f} cores"
    )
    print(
        json.dumps(
            {
                "decode_fps_per_core": round(decode, 1),
                "ffmpeg_decode_fps_per_core": round(floor, 1),
                "analytics_fps_per_core": round(analytics, 1),
                "onvif_checks_per_min": round(checks_min),
                "cores_for_10700": round(cores, 1),
                "agent_rss_mb_for_10700": round(rss_city),
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    main()
