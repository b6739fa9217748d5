"""The cctv family's device types, each with its own stream-quality thresholds.

Thresholds are data per type because the scenes differ: an RT (neighbourhood) camera
watches a quiet lane where a still picture is normal at night, an ATCS camera watches an
intersection that never stops moving, an NVR has no picture at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.cctv.metrics import (
    ANALYTICS_METRICS,
    EVENT_METRICS,
    HEALTH_METRICS,
    NVR_METRICS,
    PARENT_METRICS,
    QUALITY_METRICS,
)
from drivers.framework import DeviceTypeSpec

ONVIF = "onvif"
ISAPI = "isapi"
# Every camera is health-checked over ONVIF within 5 minutes (the target).
HEALTH_INTERVAL_S = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityThresholds:
    """Where a stream sample's measurements turn into a problem, for one device type."""

    frozen_diff: float = 1.0  # mean abs grey difference between frames, 0-255
    black_mean: float = 16.0
    black_std: float = 5.0
    blur_var: float = 100.0  # Laplacian variance
    scene_change_ratio: float = 0.6  # MOG2 foreground share, sustained
    fps_ratio_min: float = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class CctvType:
    """A device type of the family: its registry spec and its quality thresholds."""

    spec: DeviceTypeSpec
    thresholds: QualityThresholds


def _keys(*groups: tuple[object, ...]) -> tuple[str, ...]:
    return tuple(m.key for group in groups for m in group)  # type: ignore[attr-defined]


CAMERA_METRICS = _keys(
    HEALTH_METRICS, QUALITY_METRICS, ANALYTICS_METRICS, PARENT_METRICS, EVENT_METRICS
)
ISAPI_CAMERA_METRICS = (*CAMERA_METRICS, "alert_stream_ok")
NVR_TYPE_METRICS = _keys(HEALTH_METRICS, NVR_METRICS, EVENT_METRICS)

CCTV_TYPES: tuple[CctvType, ...] = (
    CctvType(
        spec=DeviceTypeSpec(
            name="rt_camera",
            protocol=ONVIF,
            expected_interval_s=HEALTH_INTERVAL_S,
            metrics=CAMERA_METRICS,
            description="Neighbourhood (RT) ONVIF camera of a camera + 4-slot NVR package",
        ),
        # Quiet lanes are often still and dim at night: only a truly frozen decoder counts.
        thresholds=QualityThresholds(frozen_diff=0.3, black_mean=12.0, blur_var=60.0),
    ),
    CctvType(
        spec=DeviceTypeSpec(
            name="atcs_camera",
            protocol=ONVIF,
            expected_interval_s=HEALTH_INTERVAL_S,
            metrics=CAMERA_METRICS,
            description="ATCS intersection camera (ONVIF), always-moving traffic scene",
        ),
        thresholds=QualityThresholds(blur_var=120.0, fps_ratio_min=0.7),
    ),
    CctvType(
        spec=DeviceTypeSpec(
            name="corporate_camera",
            protocol=ONVIF,
            expected_interval_s=HEALTH_INTERVAL_S,
            metrics=CAMERA_METRICS,
            description="Corporate or partner ONVIF camera shared with the city",
        ),
        thresholds=QualityThresholds(),
    ),
    CctvType(
        spec=DeviceTypeSpec(
            name="hikvision_isapi_camera",
            protocol=ISAPI,
            expected_interval_s=60.0,
            metrics=ISAPI_CAMERA_METRICS,
            description="Hikvision camera: ISAPI alertStream events (VMD, tamper, line, field)",
        ),
        thresholds=QualityThresholds(),
    ),
    CctvType(
        spec=DeviceTypeSpec(
            name="nvr_4ch",
            protocol=ISAPI,
            expected_interval_s=HEALTH_INTERVAL_S,
            metrics=(*NVR_TYPE_METRICS,),
            description="4-slot NVR of an RT package (ISAPI): recording, disks, video loss",
        ),
        thresholds=QualityThresholds(),
    ),
)
NVR_TYPES = frozenset({"nvr_4ch"})
CAMERA_TYPES = frozenset(t.spec.name for t in CCTV_TYPES if t.spec.name not in NVR_TYPES)


def cctv_device_types() -> tuple[DeviceTypeSpec, ...]:
    """The registry specs of every cctv device type."""
    return tuple(t.spec for t in CCTV_TYPES)


def thresholds_for(device_type: str) -> QualityThresholds:
    """The stream-quality thresholds of ``device_type`` (the defaults for unknown types)."""
    for cctv_type in CCTV_TYPES:
        if cctv_type.spec.name == device_type:
            return cctv_type.thresholds
    return QualityThresholds()
