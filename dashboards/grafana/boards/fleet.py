"""Fleet: BRT buses and garbage trucks on a map, speed, late and stopped vehicles."""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.grafana.board_kit import (
    COARSE_NOTE,
    DEVICE,
    board,
    city_map,
    device_variable,
    rollup,
    rollup_variable,
    rows,
    section,
    series,
    single,
)
from dashboards.grafana.city_figures import CityFigures
from dashboards.grafana.influxql_query import DATASOURCE, InfluxQL

UID = "kotahub-fleet"
TEAM = '"team" =~ /^$team$/'
WHERE = f"{TEAM} AND {DEVICE}"


def team_variable() -> dash.QueryVariable:
    """Which fleet: the registry team that runs the vehicles (BRT operator, DLH)."""
    return (
        dash.QueryVariable("team")
        .label("Fleet")
        .datasource(DATASOURCE)
        .query('SHOW TAG VALUES FROM "gps" WITH KEY = "team"')
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


# A vehicle farther than this from its route is off it (GPS error in streets is ~10-30 m).
OFF_ROUTE_M = 200
# The per-vehicle panels draw a line per vehicle (hundreds in a city): 100 points a line
# (6-hour buckets over 30 days) cost InfluxDB and Grafana a tenth of 1,000 (1.2-2.9 s at
# full size) and show hundreds of lines as well; they and the fleet means read the
# coarse rollups (board_kit.COARSE: hourly from 14 hours, 300 vehicles' 1-minute
# rollups over a day took 1.0-1.4 s).
PER_VEHICLE_POINTS = 100
PER_VEHICLE = (
    "One line per vehicle, up to 100 points each. " + COARSE_NOTE + " Choose vehicles with "
    "the Device filter and a range under 14 hours for finer detail."
)


def build(figures: CityFigures) -> dash.Dashboard:
    """The fleet board."""
    return (
        board(UID, "Kotahub / Fleet", "BRT buses and garbage trucks.", time_from="now-3h")
        .with_variable(rollup_variable(coarse=True))
        .with_variable(team_variable())
        .with_variable(device_variable("gps", narrowed_by=TEAM))
        .with_row(section("Where"))
        .with_panel(
            city_map(
                "Vehicles now (last 15 min)",
                InfluxQL(
                    'SELECT last("lat") AS "lat", last("lon") AS "lon", '
                    'last("speed_kmh") AS "speed_kmh" FROM "gps" '
                    f'WHERE {WHERE} AND time > now() - 15m GROUP BY "device_id", "team"'
                ),
                center=figures.map_center,
                w=16,
                h=14,
                thresholds=[(None, "red"), (5, "yellow"), (15, "green")],
            )
        )
        .with_panel(
            single(
                "Vehicles reporting (5 min)",
                InfluxQL(
                    'SELECT count("lat") AS "vehicles" FROM '
                    f'(SELECT last("lat") AS "lat" FROM "gps" WHERE {WHERE} '
                    'AND time > now() - 5m GROUP BY "device_id")'
                ),
                w=8,
                h=4,
                thresholds=[(None, "red"), (1, "green")],
            )
        )
        .with_panel(
            rows(
                "Late: trackers the hub marked offline",
                InfluxQL(
                    'SELECT "online", "reason" FROM '
                    '(SELECT last("online") AS "online", last("reason") AS "reason" '
                    'FROM "device_status" WHERE "family" = \'gps\' AND '
                    f'{WHERE} AND time > now() - 30d GROUP BY "device_id", "team") '
                    'WHERE "online" = 0 GROUP BY "device_id", "team"'
                ),
                w=8,
                h=5,
                description="Silent for 3 expected intervals (offline_factor): late or off shift.",
            )
        )
        .with_panel(
            rows(
                "Stopped: under 2 km/h for 15 min",
                InfluxQL(
                    'SELECT "max_speed_kmh" FROM '
                    '(SELECT max("speed_kmh") AS "max_speed_kmh" FROM "gps" '
                    f'WHERE {WHERE} AND time > now() - 15m GROUP BY "device_id", "team") '
                    'WHERE "max_speed_kmh" < 2 GROUP BY "device_id", "team"'
                ),
                w=8,
                h=5,
            )
        )
        .with_row(section("Off route"))
        .with_panel(
            rows(
                f"Off route now: over {OFF_ROUTE_M} m (15 min)",
                InfluxQL(
                    'SELECT "off_route_m" FROM '
                    '(SELECT last("off_route_m") AS "off_route_m" FROM "gps" '
                    f'WHERE {WHERE} AND time > now() - 15m GROUP BY "device_id", "team") '
                    f'WHERE "off_route_m" > {OFF_ROUTE_M} GROUP BY "device_id", "team"'
                ),
                w=8,
                h=6,
                description="off_route_m: metres from the vehicle's route (registry tag "
                "'route', geometry in drivers/gps/routes.json).",
            )
        )
        .with_panel(
            series(
                "Distance from route per vehicle",
                InfluxQL(
                    f'SELECT max("off_route_m") AS "off_route_m" FROM {rollup("gps", coarse=True)} '
                    f"WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "device_id" fill(none)'
                ).alias("$tag_device_id"),
                unit="lengthm",
                w=16,
                h=6,
                thresholds=[(None, "green"), (OFF_ROUTE_M, "red")],
                max_points=PER_VEHICLE_POINTS,
                description=PER_VEHICLE,
            )
        )
        .with_row(section("Speed"))
        .with_panel(
            series(
                "Speed per vehicle",
                InfluxQL(
                    f'SELECT mean("speed_kmh") AS "speed_kmh" FROM {rollup("gps", coarse=True)} '
                    f"WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "device_id" fill(none)'
                ).alias("$tag_device_id"),
                unit="velocitykmh",
                w=16,
                max_points=PER_VEHICLE_POINTS,
                description=PER_VEHICLE,
            )
        )
        .with_panel(
            series(
                "Mean speed per fleet",
                InfluxQL(
                    f'SELECT mean("speed_kmh") AS "speed_kmh" FROM {rollup("gps", coarse=True)} '
                    f"WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "team" fill(none)'
                ).alias("$tag_team"),
                unit="velocitykmh",
                w=8,
                description="The mean of the fleet's fixes per bucket. " + COARSE_NOTE,
            )
        )
    )
