"""Flood: levels against each gauge's stages, rain, pumps running, tide (rob)."""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard

from dashboards.grafana.board_kit import (
    DEVICE,
    KECAMATAN,
    RECENT,
    bars,
    board,
    device_variable,
    kecamatan_variable,
    rollup,
    rollup_variable,
    rows,
    section,
    series,
    single,
    tag_variable,
)
from dashboards.grafana.city_figures import CityFigures
from dashboards.grafana.influxql_query import InfluxQL

# What hub/registry_thresholds.py writes (this package imports nothing of hub).
MEASUREMENT = "flood_threshold"
STAGES = ("siaga4_m", "siaga3_m", "siaga2_m", "siaga1_m")

UID = "kotahub-flood"
WHERE = f"{KECAMATAN} AND {DEVICE}"
GAUGE = '"device_id" =~ /^$gauge$/'


def _stages_query(where: str) -> InfluxQL:
    """Each gauge's stages as the registry has them (hub/registry_thresholds.py writes them
    on change only, so no time filter: the newest point of each gauge is its stages)."""
    fields = ", ".join(f'last("{name}") AS "{name}"' for name in STAGES)
    return InfluxQL(f'SELECT {fields} FROM "{MEASUREMENT}" WHERE {where} GROUP BY "device_id"')


def _stages_from_registry() -> dashboard.DataTransformerConfig:
    """Grafana's "Config from query results": query B's stages become A's threshold lines."""
    return dashboard.DataTransformerConfig(
        id_val="configFromData",
        options={
            "configRefId": "B",
            "applyTo": {"id": "byFrameRefID", "options": "A"},
            "mappings": [
                {"fieldName": name, "handlerKey": "threshold1", "reducerId": "lastNotNull"}
                for name in STAGES
            ],
        },
    )


def build(figures: CityFigures) -> dash.Dashboard:
    """The flood board."""
    default = figures.flood_stages.steps()
    tide = "|".join(figures.tide_gauges) or "none"
    tide_where = f'"device_id" =~ /^({tide})$/'
    return (
        board(UID, "Kotahub / Flood", "River, canal and tide gauges, rain and pump houses.")
        .with_variable(rollup_variable())
        .with_variable(kecamatan_variable())
        .with_variable(device_variable("flood"))
        # The gauges with stages in the registry: one repeated panel each below.
        .with_variable(tag_variable("gauge", "Gauge", MEASUREMENT, "device_id"))
        .with_row(section("Water levels"))
        .with_panel(
            series(
                "Water level per gauge",
                InfluxQL(
                    'SELECT mean("level_m") AS "level_m" FROM '
                    f"{rollup('flood')} WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "device_id" fill(none)'
                ).alias("$tag_device_id"),
                unit="lengthm",
                w=16,
                h=9,
                thresholds=default,
                description="Stage lines: the city's default Siaga 4 to Siaga 1 "
                "(city_figures.json); each gauge's own are on its panel below.",
            )
        )
        .with_panel(
            bars(
                "Level now against stage (last hour)",
                InfluxQL(
                    'SELECT last("level_m") AS "level_m" FROM "flood" '
                    f'WHERE {WHERE} AND time > now() - 1h GROUP BY "device_id"'
                ).alias("$tag_device_id"),
                unit="lengthm",
                w=8,
                h=9,
                thresholds=default,
            )
        )
        .with_row(section("Each gauge against its own stages (registry)"))
        .with_panel(
            rows(
                "Stages per gauge (registry)",
                _stages_query(WHERE),
                w=24,
                h=5,
                description="siaga4_m..siaga1_m of each gauge in the registry, the values "
                "the flood-stage alert rule reads; they follow a registry change within "
                "seconds.",
            )
        )
        .with_panel(
            series(
                "Level and stages: $gauge",
                InfluxQL(
                    'SELECT mean("level_m") AS "level_m" FROM '
                    f"{rollup('flood')} WHERE {GAUGE} AND $timeFilter "
                    "GROUP BY time($__interval) fill(none)"
                ).alias("$gauge"),
                _stages_query(GAUGE).table(),
                unit="lengthm",
                w=8,
                h=7,
                thresholds=default,
                description="One panel per selected gauge; its Siaga 4 to Siaga 1 lines are "
                "the gauge's registry attributes (query B, Config from query results).",
            )
            .repeat("gauge")
            .repeat_direction("h")
            .max_per_row(3)
            .with_transformation(_stages_from_registry())
        )
        .with_row(section("Rain and pumps"))
        .with_panel(
            single(
                "Pumps running now",
                InfluxQL(
                    'SELECT sum("pumps_running") AS "pumps_running" FROM '
                    '(SELECT last("pumps_running") AS "pumps_running" FROM "flood" '
                    f'WHERE {WHERE} AND {RECENT} GROUP BY "device_id")'
                ),
                w=4,
                thresholds=[(None, "blue")],
            )
        )
        .with_panel(
            single(
                "Most rain at a gauge, last hour",
                InfluxQL(
                    'SELECT max("rain_mm") AS "rain_mm" FROM '
                    '(SELECT sum("rain_mm") AS "rain_mm" FROM "flood" '
                    f'WHERE {WHERE} AND time > now() - 1h GROUP BY "device_id")'
                ),
                unit="lengthmm",
                w=4,
                thresholds=[(None, "green"), (20, "yellow"), (50, "red")],
            )
        )
        .with_panel(
            single(
                "Gauges reporting (last hour)",
                InfluxQL(
                    'SELECT count("level_m") AS "gauges" FROM '
                    '(SELECT last("level_m") AS "level_m" FROM "flood" '
                    f'WHERE {KECAMATAN} AND time > now() - 1h GROUP BY "device_id")'
                ),
                w=4,
                thresholds=[(None, "red"), (1, "green")],
            )
        )
        .with_panel(
            rows(
                "Sensor status and battery",
                InfluxQL(
                    'SELECT last("sensor_status") AS "sensor_status", '
                    'last("battery_v") AS "battery_v" FROM "flood" '
                    f'WHERE {WHERE} AND time > now() - 1d GROUP BY "device_id"'
                ),
                w=12,
                h=4,
            )
        )
        .with_panel(
            series(
                "Rain per interval",
                InfluxQL(
                    'SELECT sum("rain_mm") AS "rain_mm" FROM '
                    f"{rollup('flood')} WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "device_id" fill(none)'
                ).alias("$tag_device_id"),
                unit="lengthmm",
                bars=True,
            )
        )
        .with_panel(
            series(
                "Pumps running",
                InfluxQL(
                    'SELECT sum("pumps_running") AS "pumps_running" FROM '
                    '(SELECT max("pumps_running") AS "pumps_running" FROM '
                    f"{rollup('flood')} WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "device_id") '
                    "WHERE $timeFilter GROUP BY time($__interval) fill(none)"
                ),
                stacked=True,
            )
        )
        .with_row(section("Tide (rob)"))
        .with_panel(
            series(
                "Tide level",
                InfluxQL(
                    'SELECT mean("level_m") AS "level_m" FROM '
                    f"{rollup('flood')} WHERE {tide_where} AND $timeFilter "
                    'GROUP BY time($__interval), "device_id" fill(none)'
                ).alias("$tag_device_id"),
                # The tide gauge's own stages (rob floods at 0.5-0.7 m): the river
                # default's 1.2-2.5 m lines would sit far above the whole tide.
                _stages_query(tide_where).table(),
                unit="lengthm",
                w=24,
                thresholds=default,
                description="Tide gauges listed in city_figures.json (tide_gauges); M2 period "
                "12.42 h. Stage lines: the tide gauge's registry stages (query B).",
            ).with_transformation(_stages_from_registry())
        )
    )
