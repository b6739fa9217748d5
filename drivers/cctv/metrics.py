"""The cctv family's metrics, as one table: health, stream quality, analytics and events.

Event readings (``Reading(kind="event")``) use rows of this table too, since the hub checks
every telemetry and event metric against the device type's schema.
"""

from __future__ import annotations

from drivers.framework import AreaMetric, Metric


def _m(key: str, unit: str, type_: str, description: str) -> Metric:
    return Metric(key=key, unit=unit, type=type_, description=description)  # type: ignore[arg-type]


HEALTH_METRICS: tuple[Metric, ...] = (
    _m("onvif_status", "", "str", "ok, auth_failed, fault, malformed: the last ONVIF check."),
    _m("clock_drift_s", "s", "float", "Camera clock minus the agent's (GetSystemDateAndTime)."),
    _m("manufacturer", "", "str", "GetDeviceInformation Manufacturer."),
    _m("device_model", "", "str", "GetDeviceInformation Model (the registry record needs it)."),
    _m("firmware", "", "str", "GetDeviceInformation FirmwareVersion."),
    _m("serial", "", "str", "GetDeviceInformation SerialNumber."),
    _m("profiles", "", "int", "Media profiles the camera offers (GetProfiles)."),
    _m("fps_nominal", "fps", "float", "The profile's FrameRateLimit."),
    _m("stream_uri_ok", "", "bool", "GetStreamUri answered an rtsp or http URI."),
    _m("snapshot_uri_ok", "", "bool", "GetSnapshotUri answered an http URI."),
    _m("events_ok", "", "bool", "The pull-point subscription answers (created or renewed)."),
    _m("subscriptions_recreated", "", "int", "Pull points recreated after the camera forgot."),
)
QUALITY_METRICS: tuple[Metric, ...] = (
    _m("stream_ok", "", "bool", "The stream opened and gave frames within the timeouts."),
    _m("stream_status", "", "str", "ok, open_failed, no_frames, or the first problem seen."),
    _m("first_frame_s", "s", "float", "Open to first decoded frame."),
    _m("fps_measured", "fps", "float", "Frames decoded per second of the sample."),
    _m("fps_ratio", "", "float", "Measured over nominal fps."),
    _m("frozen", "", "bool", "Frames did not change for the sample (mean abs diff)."),
    _m("black", "", "bool", "Mean and spread of grey below the type's thresholds."),
    _m("luma_mean", "", "float", "Mean grey level 0-255."),
    _m("blur_var", "", "float", "Laplacian variance; low is blurred or defocused."),
    _m("blurred", "", "bool", "blur_var below the type's threshold."),
    _m("foreground_ratio", "", "float", "MOG2 foreground share of the frame (median)."),
    _m("scene_changed", "", "bool", "Covered lens or moved camera: foreground sustained high."),
)
ANALYTICS_METRICS: tuple[Metric, ...] = (
    _m("people_count", "", "int", "People found by the HOG detector (largest in the sample)."),
    _m("zone_people", "", "int", "People whose feet are inside the crowd zone."),
    _m("crowd_level", "", "str", "none, low, medium, high for the crowd zone."),
    _m("motion_ratio", "", "float", "Share of frame pixels in motion (mean of the sample)."),
    _m("parked_vehicles", "", "int", "Vehicle-sized objects stationary in the no-parking zone."),
    _m("model_score", "", "float", "Top score of the ONNX plug-in model."),
    _m("model_label", "", "str", "Label of the ONNX plug-in model's top score."),
)
NVR_METRICS: tuple[Metric, ...] = (
    _m("recording", "", "bool", "Every enabled channel is recording."),
    _m("disk_status", "", "str", "ok, or the worst HDD status (error, unformatted, full...)."),
    _m("disk_fill_pct", "%", "float", "Used share of all HDDs."),
    _m("channels_total", "", "int", "Channels configured on the NVR."),
    _m("channels_video_loss", "", "int", "Channels with video loss."),
    _m("alert_stream_ok", "", "bool", "ISAPI alertStream connected and heartbeat seen."),
)
PARENT_METRICS: tuple[Metric, ...] = (
    _m("nvr_video_loss", "", "bool", "The parent NVR reports video loss on this camera's channel."),
    _m("nvr_recording", "", "bool", "The parent NVR records (disk side)."),
)
EVENT_METRICS: tuple[Metric, ...] = (
    _m("event", "", "str", "tamper, motion, image_quality, illegal_parking, videoloss, ..."),
    _m("event_active", "", "bool", "The event's state: started (true) or ended (false)."),
    _m("event_source", "", "str", "onvif, isapi, analytics, or nvr (the parent NVR's)."),
    _m("event_topic", "", "str", "The ONVIF topic or ISAPI eventType as the device sent it."),
    _m("channel_id", "", "int", "NVR or camera channel the event belongs to."),
    _m("dwell_s", "s", "float", "How long the parked object had stayed when reported."),
    _m("parent_id", "", "str", "The parent NVR that reported the event (source nvr)."),
)
CCTV_METRICS: tuple[Metric, ...] = (
    HEALTH_METRICS
    + QUALITY_METRICS
    + ANALYTICS_METRICS
    + NVR_METRICS
    + PARENT_METRICS
    + EVENT_METRICS
)

# What the rollups keep a year (docs/grafana.md, "Speed"): what the boards and the city's
# indicators read over long ranges. The rest (inventory, the ONVIF checks' details, the
# detectors' raw scores) stays in the raw policy: 13,000 cameras x 68 aggregates made the
# 1-minute continuous query slower than its minute on 2 cores.
CCTV_ROLLUP_METRICS: tuple[str, ...] = (
    "onvif_status",
    "stream_ok",
    "fps_measured",
    "fps_ratio",
    "frozen",
    "black",
    "blurred",
    "scene_changed",
    "people_count",
    "zone_people",
    "crowd_level",
    "parked_vehicles",
    "recording",
    "disk_status",
    "disk_fill_pct",
    "channels_total",
    "channels_video_loss",
)

# What the CCTV board shows per kecamatan, totalled by the hub each minute (10,700 cameras
# and 2,600 NVRs in Semarang): the frame rate's mean (sum over count), cameras with each
# picture problem, the analytics' peaks, and the NVRs' health. Only NVRs report the NVR
# rows, so their counts are NVRs: NVRs not recording are recording_devices minus
# recording_sum (a boolean sums as 1), channels with video loss a sum over the NVRs, and
# the fullest disk the largest fill reported since the hub's previous point (an NVR
# reports every 5 minutes: a board takes the max over the last 15). A board telling NVRs
# from cameras by their fields instead reads all 13,300 series (2.8-3.3 s at full size).
CCTV_AREA_METRICS: tuple[AreaMetric, ...] = (
    AreaMetric(key="fps_ratio", aggregate="sum"),
    AreaMetric(key="frozen", aggregate="sum"),
    AreaMetric(key="black", aggregate="sum"),
    AreaMetric(key="blurred", aggregate="sum"),
    AreaMetric(key="zone_people", aggregate="max"),
    AreaMetric(key="parked_vehicles", aggregate="max"),
    AreaMetric(key="recording", aggregate="sum"),
    AreaMetric(key="channels_total", aggregate="sum"),
    AreaMetric(key="channels_video_loss", aggregate="sum"),
    AreaMetric(key="disk_fill_pct", aggregate="max"),
)
