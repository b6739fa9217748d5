"""Stream quality from a few seconds of RTSP or HTTP video, with OpenCV.

Per sample: time to first frame, measured fps, frozen (mean abs grey difference between
frames), black (mean and spread of grey), blur (variance of the Laplacian) and covered
lens or moved camera (MOG2 foreground share). The background model is kept per camera
between samples, so a lens covered since the last sample still shows as foreground.
Frames are analysed at a small size (quality needs no detail) and never leave the agent.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from drivers.cctv.device_types import QualityThresholds
from drivers.framework import MetricValue

Frame = npt.NDArray[Any]  # OpenCV images (uint8 BGR or grey)
QUALITY_WIDTH = 320
# FFmpeg's default probing buffers ~3 s of an RTSP stream before the first frame, which
# delays the first frame and bursts the backlog (the measured fps would be wrong); RTSP
# over TCP survives the lossy links of street cabinets. An operator's own value wins.
os.environ.setdefault(
    "OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp|analyzeduration;500000|probesize;100000"
)
# One box cannot decode every stream at once: at most this many samples decode together.
_DECODE_SLOTS: dict[str, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def decode_slots(name: str, size: int) -> threading.BoundedSemaphore:
    """The process-wide decode limiter ``name`` (one per agent), created with ``size``."""
    with _SLOTS_LOCK:
        return _DECODE_SLOTS.setdefault(name, threading.BoundedSemaphore(size))


class StreamError(Exception):
    """A stream could not be opened or gave no frames; the message says which."""

    def __init__(self, status: str, detail: str) -> None:
        self.status = status
        super().__init__(detail)


@dataclass(slots=True)
class BackgroundModel:
    """What a camera keeps between samples: its MOG2 model, trained on earlier samples."""

    subtractor: cv2.BackgroundSubtractorMOG2 = field(
        default_factory=lambda: cv2.createBackgroundSubtractorMOG2(
            history=200, varThreshold=25, detectShadows=False
        )
    )
    trained_frames: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameStats:
    """Quality measures of one frame (grey, at QUALITY_WIDTH)."""

    luma_mean: float
    luma_std: float
    blur_var: float
    diff: float | None
    foreground: float | None


@dataclass(slots=True)
class StreamSample:
    """What one sample measured."""

    first_frame_s: float
    frames: int
    duration_s: float
    stats: list[FrameStats]

    @property
    def fps(self) -> float:
        """Frames per second between the first and the last frame."""
        return (self.frames - 1) / self.duration_s if self.duration_s > 0 else 0.0

    def quality(
        self, thresholds: QualityThresholds, fps_nominal: float | None
    ) -> dict[str, MetricValue]:
        """The quality metrics of this sample under a device type's thresholds."""
        diffs = [s.diff for s in self.stats if s.diff is not None]
        foreground = [s.foreground for s in self.stats if s.foreground is not None]
        luma = statistics.fmean(s.luma_mean for s in self.stats)
        spread = statistics.fmean(s.luma_std for s in self.stats)
        blur = statistics.median(s.blur_var for s in self.stats)
        metrics: dict[str, MetricValue] = {
            "stream_ok": True,
            "first_frame_s": round(self.first_frame_s, 3),
            "fps_measured": round(self.fps, 2),
            "luma_mean": round(luma, 1),
            "blur_var": round(blur, 1),
            "black": luma < thresholds.black_mean and spread < thresholds.black_std,
            # A black or flat picture has no edges: call it black, not blurred.
            "frozen": bool(diffs) and max(diffs) < thresholds.frozen_diff,
        }
        metrics["blurred"] = not metrics["black"] and blur < thresholds.blur_var
        if foreground:
            ratio = statistics.median(foreground)
            metrics["foreground_ratio"] = round(ratio, 3)
            metrics["scene_changed"] = ratio > thresholds.scene_change_ratio
        if fps_nominal:
            metrics["fps_ratio"] = round(self.fps / fps_nominal, 3)
        problems = [
            name
            for name in ("black", "frozen", "scene_changed", "blurred")
            if metrics.get(name) is True
        ]
        if fps_nominal and self.fps / fps_nominal < thresholds.fps_ratio_min:
            problems.append("low_fps")
        metrics["stream_status"] = problems[0] if problems else "ok"
        return metrics


def frame_stats(
    grey: Frame, previous: Frame | None, background: BackgroundModel | None
) -> FrameStats:
    """One frame's quality measures; ``background`` learns from it."""
    luma_mean, luma_std = cv2.meanStdDev(grey)
    blur = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    diff = None if previous is None else float(cv2.absdiff(grey, previous).mean())
    foreground = None
    if background is not None:
        # Learn slowly: a change that lasts the whole sample must stay foreground.
        mask = background.subtractor.apply(grey, learningRate=0.005)
        if background.trained_frames >= 10:
            foreground = float(np.count_nonzero(mask)) / mask.size
        background.trained_frames += 1
    return FrameStats(
        luma_mean=float(luma_mean[0][0]),
        luma_std=float(luma_std[0][0]),
        blur_var=blur,
        diff=diff,
        foreground=foreground,
    )


def small_grey(frame: Frame) -> Frame:
    """The frame in grey at QUALITY_WIDTH, for the quality measures."""
    height, width = frame.shape[:2]
    if width > QUALITY_WIDTH:
        frame = cv2.resize(
            frame,
            (QUALITY_WIDTH, max(1, height * QUALITY_WIDTH // width)),
            interpolation=cv2.INTER_AREA,
        )
    if frame.ndim == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return frame


def open_capture(uri: str, *, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture:
    """A VideoCapture on ``uri`` with FFmpeg's open and read timeouts set."""
    capture = cv2.VideoCapture(
        uri,
        cv2.CAP_FFMPEG,
        [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(read_timeout_s * 1000),
            # One decode thread per stream: cores are shared out by the decode slots.
            cv2.CAP_PROP_N_THREADS,
            1,
        ],
    )
    return capture


def sample_stream(
    uri: str,
    *,
    sample_s: float,
    open_timeout_s: float = 5.0,
    read_timeout_s: float = 5.0,
    background: BackgroundModel | None = None,
    on_frame: Callable[[Frame, float], None] | None = None,
    max_frames: int = 10_000,
) -> StreamSample:
    """Decode ``uri`` for ``sample_s`` seconds (blocking: run it in a thread).

    ``on_frame(frame, t)`` gets every decoded frame with its time since the first frame,
    for the analytics. Raises StreamError when the stream opens to nothing.
    """
    opened_at = time.monotonic()
    capture = open_capture(uri, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s)
    try:
        if not capture.isOpened():
            raise StreamError("open_failed", f"cannot open {redact(uri)} within the timeout")
        stats: list[FrameStats] = []
        previous: Frame | None = None
        first_at = last_at = 0.0
        while len(stats) < max_frames:
            ok, frame = capture.read()
            now = time.monotonic()
            if not ok or frame is None:
                break
            if not stats:
                first_at = now
            last_at = now
            grey = small_grey(frame)
            stats.append(frame_stats(grey, previous, background))
            previous = grey
            if on_frame is not None:
                on_frame(frame, now - first_at)
            if now - first_at >= sample_s:
                break
        if not stats:
            raise StreamError("no_frames", f"{redact(uri)} opened but gave no frame")
        return StreamSample(
            first_frame_s=first_at - opened_at,
            frames=len(stats),
            duration_s=last_at - first_at,
            stats=stats,
        )
    finally:
        capture.release()


def redact(uri: str) -> str:
    """The URI without credentials, for messages and logs."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return uri
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
