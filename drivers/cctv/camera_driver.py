"""The cctv camera driver: ONVIF health every poll, a stream sample on its own schedule.

Every poll (the device type's 300 s, so every camera is checked within 5 minutes) runs the
ONVIF health check and pulls the camera's events. A stream is decoded only every
``sample_every_s`` for ``sample_s`` seconds, at a per-camera offset so a fleet's samples
spread evenly, and at most ``decode_slots`` samples decode at once in one agent: one box
cannot decode every stream, so streams are sampled in rotation (docs/drivers/cctv.md).
The sample runs in a worker thread (OpenCV blocks); quality metrics, analytics counts and
analytics events come back as readings. No frame leaves the agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.cctv.analytics import (
    CrowdLevels,
    ParkingDetector,
    PeopleDetector,
    Polygon,
    count_people,
    scaled,
)
from drivers.cctv.device_types import HEALTH_INTERVAL_S, ISAPI, NVR_TYPES, thresholds_for
from drivers.cctv.isapi_device import IsapiDevice
from drivers.cctv.nvr_links import NVR_LINKS, PROBE_TIMEOUT_S, NvrLinks
from drivers.cctv.onnx_plugin import OnnxPlugin, OnnxPluginError, Prediction
from drivers.cctv.onvif_health import OnvifHealth, OnvifTarget
from drivers.cctv.stream_quality import (
    BackgroundModel,
    Frame,
    StreamError,
    decode_slots,
    sample_stream,
)
from drivers.framework import (
    DeviceInfo,
    DeviceSpec,
    DriverConfig,
    DriverError,
    MetricValue,
    Reading,
    utc_now,
)

log = logging.getLogger(__name__)
DECODE_SLOTS = max(1, os.cpu_count() or 1)
PEOPLE_EVERY_S = 1.0  # HOG is the costly stage: one frame a second of the sample


def reach_timeout_s(config: CameraConfig) -> float:
    """How long the camera's first ONVIF answer may take before it counts as unreachable."""
    # A hung camera must fail inside the poll's timeout_s with time left to probe its parent
    # NVR: cut off by the agent's timeout, its status would name no cause.
    return max(0.5, min(config.open_timeout_s, config.timeout_s - PROBE_TIMEOUT_S - 0.5))


def _polygon(value: Any) -> Polygon | None:
    if value is None:
        return None
    points = tuple((float(x), float(y)) for x, y in value)
    if len(points) < 3:
        raise ValueError("a zone needs at least 3 points")
    if any(not (0 <= x <= 1 and 0 <= y <= 1) for x, y in points):
        raise ValueError("zone points are fractions of width and height (0-1)")
    return points


class AnalyticsConfig(BaseModel):
    """Which analytics a camera runs on its samples, and their zones and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    people: bool = Field(default=False, description="Count people with the HOG detector.")
    crowd_zone: Polygon | None = Field(default=None, description="Normalised polygon.")
    crowd_levels: tuple[int, int, int] = Field(default=(1, 10, 30))
    no_parking_zone: Polygon | None = Field(default=None, description="Normalised polygon.")
    parking_dwell_s: float = Field(default=120.0, gt=0, le=3600)
    onnx_model: str | None = Field(default=None, description="Path of an ONNX plug-in model.")
    onnx_labels: tuple[str, ...] = Field(default=(), description="Labels of its scores.")

    @field_validator("crowd_zone", "no_parking_zone", mode="before")
    @classmethod
    def _zone(cls, value: Any) -> Polygon | None:
        return _polygon(value)

    @field_validator("crowd_levels")
    @classmethod
    def _levels(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if not 0 < value[0] <= value[1] <= value[2]:
            raise ValueError("levels must be 0 < low <= medium <= high")
        return value


class CameraConfig(DriverConfig):
    """A camera's driver config (the registry's ``driver_config`` plus its address)."""

    address: str = Field(description="host:port of the camera's ONVIF device service")
    username: str = Field(default="kotahub", min_length=1, max_length=64)
    password: str = Field(default="", max_length=128)
    timeout_s: float = Field(default=20.0, gt=0, le=300)
    events: bool = Field(default=True, description="Pull tamper, motion, image-quality events.")
    stream_uri: str | None = Field(default=None, description="Unset: ONVIF GetStreamUri.")
    stream: bool = Field(default=True, description="false: ONVIF health and events only.")
    profile: int = Field(
        default=1, ge=0, le=15, description="Media profile sampled: 1 is most cameras' substream."
    )
    sample_every_s: float = Field(
        default=3600.0, ge=0, description="0: sample on every poll (tests, analytics cameras)."
    )
    sample_s: float = Field(default=4.0, gt=0, le=600)
    open_timeout_s: float = Field(default=5.0, gt=0, le=60)
    read_timeout_s: float = Field(default=5.0, gt=0, le=60)
    analytics: AnalyticsConfig = Field(default_factory=AnalyticsConfig)
    nvr_channel: int | None = Field(
        default=None, ge=1, le=256, description="The parent NVR's channel this camera is on."
    )
    # Hikvision ISAPI devices (protocol "isapi"): the alert stream and the login guard.
    listen_s: float | None = Field(
        default=None, gt=0, le=3600, description="alertStream per poll; unset: timeout_s - 5."
    )
    heartbeat_watchdog_s: float = Field(default=30.0, gt=0, le=600)
    max_auth_failures: int = Field(default=3, ge=1, le=4, description="Below the lock-out (5).")

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port")
        return value

    @field_validator("stream_uri")
    @classmethod
    def _stream_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("rtsp://", "http://", "https://")):
            raise ValueError("must be an rtsp://, http:// or https:// URI")
        return value


def check_device(spec: DeviceSpec, config: DriverConfig) -> None:
    """Start-up check beyond the schema (no network): the poll timeout covers the work."""
    if not isinstance(config, CameraConfig):
        raise DriverError(spec.device_id, "cctv devices need a CameraConfig")
    model = config.analytics.onnx_model
    if model and not Path(model).is_file():
        raise DriverError(spec.device_id, f"analytics.onnx_model: no file {model}")
    if spec.protocol == ISAPI:
        if config.listen_s is None:
            return  # listens for timeout_s - 5 s
        needed = config.listen_s + 5
        what = "listen_s + 5 s"
    elif not config.stream:
        return  # ONVIF health and events only: no sample to fit in
    else:
        needed = config.sample_s + config.open_timeout_s + 2
        what = "sample_s + open_timeout_s + 2 s"
    if config.timeout_s < needed:
        raise DriverError(
            spec.device_id, f"timeout_s ({config.timeout_s:g}) must cover {what} ({needed:g})"
        )


def sample_offset(device_id: str, every_s: float) -> float:
    """A stable offset in [0, every_s) for a device, so a fleet's samples spread evenly."""
    digest = hashlib.blake2b(device_id.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") / 2**64) * every_s


class SampleAnalytics:
    """The analytics of one sample: fed every frame in the worker thread."""

    def __init__(
        self,
        device_id: str,
        config: AnalyticsConfig,
        parking: ParkingDetector | None,
        clock: Callable[[], float] = time.monotonic,
        plugin: OnnxPlugin | None = None,
    ) -> None:
        self.device_id = device_id
        self.clock = clock
        self.config = config
        self.parking = parking
        self.people = PeopleDetector() if config.people else None
        self.plugin = plugin
        self.prediction: Prediction | None = None
        low, medium, high = config.crowd_levels
        self.levels = CrowdLevels(low=low, medium=medium, high=high)
        self.people_count: int | None = None
        self.zone_people: int | None = None
        self.motion: list[float] = []
        self.events: list[Reading] = []
        self._next_people_s = 0.0

    def on_frame(self, frame: Frame, t: float) -> None:
        """One decoded frame at ``t`` seconds into the sample."""
        if t >= self._next_people_s and (self.people is not None or self.plugin is not None):
            self._next_people_s = t + PEOPLE_EVERY_S
            self._once_a_second(frame)
        if self.parking is not None:
            # The detector's clock runs across samples, so a dwell can span two of them.
            for event in self.parking.update(frame, self.clock()):
                self.events.append(
                    Reading(
                        device_id=self.device_id,
                        ts=utc_now(),
                        kind="event",
                        metrics={
                            "event": "illegal_parking",
                            "event_active": True,
                            "event_source": "analytics",
                            "dwell_s": round(event.dwell_s, 1),
                        },
                    )
                )
            self.motion.append(self.parking.motion_ratio)

    def _once_a_second(self, frame: Frame) -> None:
        """The costly stages (HOG, the ONNX plug-in) on one frame a second."""
        if self.people is not None:
            small = scaled(frame)
            boxes = self.people.detect(small)
            total, in_zone = count_people(boxes, small.shape, self.config.crowd_zone)
            self.people_count = max(self.people_count or 0, total)
            self.zone_people = max(self.zone_people or 0, in_zone)
        if self.plugin is not None:
            try:
                prediction = self.plugin.predict(frame)
            except (OnnxPluginError, RuntimeError, ValueError) as err:
                # A model that fails on real frames costs its own metrics, not the camera.
                log.warning("%s: ONNX plug-in disabled for this sample: %s", self.device_id, err)
                self.plugin = None
                return
            if self.prediction is None or prediction.score > self.prediction.score:
                self.prediction = prediction

    def metrics(self) -> dict[str, MetricValue]:
        """The sample's analytics counts."""
        out: dict[str, MetricValue] = {}
        if self.prediction is not None:
            out["model_score"] = round(self.prediction.score, 4)
            out["model_label"] = self.prediction.label[:64]
        if self.people_count is not None:
            out["people_count"] = self.people_count
        if self.zone_people is not None and self.config.crowd_zone is not None:
            out["zone_people"] = self.zone_people
            out["crowd_level"] = self.levels.level(self.zone_people)
        elif self.people_count is not None:
            out["crowd_level"] = self.levels.level(self.people_count)
        if self.motion:
            out["motion_ratio"] = round(sum(self.motion) / len(self.motion), 4)
        if self.parking is not None:
            out["parked_vehicles"] = self.parking.parked
        return out


class CctvCamera:
    """Polls one ONVIF camera; samples its stream when due."""

    def __init__(
        self, spec: DeviceSpec, config: CameraConfig, *, links: NvrLinks = NVR_LINKS
    ) -> None:
        self.device_id = spec.device_id
        self.config = config
        self.parent_id = spec.parent_id
        self.links = links
        self._link = (
            links.attach_camera(spec.device_id, spec.parent_id, config.nvr_channel)
            if spec.parent_id is not None
            else None
        )
        self.thresholds = thresholds_for(spec.device_type)
        host, _, port = config.address.rpartition(":")
        self.health = OnvifHealth(
            OnvifTarget(
                device_id=spec.device_id,
                host=host,
                port=int(port),
                username=config.username,
                password=config.password,
                timeout_s=config.timeout_s,
                reach_timeout_s=reach_timeout_s(config),
                events=config.events,
                profile=config.profile,
                interval_s=config.poll_interval_s or HEALTH_INTERVAL_S,
            )
        )
        self.background = BackgroundModel()
        zone = config.analytics.no_parking_zone
        self.parking = (
            ParkingDetector(zone=zone, dwell_limit_s=config.analytics.parking_dwell_s)
            if zone is not None
            else None
        )
        self._next_sample = time.monotonic() + (
            sample_offset(spec.device_id, config.sample_every_s) if config.sample_every_s else 0
        )
        self._seq = 0
        self._info: DeviceInfo | None = None
        self._slots = decode_slots("cctv", DECODE_SLOTS)
        # A sample cut short by the agent's timeout runs on in its thread; the next one
        # must not decode alongside it (the background model is not thread-safe).
        self._sampling = threading.Lock()
        model = config.analytics.onnx_model
        try:
            self.plugin = OnnxPlugin(model, config.analytics.onnx_labels) if model else None
        except OnnxPluginError as err:
            raise DriverError(spec.device_id, str(err)) from err

    async def poll(self) -> list[Reading]:
        """ONVIF health and events; the stream sample when due. DriverError if unreachable."""
        try:
            result = await self.health.check()
        except DriverError as err:
            own = str(err.cause)
            cause = await self.links.cause_for(self.parent_id, own)
            if cause == own:
                raise
            raise DriverError(self.device_id, cause) from err
        self._info = result.info or self._info
        metrics = dict(result.metrics)
        if self._link is not None:
            metrics.update(self.links.parent_metrics(self._link.nvr_id, self._link.channel))
        readings = list(result.events)
        uri = self.config.stream_uri or result.stream_uri
        if uri and self.config.stream and time.monotonic() >= self._next_sample:
            self._next_sample = time.monotonic() + self.config.sample_every_s
            quality, events = await asyncio.to_thread(self._sample, uri, result.fps_nominal)
            metrics.update(quality)
            readings.extend(events)
        self._seq += 1
        readings.insert(
            0, Reading(device_id=self.device_id, ts=utc_now(), metrics=metrics, seq=self._seq)
        )
        return readings

    def _sample(
        self, uri: str, fps_nominal: float | None
    ) -> tuple[dict[str, MetricValue], list[Reading]]:
        """Decode and analyse one sample (worker thread, under a decode slot)."""
        if not self._sampling.acquire(blocking=False):
            return {}, []  # the previous sample is still decoding: skip this turn
        try:
            return self._sample_locked(uri, fps_nominal)
        finally:
            self._sampling.release()

    def _sample_locked(
        self, uri: str, fps_nominal: float | None
    ) -> tuple[dict[str, MetricValue], list[Reading]]:
        analytics = SampleAnalytics(
            self.device_id, self.config.analytics, self.parking, plugin=self.plugin
        )
        with self._slots:
            try:
                sample = sample_stream(
                    uri,
                    sample_s=self.config.sample_s,
                    open_timeout_s=self.config.open_timeout_s,
                    read_timeout_s=self.config.read_timeout_s,
                    background=self.background,
                    on_frame=analytics.on_frame,
                )
            except StreamError as err:
                return {"stream_ok": False, "stream_status": err.status}, []
        metrics = sample.quality(self.thresholds, fps_nominal)
        metrics.update(analytics.metrics())
        return metrics, analytics.events

    def device_info(self) -> DeviceInfo | None:
        """Model, firmware and serial from the last GetDeviceInformation (for the registry)."""
        return self._info

    async def close(self) -> None:
        """Close the ONVIF session; the camera leaves its NVR's links."""
        if self._link is not None:
            self.links.detach_camera(self._link)
        await self.health.close()


def create_camera(spec: DeviceSpec, config: DriverConfig) -> CctvCamera | IsapiDevice:
    """The family's factory: an ONVIF camera poller, or an ISAPI camera or NVR poller."""
    if not isinstance(config, CameraConfig):
        raise DriverError(spec.device_id, "cctv devices need a CameraConfig")
    if spec.protocol == ISAPI:
        return IsapiDevice(
            spec,
            address=config.address,
            username=config.username,
            password=config.password,
            listen_s=config.listen_s or max(1.0, config.timeout_s - 5),
            heartbeat_watchdog_s=config.heartbeat_watchdog_s,
            max_auth_failures=config.max_auth_failures,
            nvr=spec.device_type in NVR_TYPES,
            nvr_channel=config.nvr_channel,
        )
    return CctvCamera(spec, config)
