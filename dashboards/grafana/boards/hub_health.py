"""Hub health: throughput, WAL depth, write latency, dead-letters, gaps, status changes."""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.grafana.board_kit import (
    FAMILY,
    KECAMATAN,
    board,
    family_variable,
    kecamatan_variable,
    rollup,
    rollup_variable,
    rows,
    section,
    series,
    single,
)
from dashboards.grafana.city_figures import CityFigures
from dashboards.grafana.influxql_query import DATASOURCE, InfluxQL

UID = "kotahub-hub"
HUB = '"hub" =~ /^$hub$/'


def hub_variable() -> dash.QueryVariable:
    """Which hub worker (client_id)."""
    return (
        dash.QueryVariable("hub")
        .label("Hub")
        .datasource(DATASOURCE)
        .query('SHOW TAG VALUES FROM "hub" WITH KEY = "hub"')
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _hub_series(field: str) -> InfluxQL:
    return InfluxQL(
        f'SELECT mean("{field}") AS "{field}" FROM {rollup("hub")} '
        f'WHERE {HUB} AND $timeFilter GROUP BY time($__interval), "hub" fill(none)'
    ).alias(f"{field} $tag_hub")


def build(figures: CityFigures) -> dash.Dashboard:
    """The hub health board."""
    del figures
    return (
        board(UID, "Kotahub / Hub health", "Ingest: MQTT in, WAL, InfluxDB out, rejections.")
        .with_variable(rollup_variable())
        .with_variable(hub_variable())
        .with_variable(family_variable())
        .with_variable(kecamatan_variable())
        .with_row(section("Throughput"))
        .with_panel(
            series(
                "Messages in and points written per second",
                _hub_series("messages_in_per_s"),
                _hub_series("written_per_s"),
                unit="reqps",
            )
        )
        .with_panel(
            series(
                "WAL depth (not yet in InfluxDB)",
                _hub_series("wal_depth_bytes"),
                unit="bytes",
                thresholds=[(None, "green"), (1e9, "orange"), (8e9, "red")],
            )
        )
        .with_panel(
            series(
                "InfluxDB write latency (mean per batch)",
                _hub_series("write_latency_mean_s"),
                unit="s",
                thresholds=[(None, "green"), (0.5, "orange"), (2, "red")],
            )
        )
        .with_panel(
            single(
                "Dead-letters, last hour",
                InfluxQL(
                    'SELECT sum("count") AS "count" FROM "deadletter" '
                    f"WHERE {HUB} AND time > now() - 1h"
                ),
                w=12,
                h=8,
                thresholds=[(None, "green"), (1, "orange"), (100, "red")],
            )
        )
        .with_row(section("Rejections and gaps"))
        .with_panel(
            series(
                "Dead-letters by reason",
                InfluxQL(
                    f'SELECT sum("count") AS "count" FROM {rollup("deadletter")} '
                    f"WHERE {HUB} AND $timeFilter "
                    'GROUP BY time($__interval), "reason" fill(none)'
                ).alias("$tag_reason"),
                bars=True,
                # A bar per 10 minutes at least: one per minute is a solid wall over a day.
                min_interval="10m",
                stacked=True,
            )
        )
        .with_panel(
            series(
                "Sequence gaps (messages missing, new per interval)",
                InfluxQL(
                    'SELECT non_negative_difference(last("seq_gaps")) AS "seq_gaps" FROM '
                    f"{rollup('hub')} WHERE {HUB} AND \"device_id\" = '' AND $timeFilter "
                    'GROUP BY time($__interval), "hub" fill(none)'
                ).alias("$tag_hub"),
                bars=True,
                # A bar per 10 minutes at least: one per minute is a solid wall over a day.
                min_interval="10m",
            )
        )
        .with_panel(
            rows(
                "Devices with sequence gaps",
                InfluxQL(
                    'SELECT last("seq_gaps") AS "seq_gaps" FROM "hub" '
                    f'WHERE {HUB} AND "device_id" =~ /./ AND $timeFilter GROUP BY "device_id"'
                ),
            )
        )
        .with_panel(
            series(
                "Device status changes by family",
                InfluxQL(
                    f'SELECT count("online") AS "changes" FROM {rollup("device_status")} '
                    f"WHERE {FAMILY} AND {KECAMATAN} AND $timeFilter "
                    'GROUP BY time($__interval), "family" fill(none)'
                ).alias("$tag_family"),
                bars=True,
                # A bar per 10 minutes at least: one per minute is a solid wall over a day.
                min_interval="10m",
                stacked=True,
            )
        )
    )
