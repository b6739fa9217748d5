"""City overview: devices online on a map and by family, open alerts, freshness, the hub.

The device counts read the hubs' ``fleet_online`` points, not each device's status.
"""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat
from grafana_foundation_sdk.models import dashboard

from dashboards.grafana.board_kit import (
    FAMILY,
    FLEET_POINTS,
    FLEET_POINTS_NOTE,
    FLEET_STEP,
    KECAMATAN,
    OPEN_ALERT,
    bars,
    board,
    city_map,
    family_variable,
    fleet_now,
    fleet_over_time,
    kecamatan_variable,
    rollup_variable,
    rows,
    section,
    series,
    single,
)
from dashboards.grafana.city_figures import CityFigures
from dashboards.grafana.influxql_query import InfluxQL

UID = "kotahub-overview"
# The chosen families and kecamatan, for the fleet_online counts.
CHOSEN = f"{FAMILY} AND {KECAMATAN}"
GAZETTEER = "public/gazetteer/kotahub-kecamatan.json"
# A field every device of the family sends, to date the family's newest point.
FRESHNESS_FIELDS = {
    "flood": "level_m",
    "atcs": "control_mode",
    "atcs_detector": "volume",
    "cctv": "onvif_status",
    "wifi": "up",
    "gps": "lat",
    "ble": "rssi_dbm",
}


def _freshness(family: str, field: str) -> stat.Panel:
    """The time of the family's newest point, shown as its age ("2 minutes ago")."""
    return (
        single(
            family,
            InfluxQL(
                f'SELECT last("{field}") AS "{field}" FROM "{family}" WHERE time > now() - 7d'
            ).table(),
            unit="dateTimeFromNow",
            w=3,
            h=3,
            thresholds=[(None, "blue")],
        )
        .reduce_options(
            common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("/^Time$/")
        )
        .no_value("no data for 7 days")
    )


def build(figures: CityFigures) -> dash.Dashboard:
    """The city overview board."""
    built = (
        board(UID, f"Kotahub / {figures.city} overview", "The situation room's first screen.")
        .with_variable(rollup_variable())
        .with_variable(kecamatan_variable())
        .with_variable(family_variable())
        .with_row(section("Devices and alerts"))
        .with_panel(
            city_map(
                "Devices online by kecamatan",
                InfluxQL(
                    'SELECT sum("online") AS "online", sum("devices") AS "devices" FROM '
                    f'{fleet_now(CHOSEN)} GROUP BY "kecamatan"'
                ),
                center=figures.map_center,
                lookup_gazetteer=GAZETTEER,
                w=12,
                h=12,
                thresholds=[(None, "red"), (1, "green")],
                description="Kecamatan centres from kotahub-kecamatan.json (docs/grafana.md).",
            )
        )
        .with_panel(
            bars(
                "Devices online by family",
                InfluxQL(
                    f'SELECT sum("online") AS "online" FROM {fleet_now(CHOSEN)} GROUP BY "family"'
                ).alias("$tag_family"),
                w=6,
                h=6,
                thresholds=[(None, "blue")],
            )
        )
        .with_panel(
            single(
                "Open alerts",
                InfluxQL(
                    'SELECT count("event_id") AS "open" FROM '
                    '(SELECT last("event_id") AS "event_id", "event" FROM "alert" '
                    f"WHERE {KECAMATAN} AND time > now() - 30d "
                    f'GROUP BY "rule_id", "device_id") WHERE {OPEN_ALERT}'
                ),
                w=6,
                h=6,
                thresholds=[(None, "green"), (1, "orange"), (10, "red")],
            )
        )
        .with_panel(
            rows(
                "Open alerts",
                InfluxQL(
                    'SELECT "event", "stage", "message" FROM '
                    '(SELECT last("event_id") AS "event_id", "event", "stage", "message" '
                    f'FROM "alert" WHERE {KECAMATAN} AND time > now() - 30d '
                    'GROUP BY "rule_id", "device_id", "severity", "kecamatan") '
                    f"WHERE {OPEN_ALERT} "
                    'GROUP BY "rule_id", "device_id", "severity", "kecamatan"'
                ),
                w=12,
                h=6,
            )
            # Beside the map, under the bars and the count (the SDK would start a new line).
            .grid_pos(dashboard.GridPos(h=6, w=12, x=12, y=7))
        )
        .with_panel(
            series(
                "Devices online over time, by family",
                InfluxQL(
                    f'SELECT sum("online") AS "online" FROM {fleet_over_time(CHOSEN)} '
                    'WHERE $timeFilter GROUP BY time($__interval), "family" fill(none)'
                ).alias("$tag_family"),
                w=24,
                h=7,
                min_interval=FLEET_STEP,
                max_points=FLEET_POINTS,
                description="The hubs' fleet_online counts, summed over the hubs. "
                + FLEET_POINTS_NOTE,
            )
        )
        .with_row(section("Newest data per family"))
    )
    for family, field in FRESHNESS_FIELDS.items():
        built = built.with_panel(_freshness(family, field))
    return (
        built.with_row(section("Hub"))
        .with_panel(
            single(
                "Messages in per second",
                InfluxQL(
                    'SELECT sum("messages_in_per_s") AS "messages_in_per_s" FROM '
                    '(SELECT last("messages_in_per_s") AS "messages_in_per_s" FROM "hub" '
                    'WHERE time > now() - 5m GROUP BY "hub")'
                ),
                unit="reqps",
                w=6,
                thresholds=[(None, "red"), (0.01, "green")],
            )
        )
        .with_panel(
            single(
                "WAL depth",
                InfluxQL(
                    'SELECT sum("wal_depth_bytes") AS "wal_depth_bytes" FROM '
                    '(SELECT last("wal_depth_bytes") AS "wal_depth_bytes" FROM "hub" '
                    'WHERE time > now() - 5m GROUP BY "hub")'
                ),
                unit="bytes",
                w=6,
                thresholds=[(None, "green"), (1e9, "orange"), (8e9, "red")],
            )
        )
        .with_panel(
            single(
                "Write latency",
                InfluxQL(
                    'SELECT max("write_latency_mean_s") AS "write_latency_mean_s" FROM "hub" '
                    "WHERE time > now() - 5m"
                ),
                unit="s",
                w=6,
                thresholds=[(None, "green"), (0.5, "orange"), (2, "red")],
            )
        )
        .with_panel(
            single(
                "Dead-letters, last hour",
                InfluxQL(
                    'SELECT sum("count") AS "count" FROM "deadletter" WHERE time > now() - 1h'
                ),
                w=6,
                thresholds=[(None, "green"), (1, "orange"), (100, "red")],
            )
        )
    )
