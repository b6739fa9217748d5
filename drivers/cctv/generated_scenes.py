"""Generated video scenes for the tests, the benchmark and the demo: no recorded footage.

Each scene is a list of BGR frames: moving shapes on a textured street, a frozen feed,
black, blurred, a covered lens, walking figures (drawn at the scale OpenCV's HOG people
detector expects: about 110-130 px tall, checked empirically), and a car that drives into
a zone and stops. ``write_clip`` stores a scene as Motion-JPEG AVI, which both the
GStreamer RTSP server and the HTTP MJPEG server send without re-encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[Any]  # OpenCV images (uint8 BGR or grey)
WIDTH, HEIGHT = 640, 360


def street(width: int = WIDTH, height: int = HEIGHT, seed: int = 7) -> Frame:
    """A textured, sharp background (road, kerb, paving) with sensor-like grain."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 165, np.uint8)
    img[int(height * 0.55) :, :] = (105, 105, 110)  # road
    for x in range(0, width, 40):
        cv2.line(img, (x, 0), (x, int(height * 0.55)), (140, 140, 140), 1)  # paving joints
    for x in range(0, width, 80):
        cv2.line(img, (x, int(height * 0.78)), (x + 40, int(height * 0.78)), (230, 230, 230), 3)
    grain = rng.normal(0, 5, img.shape)
    return np.clip(img + grain, 0, 255).astype(np.uint8)


def with_grain(frames: list[Frame], sigma: float = 3.0, seed: int = 11) -> list[Frame]:
    """Sensor noise that changes every frame, as a live camera's does (a frozen feed's not)."""
    rng = np.random.default_rng(seed)
    layers = [rng.normal(0, sigma, frames[0].shape).astype(np.int16) for _ in range(5)]
    return [
        np.clip(frame.astype(np.int16) + layers[i % len(layers)], 0, 255).astype(np.uint8)
        for i, frame in enumerate(frames)
    ]


def draw_person(img: Frame, x: float, top: float, height: float, phase: float) -> None:
    """A dark walking silhouette: head, torso, swinging arms and legs."""
    u = height / 8.0
    colour = (40, 40, 45)
    cx, y = int(x), top
    swing = math.sin(phase) * u * 0.6
    cv2.circle(img, (cx, int(y + u * 0.55)), int(u * 0.55), colour, -1)
    cv2.ellipse(img, (cx, int(y + u * 2.6)), (int(u * 0.9), int(u * 1.6)), 0, 0, 360, colour, -1)
    for side in (-1, 1):
        cv2.line(
            img,
            (cx + side * int(u * 0.8), int(y + u * 1.4)),
            (cx + side * int(u * 1.0) - side * int(swing), int(y + u * 4.0)),
            colour,
            max(1, int(u * 0.35)),
        )
        cv2.line(
            img,
            (cx + side * int(u * 0.35), int(y + u * 3.9)),
            (cx + side * int(u * 0.6) - side * int(swing), int(y + u * 8)),
            colour,
            max(1, int(u * 0.45)),
        )


def moving_shapes(frames: int, fps: float = 10.0) -> list[Frame]:
    """A normal feed: two shapes crossing a sharp street."""
    base = street()
    out = []
    for i in range(frames):
        img = base.copy()
        t = i / fps
        cv2.rectangle(
            img,
            (int(40 + 60 * t) % WIDTH, 230),
            (int(40 + 60 * t) % WIDTH + 70, 270),
            (30, 60, 200),
            -1,
        )
        cv2.circle(img, (WIDTH - int(30 + 45 * t) % WIDTH, 120), 22, (200, 180, 40), -1)
        out.append(img)
    return with_grain(out)


def frozen(frames: int) -> list[Frame]:
    """A feed stuck on one picture (encoder or decoder hung)."""
    still = moving_shapes(1)[0]
    return [still.copy() for _ in range(frames)]


def black(frames: int, seed: int = 3) -> list[Frame]:
    """A dead sensor or a night without IR: near-black with faint noise."""
    rng = np.random.default_rng(seed)
    return [
        np.clip(rng.normal(6, 1.5, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
        for _ in range(frames)
    ]


def blurred(frames: int, fps: float = 10.0) -> list[Frame]:
    """A defocused or fogged lens: the normal feed through a heavy blur."""
    return with_grain([cv2.GaussianBlur(f, (0, 0), 9) for f in moving_shapes(frames, fps)])


def covered(frames: int, seed: int = 5) -> list[Frame]:
    """A lens covered by something bright and flat (a bag, sprayed paint)."""
    rng = np.random.default_rng(seed)
    return [
        np.clip(rng.normal(200, 3, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
        for _ in range(frames)
    ]


def walking_people(frames: int, people: int, fps: float = 10.0) -> list[Frame]:
    """``people`` figures walking across the pavement, spaced so none overlap."""
    base = street()
    spacing = (WIDTH - 120) / max(people, 1)
    out = []
    for i in range(frames):
        img = base.copy()
        t = i / fps
        for p in range(people):
            x = 60 + spacing * (p + 0.5) + 8 * t * (1 if p % 2 else -1)
            draw_person(img, x, 70 + (p % 2) * 25, 120, phase=3 * t + p)
        out.append(img)
    return with_grain(out)


@dataclass(frozen=True, slots=True)
class ParkingScene:
    """A car that drives in and stops inside a zone: its frames and when it stopped."""

    frames: list[Frame]
    fps: float
    stopped_at_s: float
    zone: tuple[tuple[float, float], ...]  # normalised polygon


def car_parks(seconds: float, fps: float = 10.0, arrive_s: float = 2.0) -> ParkingScene:
    """A car enters from the left, stops in the no-parking box at ``arrive_s``, stays."""
    base = street()
    stop_x, y = 380, 235
    out = []
    for i in range(int(seconds * fps)):
        t = i / fps
        x = stop_x if t >= arrive_s else int(stop_x * t / arrive_s)
        img = base.copy()
        cv2.rectangle(img, (x, y), (x + 110, y + 50), (40, 40, 170), -1)
        cv2.rectangle(img, (x + 20, y - 18), (x + 85, y), (50, 50, 150), -1)
        out.append(img)
    out = with_grain(out)
    zone = ((0.5, 0.55), (0.95, 0.55), (0.95, 0.95), (0.5, 0.95))
    return ParkingScene(frames=out, fps=fps, stopped_at_s=arrive_s, zone=zone)


def write_clip(frames: list[Frame], path: Path, fps: float = 10.0) -> Path:
    """Store frames as a Motion-JPEG AVI (quality 90) and return the path."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot write {path}")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()
    return path
