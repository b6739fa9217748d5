"""CCTV cameras and NVRs: ONVIF health and events, stream quality, on-agent analytics."""

from __future__ import annotations

from drivers.cctv.camera_driver import CameraConfig, create_camera
from drivers.cctv.device_types import ONVIF, cctv_device_types
from drivers.cctv.metrics import CCTV_METRICS
from drivers.framework import DriverFamily

FAMILY = DriverFamily(
    name="cctv",
    description="ONVIF cameras (RT, ATCS, corporate): health, events, stream quality, analytics",
    protocols=(ONVIF,),
    metrics=CCTV_METRICS,
    config_model=CameraConfig,
    models=tuple(t.name for t in cctv_device_types() if t.protocol == ONVIF),
    device_types=tuple(t for t in cctv_device_types() if t.protocol == ONVIF),
    create_poller=create_camera,
)
