"""Traffic (ATCS): controller mode, flash and alarms, detector volume and occupancy."""

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
    heat,
    kecamatan_variable,
    rollup,
    rollup_variable,
    rows,
    section,
    series,
    single,
    states,
)
from dashboards.grafana.city_figures import CityFigures
from dashboards.grafana.influxql_query import InfluxQL

UID = "kotahub-traffic"
WHERE = f"{KECAMATAN} AND {DEVICE}"
MODE_COLOURS = {
    "system_control": "green",
    "interconnect": "green",
    "timebase": "blue",
    "system_standby": "yellow",
    "backup_mode": "orange",
    "interconnect_backup": "orange",
    "manual": "purple",
    "other": "red",
}


# The detector heatmaps: 300 columns (5-minute buckets over a day, 2-hour over 30 days)
# instead of 1,000: a heatmap shows no more in 1-minute cells, and the occupancy's 54
# sites x 1,440 minutes took 1.4-1.5 s over a day at full size. Never under the
# detectors' period: a 20-second bucket of 1-minute counts is mostly empty (or 0).
DETECTOR_POINTS = 300
DETECTOR_PERIOD = "1m"
DETECTOR_NOTE = (
    "Up to 300 columns, none under the detectors' 1-minute period: 5-minute buckets over "
    "a day, 2-hour over 30 days."
)


def _controllers_where(condition: str) -> InfluxQL:
    return InfluxQL(
        f'SELECT count("{condition}") AS "controllers" FROM '
        f'(SELECT last("{condition}") AS "{condition}" FROM "atcs" '
        f'WHERE {KECAMATAN} AND {RECENT} GROUP BY "device_id") WHERE "{condition}" = true'
    )


def build(figures: CityFigures) -> dash.Dashboard:
    """The ATCS board."""
    return (
        board(UID, "Kotahub / Traffic (ATCS)", "Signal controllers and their detectors.")
        .with_variable(rollup_variable())
        .with_variable(kecamatan_variable())
        .with_variable(device_variable("atcs"))
        .with_row(section("Controllers now"))
        .with_panel(
            single(
                "Controllers reporting (15 min)",
                InfluxQL(
                    'SELECT count("control_mode") AS "controllers" FROM '
                    '(SELECT last("control_mode") AS "control_mode" FROM "atcs" '
                    f'WHERE {KECAMATAN} AND {RECENT} GROUP BY "device_id")'
                ),
                w=6,
                thresholds=[(None, "red"), (1, "green")],
                description=f"Of {figures.signalised_intersections} signalised intersections.",
            )
        )
        .with_panel(
            single(
                "In flash",
                _controllers_where("flash"),
                w=6,
                thresholds=[(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            single(
                "Critical alarm",
                _controllers_where("alarm_critical"),
                w=6,
                thresholds=[(None, "green"), (1, "red")],
            )
        )
        .with_panel(
            single(
                "Detector fault alarm",
                _controllers_where("alarm_detector_fault"),
                w=6,
                thresholds=[(None, "green"), (1, "orange")],
            )
        )
        .with_panel(
            states(
                "Control mode",
                InfluxQL(
                    'SELECT last("control_mode") AS "control_mode" FROM '
                    f"{rollup('atcs')} WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "device_id" fill(none)'
                ).alias("$tag_device_id"),
                mappings=MODE_COLOURS,
            )
        )
        .with_panel(
            states(
                "Flash",
                InfluxQL(
                    'SELECT last("flash") AS "flash" FROM '
                    f"{rollup('atcs')} WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "device_id" fill(none)'
                ).alias("$tag_device_id"),
                mappings={"false": "green", "true": "red"},
            )
        )
        .with_panel(
            rows(
                "Alarms now",
                InfluxQL(
                    'SELECT last("flash_state") AS "flash_state", '
                    'last("pattern_mode") AS "pattern_mode", '
                    'last("alarm_critical") AS "alarm_critical", '
                    'last("alarm_detector_fault") AS "alarm_detector_fault", '
                    'last("alarm_coord_fail") AS "alarm_coord_fail" FROM "atcs" '
                    f'WHERE {WHERE} AND {RECENT} GROUP BY "device_id", "site"'
                ),
            )
        )
        .with_panel(
            series(
                "Cycle length",
                InfluxQL(
                    'SELECT mean("cycle_s") AS "cycle_s" FROM '
                    f"{rollup('atcs')} WHERE {WHERE} AND $timeFilter "
                    'GROUP BY time($__interval), "device_id" fill(none)'
                ).alias("$tag_device_id"),
                unit="s",
            )
        )
        .with_row(section("Detectors"))
        .with_panel(
            heat(
                "Detector volume by intersection (vehicles per interval)",
                InfluxQL(
                    'SELECT sum("volume") AS "volume" FROM '
                    f"{rollup('atcs_detector')} WHERE {KECAMATAN} AND $timeFilter "
                    'GROUP BY time($__interval), "site" fill(0)'
                ).alias("$tag_site"),
                min_interval=DETECTOR_PERIOD,
                max_points=DETECTOR_POINTS,
                description=DETECTOR_NOTE,
            )
        )
        .with_panel(
            heat(
                "Detector occupancy by intersection",
                InfluxQL(
                    'SELECT mean("occupancy_pct") AS "occupancy_pct" FROM '
                    f"{rollup('atcs_detector')} WHERE {KECAMATAN} AND $timeFilter "
                    'GROUP BY time($__interval), "site" fill(none)'
                ).alias("$tag_site"),
                unit="percent",
                min_interval=DETECTOR_PERIOD,
                max_points=DETECTOR_POINTS,
                description=DETECTOR_NOTE,
            )
        )
        .with_panel(
            rows(
                "Detector faults (last hour)",
                InfluxQL(
                    'SELECT last("fault") AS "fault" FROM "atcs_detector" '
                    f"WHERE {KECAMATAN} AND time > now() - 1h AND \"fault\" != 'ok' "
                    'GROUP BY "device_id", "site", "detector"'
                ),
                w=24,
                h=6,
            )
        )
    )
