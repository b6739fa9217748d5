"""CCTV: online share by kecamatan and owner, stream quality, analytics, NVR health."""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.grafana.board_kit import (
    AREA,
    FLEET_POINTS,
    FLEET_STEP,
    KECAMATAN,
    area_over_time,
    bars,
    board,
    fleet_now,
    fleet_over_time,
    kecamatan_variable,
    rollup,
    rollup_variable,
    rows,
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
                description="The cameras' mean of measured over nominal frame rate, over those "
                "that reported within 3 checks (the hubs' area_totals).",
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
            rows(
                "NVR health (last hour)",
                InfluxQL(
                    'SELECT last("recording") AS "recording", '
                    'last("disk_status") AS "disk_status", '
                    'last("disk_fill_pct") AS "disk_fill_pct", '
                    'last("channels_video_loss") AS "channels_video_loss" FROM "cctv" '
                    f'WHERE {KECAMATAN} AND time > now() - 1h AND "channels_total" > 0 '
                    'GROUP BY "device_id", "site"'
                ),
                w=24,
                h=6,
            )
        )
    )
