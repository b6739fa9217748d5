"""CCTV cameras and NVRs: ONVIF and ISAPI health and events, stream quality, analytics."""

from __future__ import annotations

from drivers.cctv.camera_driver import CameraConfig, check_device, create_camera
from drivers.cctv.device_types import ISAPI, ONVIF, cctv_device_types
from drivers.cctv.metrics import CCTV_AREA_METRICS, CCTV_METRICS, CCTV_ROLLUP_METRICS
from drivers.framework import DriverFamily

FAMILY = DriverFamily(
    name="cctv",
    description="CCTV cameras (RT, ATCS, corporate) and NVRs: ONVIF/ISAPI health and events, "
    "stream quality, analytics",
    protocols=(ONVIF, ISAPI),
    metrics=CCTV_METRICS,
    config_model=CameraConfig,
    models=tuple(t.name for t in cctv_device_types()),
    device_types=cctv_device_types(),
    create_poller=create_camera,
    check=check_device,
    rollup_metrics=CCTV_ROLLUP_METRICS,
    area_metrics=CCTV_AREA_METRICS,
)
