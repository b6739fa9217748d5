"""Analytics that run on the agent with no downloaded weights: people, crowd, motion, parking.

- People: OpenCV's HOG + linear SVM people detector (``HOGDescriptor_getDefaultPeopleDetector``,
  shipped inside the 4.x wheel), non-maximum suppressed.
- Crowd level: people whose feet fall inside a zone polygon, against per-camera levels.
- Motion ratio: share of pixels the background subtractor calls foreground.
- Illegal parking: MOG2 foreground blobs of vehicle size inside a no-parking polygon,
  tracked frame to frame by centroid; one that stays put longer than the dwell limit is an
  event. A parked car sinks into the background after a while, so a track is kept while its
  box stays still even when the blob fades (checked against the frame at arrival).

Polygons are normalised (0-1 of width and height) so they survive a resolution change.
No frame leaves this module: only counts and events do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[Any]  # OpenCV images (uint8 BGR or grey)
Polygon = tuple[tuple[float, float], ...]
ANALYTICS_WIDTH = 640


def scaled(frame: Frame, width: int = ANALYTICS_WIDTH) -> Frame:
    """The frame at ``width`` (kept if narrower)."""
    height, w = frame.shape[:2]
    if w <= width:
        return frame
    return cv2.resize(frame, (width, height * width // w), interpolation=cv2.INTER_AREA)


def polygon_mask(polygon: Polygon, shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    """A 0/255 mask of a normalised polygon at an image's shape."""
    height, width = shape[:2]
    mask = np.zeros((height, width), np.uint8)
    points = np.array([[x * width, y * height] for x, y in polygon], np.int32)
    cv2.fillPoly(mask, [points], 255)
    return mask


def inside(polygon: Polygon, x: float, y: float) -> bool:
    """True when the normalised point (x, y) is inside the normalised polygon."""
    contour = np.array(polygon, np.float32).reshape(-1, 1, 2)
    return cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0


class PeopleDetector:
    """HOG people detector; boxes in the analysed frame's pixels."""

    def __init__(self, *, min_weight: float = 0.5, scale: float = 1.05) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(np.array(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))
        self.min_weight = min_weight
        self.scale = scale

    def detect(self, frame: Frame) -> list[tuple[int, int, int, int]]:
        """People boxes (x, y, w, h), overlapping detections merged."""
        rects, weights = self.hog.detectMultiScale(
            frame, winStride=(8, 8), padding=(8, 8), scale=self.scale
        )
        if len(rects) == 0:
            return []
        boxes = [[int(v) for v in r] for r in rects]
        scores = [float(w) for w in np.ravel(weights)]
        keep = cv2.dnn.NMSBoxes(boxes, scores, self.min_weight, 0.3)
        return [tuple(boxes[i]) for i in np.ravel(keep)]  # type: ignore[misc]


@dataclass(frozen=True, slots=True, kw_only=True)
class CrowdLevels:
    """People in the zone at which the crowd level becomes low, medium, high."""

    low: int = 1
    medium: int = 10
    high: int = 30

    def level(self, count: int) -> str:
        """none, low, medium or high."""
        if count >= self.high:
            return "high"
        if count >= self.medium:
            return "medium"
        return "low" if count >= self.low else "none"


def count_people(
    boxes: Sequence[tuple[int, int, int, int]],
    shape: tuple[int, ...],
    zone: Polygon | None,
) -> tuple[int, int]:
    """(people in the frame, people whose feet are inside ``zone``)."""
    height, width = shape[:2]
    in_zone = 0
    for x, y, w, h in boxes:
        feet = ((x + w / 2) / width, (y + h) / height)
        if zone is None or inside(zone, *feet):
            in_zone += 1
    return len(boxes), in_zone


@dataclass(slots=True)
class Track:
    """One vehicle-sized object in the no-parking zone."""

    box: tuple[int, int, int, int]
    first_seen_s: float
    last_seen_s: float
    still_since_s: float
    anchor: tuple[int, int, int, int]  # where it was when it last stopped
    reported: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ParkingEvent:
    """A vehicle stationary in the zone past the dwell limit."""

    dwell_s: float
    box: tuple[int, int, int, int]
    at_s: float


@dataclass(slots=True)
class ParkingDetector:
    """Background subtraction, blob tracking and dwell time over a no-parking polygon."""

    zone: Polygon
    dwell_limit_s: float
    min_area: float = 0.01  # share of the frame a vehicle covers at least
    max_area: float = 0.25
    move_tolerance: float = 0.02  # centroid drift (share of width) that still counts as still
    forget_after_s: float = 3.0
    warmup_frames: int = 10
    tracks: list[Track] = field(default_factory=list)
    frames_seen: int = 0
    motion_ratio: float = 0.0
    _subtractor: cv2.BackgroundSubtractorMOG2 = field(
        default_factory=lambda: cv2.createBackgroundSubtractorMOG2(
            history=500, varThreshold=32, detectShadows=False
        )
    )
    _mask: npt.NDArray[Any] | None = None
    _kernel: npt.NDArray[Any] = field(
        default_factory=lambda: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    )

    def update(self, frame: Frame, t: float) -> list[ParkingEvent]:
        """Feed one frame at time ``t`` (s); events for tracks that just passed the limit."""
        small = scaled(frame, 320)
        if self._mask is None or self._mask.shape != small.shape[:2]:
            self._mask = polygon_mask(self.zone, small.shape)
        # Learn fast at first (so whatever moved off the first frame leaves no ghost), then
        # slowly: a parked car must stay foreground for minutes, not seconds.
        self.frames_seen += 1
        warming = self.frames_seen <= self.warmup_frames
        rate = 1.0 / self.frames_seen if warming else 0.0005
        foreground = self._subtractor.apply(small, learningRate=rate)
        if warming:
            return []
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, self._kernel)
        foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, self._kernel)
        self.motion_ratio = float(np.count_nonzero(foreground)) / foreground.size
        area = float(foreground.size)
        height, width = small.shape[:2]
        contours, _ = cv2.findContours(foreground, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        blobs = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if not self.min_area <= (w * h) / area <= self.max_area:
                continue
            centre = (x + w / 2, y + h / 2)
            if self._mask[int(min(centre[1], height - 1)), int(min(centre[0], width - 1))]:
                blobs.append((x, y, w, h))
        return self._track(blobs, t, width)

    def _track(
        self, blobs: list[tuple[int, int, int, int]], t: float, width: int
    ) -> list[ParkingEvent]:
        events = []
        unmatched = list(blobs)
        tolerance = self.move_tolerance * width
        for track in self.tracks:
            best = _nearest(track.box, unmatched)
            if best is None:
                continue
            unmatched.remove(best)
            if _centre_distance(track.anchor, best) > tolerance:
                # It moved (even slowly, frame by frame): the dwell starts again here.
                track.still_since_s = t
                track.anchor = best
            track.box = best
            track.last_seen_s = t
        for blob in unmatched:
            self.tracks.append(
                Track(box=blob, first_seen_s=t, last_seen_s=t, still_since_s=t, anchor=blob)
            )
        self.tracks = [tr for tr in self.tracks if t - tr.last_seen_s <= self.forget_after_s]
        for track in self.tracks:
            dwell = t - track.still_since_s
            if not track.reported and dwell >= self.dwell_limit_s:
                track.reported = True
                events.append(ParkingEvent(dwell_s=dwell, box=track.box, at_s=t))
        return events

    @property
    def parked(self) -> int:
        """Tracks stationary past the dwell limit right now."""
        return sum(1 for tr in self.tracks if tr.reported)


def _centre_distance(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    return float(np.hypot(a[0] + a[2] / 2 - b[0] - b[2] / 2, a[1] + a[3] / 2 - b[1] - b[3] / 2))


def _nearest(
    box: tuple[int, int, int, int], candidates: list[tuple[int, int, int, int]]
) -> tuple[int, int, int, int] | None:
    if not candidates:
        return None
    best = min(candidates, key=lambda c: _centre_distance(box, c))
    # Farther than a box's own size is another object.
    return best if _centre_distance(box, best) <= max(box[2], box[3]) else None
