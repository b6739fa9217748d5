"""Public WiFi: access points up, clients, throughput, reboots."""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.grafana.board_kit import (
    AREA,
    DEVICE,
    FLEET_STEP,
    KECAMATAN,
    NO_DEVICE_FILTER,
    RECENT,
    area_over_time,
    board,
    device_variable,
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

UID = "kotahub-wifi"
WHERE = f"{KECAMATAN} AND {DEVICE}"
APS = f"\"family\" = 'wifi' AND {KECAMATAN}"
# Reboots are rare: bars of 10 minutes (a day in 144) stay visible where 2-minute ones
# would be a pixel wide.
REBOOT_BARS = "10m"


def _aps(up: bool) -> InfluxQL:
    value = "true" if up else "false"
    return InfluxQL(
        'SELECT count("up") AS "aps" FROM '
        f'(SELECT last("up") AS "up" FROM "wifi" WHERE {WHERE} AND {RECENT} '
        f'GROUP BY "device_id") WHERE "up" = {value}'
    )


def _summed(field: str) -> InfluxQL:
    """A metric summed over the access points, per kecamatan, per interval (area_totals).

    Each hub's mean total of the bucket, summed over the hubs.
    """
    return InfluxQL(
        f'SELECT sum("{field}_sum") AS "{field}" FROM {area_over_time("wifi", f"{field}_sum")} '
        'WHERE $timeFilter GROUP BY time($__interval), "kecamatan" fill(none)'
    ).alias("$tag_kecamatan")


def build(figures: CityFigures) -> dash.Dashboard:
    """The public WiFi board."""
    del figures
    return (
        board(UID, "Kotahub / Public WiFi", "The city's hotspots: up, clients, traffic.")
        .with_variable(rollup_variable())
        .with_variable(kecamatan_variable())
        .with_variable(device_variable("wifi"))
        .with_row(section("Now"))
        .with_panel(single("Access points up", _aps(True), w=6, thresholds=[(None, "green")]))
        .with_panel(
            single("Access points down", _aps(False), w=6, thresholds=[(None, "green"), (1, "red")])
        )
        .with_panel(
            single(
                "Clients now",
                InfluxQL(
                    'SELECT sum("clients") AS "clients" FROM '
                    f'(SELECT last("clients") AS "clients" FROM "wifi" WHERE {WHERE} '
                    f'AND {RECENT} GROUP BY "device_id")'
                ),
                w=6,
                thresholds=[(None, "blue")],
            )
        )
        .with_panel(
            single(
                "Reboots, last 24 h",
                InfluxQL(
                    f'SELECT sum("reboots_increase") AS "reboots" FROM "{AREA}" '
                    f"WHERE {APS} AND time > now() - 24h"
                ),
                w=6,
                thresholds=[(None, "green"), (5, "orange"), (20, "red")],
                description=f"Reboots the hubs counted in the last 24 hours. {NO_DEVICE_FILTER}",
            )
        )
        .with_row(section("Over time"))
        .with_panel(
            series(
                "Clients by kecamatan",
                _summed("clients"),
                stacked=True,
                min_interval=FLEET_STEP,
                description="Clients of the access points that reported within 3 polls, "
                f"summed per kecamatan. {NO_DEVICE_FILTER}",
            )
        )
        .with_panel(
            series(
                "Throughput",
                _summed("rx_bps").alias("rx $tag_kecamatan"),
                _summed("tx_bps").alias("tx $tag_kecamatan"),
                unit="bps",
                min_interval=FLEET_STEP,
                description="Traffic of the access points, summed per kecamatan. "
                f"{NO_DEVICE_FILTER}",
            )
        )
        .with_panel(
            series(
                "Reboots",
                InfluxQL(
                    f'SELECT sum("reboots_increase") AS "reboots" FROM {rollup(AREA)} '
                    f"WHERE {APS} AND $timeFilter "
                    'GROUP BY time($__interval), "kecamatan" fill(none)'
                ).alias("$tag_kecamatan"),
                bars=True,
                min_interval=REBOOT_BARS,
                description="Reboots the hubs counted (growth of each AP's reboot counter), "
                f"per kecamatan. {NO_DEVICE_FILTER}",
            )
        )
        .with_panel(
            rows(
                "Access points now",
                InfluxQL(
                    'SELECT last("up") AS "up", last("clients") AS "clients", '
                    'last("uptime_s") AS "uptime_s" FROM "wifi" '
                    f'WHERE {WHERE} AND {RECENT} GROUP BY "device_id", "site"'
                ),
            )
        )
    )
