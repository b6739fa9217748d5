"""City indicators in the spirit of SNI ISO 37122:2019 (definitions: docs/indicators.md).

Denominators (population, intersections, kelurahan, gauges, fleet) come from the city's
figures file on the registry side, so the same board serves another city.
"""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.grafana.board_kit import (
    board,
    note,
    rollup,
    rollup_variable,
    section,
    series,
    single,
)
from dashboards.grafana.city_figures import CityFigures
from dashboards.grafana.influxql_query import InfluxQL

UID = "kotahub-indicators"
SHARE = [(None, "red"), (50, "orange"), (80, "green")]


def _share(count_of: str, inner: str, total: int) -> str:
    return f'SELECT count("{count_of}") * 100 / {total} AS "share_pct" FROM ({inner})'


def indicator_queries(figures: CityFigures) -> dict[str, str]:
    """Each indicator's current value, as InfluxQL (also what docs/indicators.md quotes)."""
    transport = figures.public_transport
    return {
        "atcs_share": _share(
            "v",
            'SELECT last("control_mode") AS "v" FROM "atcs" WHERE time > now() - 1d '
            'GROUP BY "device_id"',
            figures.signalised_intersections,
        ),
        "wifi_per_100k": (
            f'SELECT count("up") * 100000 / {figures.population} AS "per_100k" FROM '
            '(SELECT last("up") AS "up" FROM "wifi" WHERE time > now() - 1d '
            'GROUP BY "device_id") WHERE "up" = true'
        ),
        "wifi_per_km2": (
            f'SELECT count("up") / {figures.area_km2} AS "per_km2" FROM '
            '(SELECT last("up") AS "up" FROM "wifi" WHERE time > now() - 1d '
            'GROUP BY "device_id") WHERE "up" = true'
        ),
        "kelurahan_camera_share": _share(
            "v",
            'SELECT last("stream_ok") AS "v" FROM "cctv" WHERE time > now() - 1d '
            'AND "stream_ok" = true GROUP BY "kelurahan"',
            figures.kelurahan_count,
        ),
        "flood_gauge_share": _share(
            "v",
            'SELECT last("level_m") AS "v" FROM "flood" WHERE time > now() - 1h '
            'GROUP BY "device_id"',
            figures.flood_gauges,
        ),
        "transport_realtime_share": _share(
            "v",
            'SELECT last("lat") AS "v" FROM "gps" WHERE time > now() - 5m '
            f'AND "team" = \'{transport.team}\' GROUP BY "device_id"',
            transport.vehicles,
        ),
    }


def _daily(count_of: str, field: str, measurement: str, extra: str, total: int) -> InfluxQL:
    return InfluxQL(
        f'SELECT count("{count_of}") * 100 / {total} AS "share_pct" FROM '
        f'(SELECT last("{field}") AS "{count_of}" FROM {rollup(measurement)} '
        f'WHERE {extra}$timeFilter GROUP BY time(1d), "device_id") '
        "WHERE $timeFilter GROUP BY time(1d) fill(none)"
    )


def build(figures: CityFigures) -> dash.Dashboard:
    """The indicators board."""
    queries = indicator_queries(figures)
    transport = figures.public_transport
    definitions = (
        f"**{figures.city}**, population {figures.population:,} ({figures.year}), "
        f"{figures.area_km2} km², {figures.kelurahan_count} kelurahan, "
        f"{figures.signalised_intersections} signalised intersections, "
        f"{figures.flood_gauges} flood gauges, {transport.vehicles} public-transport vehicles "
        f"(team `{transport.team}`). Definitions and sources: `docs/indicators.md`; figures: "
        "`device_registry/data/city_figures.json`."
    )
    return (
        board(
            UID,
            f"Kotahub / {figures.city} city indicators",
            "Smart-city indicators in the spirit of SNI ISO 37122:2019.",
            time_from="now-30d",
        )
        .with_variable(rollup_variable())
        .with_panel(note("About these indicators", definitions, h=3))
        .with_row(section("Now"))
        .with_panel(
            single(
                "Signalised intersections connected to ATCS",
                InfluxQL(queries["atcs_share"]),
                unit="percent",
                w=8,
                thresholds=SHARE,
                decimals=1,
            )
        )
        .with_panel(
            single(
                "Public WiFi hotspots per 100,000 residents",
                InfluxQL(queries["wifi_per_100k"]),
                w=8,
                thresholds=[(None, "blue")],
                decimals=1,
            )
        )
        .with_panel(
            single(
                "Public WiFi hotspots per km²",
                InfluxQL(queries["wifi_per_km2"]),
                w=8,
                thresholds=[(None, "blue")],
                decimals=2,
            )
        )
        .with_panel(
            single(
                "Kelurahan with a working camera",
                InfluxQL(queries["kelurahan_camera_share"]),
                unit="percent",
                w=8,
                thresholds=SHARE,
                decimals=1,
            )
        )
        .with_panel(
            single(
                "Flood gauges reporting (last hour)",
                InfluxQL(queries["flood_gauge_share"]),
                unit="percent",
                w=8,
                thresholds=SHARE,
                decimals=1,
            )
        )
        .with_panel(
            single(
                "Public-transport vehicles reporting in real time (5 min)",
                InfluxQL(queries["transport_realtime_share"]),
                unit="percent",
                w=8,
                thresholds=SHARE,
                decimals=1,
            )
        )
        .with_row(section("Per day"))
        .with_panel(
            series(
                "Share per day (devices seen that day)",
                _daily("v", "control_mode", "atcs", "", figures.signalised_intersections).alias(
                    "ATCS intersections"
                ),
                _daily("v", "level_m", "flood", "", figures.flood_gauges).alias("flood gauges"),
                _daily(
                    "v", "lat", "gps", f"\"team\" = '{transport.team}' AND ", transport.vehicles
                ).alias("public transport"),
                unit="percent",
                w=24,
                h=9,
                thresholds=SHARE,
            )
        )
    )
