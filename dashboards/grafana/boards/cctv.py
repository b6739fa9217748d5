"""CCTV: online share by kecamatan and owner, stream quality, analytics, NVR health."""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.grafana.board_kit import (
    AREA,
    FLEET_NOW,
    FLEET_POINTS,
    FLEET_POINTS_NOTE,
    FLEET_STEP,
    KECAMATAN,
    RECENT,
    area_over_time,
    bars,
    board,
    fleet_now,
    fleet_over_time,
    kecamatan_variable,
    rollup,
    rollup_variable,
    section,
    series,
    single,
)
from dashboards.grafana.city_figures import CityFigures
from dashboards.grafana.influxql_query import InfluxQL

UID = "kotahub-cctv"
# Cameras and NVRs in the chosen kecamatan, for the hubs' fleet_online counts.
CAMERAS = f"\"family\" = 'cctv' AND {KECAMATAN}"
ONLINE_PCT = 'sum("online") * 100 / sum("devices") AS "online_pct"'
SHARE = [(None, "red"), (80, "orange"), (95, "green")]


def _problem(flag: str) -> InfluxQL:
    """Cameras whose last check shows the problem (area_totals), summed over kecamatan."""
    return InfluxQL(
        f'SELECT sum("{flag}_sum") AS "{flag}" FROM {area_over_time("cctv", f"{flag}_sum")} '
        "WHERE $timeFilter GROUP BY time($__interval) fill(0)"
    )


# NVRs are told from cameras by the rows only they report (recording, channels_*): the
# hubs total them per kecamatan in area_totals, a few series, where a query of the cctv
# measurement filtered on "channels_total" > 0 reads all 13,300 camera and NVR series.
NVR_COUNTS = (
    "NVRs that reported within their silence limit (3 x 5 minutes), counted by the hubs "
    "(area_totals): an NVR that stopped reporting counts under Online, not here. One NVR's "
    "state is on its own points (cctv, its device_id)."
)


def _nvrs_now() -> str:
    """A subquery: each hub's newest NVR totals per kecamatan (area_totals)."""
    return (
        '(SELECT last("recording_devices") AS "recording_devices", '
        'last("recording_sum") AS "recording_sum", '
        'last("channels_video_loss_sum") AS "channels_video_loss_sum" FROM "area_totals" '
        f'WHERE {CAMERAS} AND {FLEET_NOW} GROUP BY "hub", "kecamatan")'
    )


def _peak(field: str) -> InfluxQL:
    """The largest reading of an analytics count per kecamatan (area_totals)."""
    return InfluxQL(
        f'SELECT max("{field}_max") AS "{field}" FROM {rollup(AREA)} '
        f"WHERE {CAMERAS} AND $timeFilter "
        'GROUP BY time($__interval), "kecamatan" fill(none)'
    ).alias("$tag_kecamatan")


def build(figures: CityFigures) -> dash.Dashboard:
    """The CCTV board."""
    del figures
    return (
        board(UID, "Kotahub / CCTV", "Cameras and NVRs: who is online, picture and analytics.")
        .with_variable(rollup_variable())
        .with_variable(kecamatan_variable())
        .with_row(section("Online"))
        .with_panel(
            single(
                "Cameras online",
                InfluxQL(f'SELECT sum("online") AS "online" FROM {fleet_now(CAMERAS)}'),
                w=4,
                thresholds=[(None, "blue")],
            )
        )
        .with_panel(
            single(
                "Online share",
                InfluxQL(f"SELECT {ONLINE_PCT} FROM {fleet_now(CAMERAS)}"),
                unit="percent",
                w=4,
                thresholds=SHARE,
                decimals=1,
            )
        )
        .with_panel(
            bars(
                "Online share by kecamatan",
                InfluxQL(
                    f'SELECT {ONLINE_PCT} FROM {fleet_now(CAMERAS)} GROUP BY "kecamatan"'
                ).alias("$tag_kecamatan"),
                unit="percent",
                w=8,
                thresholds=SHARE,
                max_value=100,
            )
        )
        .with_panel(
            bars(
                "Online share by owner (team)",
                InfluxQL(f'SELECT {ONLINE_PCT} FROM {fleet_now(CAMERAS)} GROUP BY "team"').alias(
                    "$tag_team"
                ),
                unit="percent",
                w=8,
                thresholds=SHARE,
                max_value=100,
            )
        )
        .with_panel(
            series(
                "Online share over time, by kecamatan",
                InfluxQL(
                    f"SELECT {ONLINE_PCT} FROM {fleet_over_time(CAMERAS)} "
                    'WHERE $timeFilter GROUP BY time($__interval), "kecamatan" fill(none)'
                ).alias("$tag_kecamatan"),
                unit="percent",
                w=24,
                h=7,
                thresholds=SHARE,
                min_interval=FLEET_STEP,
                max_points=FLEET_POINTS,
                description="The hubs' fleet_online counts, summed over the hubs. "
                + FLEET_POINTS_NOTE,
            )
        )
        .with_row(section("Stream quality"))
        .with_panel(
            series(
                "Frame rate against nominal",
                InfluxQL(
                    'SELECT sum("fps_ratio_sum") / sum("fps_ratio_devices") AS "fps_ratio" '
                    f"FROM {area_over_time('cctv', 'fps_ratio_sum', 'fps_ratio_devices')} "
                    'WHERE $timeFilter GROUP BY time($__interval), "kecamatan" fill(none)'
                ).alias("$tag_kecamatan"),
                unit="percentunit",
                thresholds=[(None, "red"), (0.5, "green")],
                min_interval=FLEET_STEP,
                max_points=FLEET_POINTS,
                description="The cameras' mean of measured over nominal frame rate, over those "
                "that reported within 3 checks (the hubs' area_totals). " + FLEET_POINTS_NOTE,
            )
        )
        .with_panel(
            series(
                "Pictures with a problem (cameras)",
                _problem("frozen").alias("frozen"),
                _problem("black").alias("black"),
                _problem("blurred").alias("blurred"),
                bars=True,
                stacked=True,
                min_interval=FLEET_STEP,
                description="Cameras whose last check (within 3 checks) found the picture "
                "frozen, black or blurred; the mean count over each bar (the hubs' area_totals).",
            )
        )
        .with_row(section("Analytics"))
        .with_panel(
            series(
                "Crowd: most people in a crowd zone, by kecamatan",
                _peak("zone_people"),
                thresholds=[(None, "green"), (20, "orange"), (50, "red")],
                min_interval=FLEET_STEP,
            )
        )
        .with_panel(
            series(
                "Most vehicles parked in a no-parking zone, by kecamatan",
                _peak("parked_vehicles"),
                min_interval=FLEET_STEP,
            )
        )
        .with_row(section("NVRs"))
        .with_panel(
            bars(
                "NVRs not recording, by kecamatan",
                InfluxQL(
                    'SELECT sum("recording_devices") - sum("recording_sum") AS "not_recording" '
                    f'FROM {_nvrs_now()} GROUP BY "kecamatan"'
                ).alias("$tag_kecamatan"),
                w=8,
                thresholds=[(None, "green"), (1, "red")],
                description=NVR_COUNTS,
            )
        )
        .with_panel(
            bars(
                "NVR channels with video loss, by kecamatan",
                InfluxQL(
                    'SELECT sum("channels_video_loss_sum") AS "video_loss" '
                    f'FROM {_nvrs_now()} GROUP BY "kecamatan"'
                ).alias("$tag_kecamatan"),
                w=8,
                thresholds=[(None, "green"), (1, "orange")],
                description=NVR_COUNTS,
            )
        )
        .with_panel(
            bars(
                "Fullest NVR disk, by kecamatan",
                InfluxQL(
                    'SELECT max("disk_fill_pct_max") AS "disk_fill_pct" FROM "area_totals" '
                    f'WHERE {CAMERAS} AND {RECENT} GROUP BY "kecamatan"'
                ).alias("$tag_kecamatan"),
                unit="percent",
                w=8,
                thresholds=[(None, "green"), (80, "orange"), (90, "red")],
                max_value=100,
                description="The largest disk fill any NVR of the kecamatan reported in the "
                "last 15 minutes (3 of its 5-minute reports), from the hubs' area_totals.",
            )
        )
    )
