"""Flood: levels against each gauge's stages, rain, pumps running, tide (rob)."""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
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
)
from dashboards.grafana.city_figures import DEFAULT_STAGE, CityFigures
from dashboards.grafana.influxql_query import InfluxQL

UID = "kotahub-flood"
WHERE = f"{KECAMATAN} AND {DEVICE}"


def _stage_overrides(
    figures: CityFigures,
) -> list[cogbuilder.Builder[dashboard.DashboardFieldConfigSourceOverrides]]:
    """Each gauge with stages of its own gets them as its series' thresholds."""
    out: list[cogbuilder.Builder[dashboard.DashboardFieldConfigSourceOverrides]] = []
    for device_id, stages in sorted(figures.flood_stages.items()):
        if device_id == DEFAULT_STAGE:
            continue
        steps = [dashboard.Threshold(value=v, color=c) for v, c in stages.steps()]
        thresholds = dashboard.ThresholdsConfig(mode=dashboard.ThresholdsMode.ABSOLUTE, steps=steps)
        out.append(
            dash.DashboardFieldConfigSourceOverrides()
            .matcher(dashboard.MatcherConfig(id_val="byName", options=device_id))
            .properties([dashboard.DynamicConfigValue(id_val="thresholds", value=thresholds)])
        )
    return out


def build(figures: CityFigures) -> dash.Dashboard:
    """The flood board."""
    default = figures.stages_for(DEFAULT_STAGE).steps()
    overrides = _stage_overrides(figures)
    tide = "|".join(figures.tide_gauges) or "none"
    return (
        board(UID, "Kotahub / Flood", "River, canal and tide gauges, rain and pump houses.")
        .with_variable(rollup_variable())
        .with_variable(kecamatan_variable())
        .with_variable(device_variable("flood"))
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
                description="Stage lines Siaga 4 to Siaga 1: the gauge's own where "
                "city_figures.json gives them (the registry tags the alert rule reads).",
            ).overrides(overrides)
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
            ).overrides(overrides)
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
                    f'{rollup("flood")} WHERE "device_id" =~ /^({tide})$/ AND $timeFilter '
                    'GROUP BY time($__interval), "device_id" fill(none)'
                ).alias("$tag_device_id"),
                unit="lengthm",
                w=24,
                thresholds=default,
                description="Tide gauges listed in city_figures.json (tide_gauges); M2 period "
                "12.42 h, rob floods at 0.5-0.7 m.",
            )
        )
    )
