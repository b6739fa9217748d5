"""Public WiFi: access points up, clients, throughput, reboots."""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.grafana.board_kit import (
    DEVICE,
    KECAMATAN,
    RECENT,
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
# Access points are polled every 60-300 s: buckets shorter than that miss some of them.
POLL = "5m"


def _aps(up: bool) -> InfluxQL:
    value = "true" if up else "false"
    return InfluxQL(
        'SELECT count("up") AS "aps" FROM '
        f'(SELECT last("up") AS "up" FROM "wifi" WHERE {WHERE} AND {RECENT} '
        f'GROUP BY "device_id") WHERE "up" = {value}'
    )


def _summed(field: str) -> InfluxQL:
    """A field summed over the access points, per kecamatan, per interval."""
    return InfluxQL(
        f'SELECT sum("{field}") AS "{field}" FROM '
        f'(SELECT mean("{field}") AS "{field}" FROM {rollup("wifi")} '
        f"WHERE {WHERE} AND $timeFilter "
        'GROUP BY time($__interval), "kecamatan", "device_id") '
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
                    'SELECT sum("reboots") AS "reboots" FROM '
                    '(SELECT spread("reboots") AS "reboots" FROM "wifi" '
                    f'WHERE {WHERE} AND time > now() - 24h GROUP BY "device_id")'
                ),
                w=6,
                thresholds=[(None, "green"), (5, "orange"), (20, "red")],
            )
        )
        .with_row(section("Over time"))
        .with_panel(
            series("Clients by kecamatan", _summed("clients"), stacked=True, min_interval=POLL)
        )
        .with_panel(
            series(
                "Throughput",
                _summed("rx_bps").alias("rx $tag_kecamatan"),
                _summed("tx_bps").alias("tx $tag_kecamatan"),
                unit="bps",
                min_interval=POLL,
            )
        )
        .with_panel(
            series(
                "Reboots",
                InfluxQL(
                    'SELECT sum("reboots") AS "reboots" FROM '
                    '(SELECT non_negative_difference(last("reboots")) AS "reboots" FROM '
                    f"{rollup('wifi')} WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "kecamatan", "device_id") '
                    'WHERE $timeFilter GROUP BY time($__interval), "kecamatan" fill(none)'
                ).alias("$tag_kecamatan"),
                bars=True,
                min_interval=POLL,
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
