"""What every board shares: variables, filters, the alert annotation and panel builders.

Queries are raw InfluxQL with Grafana's macros (``$timeFilter``, ``$__interval``) and
variables in regex form (``=~ /^$kecamatan$/``), which Grafana fills with ``(a|b)`` for a
multi-value selection and with ``.*`` for All. Time series read ``"$rollup"."<family>"``:
the hidden ``rollup`` variable names the retention policy that serves the chosen time
range (``hub/influx_rollups.py`` writes the ``rp_config`` rows it reads).
"""

# The queries are InfluxQL built from constants, not from input (no injection).
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from grafana_foundation_sdk.builders import (
    bargauge,
    geomap,
    heatmap,
    stat,
    statetimeline,
    table,
    text,
    timeseries,
)
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models import text as text_models

from dashboards.grafana.influxql_query import DATASOURCE, InfluxQL

Thresholds = Sequence[tuple[float | None, str]]

KECAMATAN = '"kecamatan" =~ /^$kecamatan$/'
DEVICE = '"device_id" =~ /^$device$/'
FAMILY = '"family" =~ /^$family$/'
# Raw points of the last minutes, for "now" panels (the default policy holds raw data).
RECENT = "time > now() - 15m"
BOARD_TAGS = ["kotahub"]

# The alert engine's events (docs/architecture.md, "The alert measurement").
ALERT_QUERY = (
    'SELECT "message", "stage", "event", "rule_id", "severity", "device_id" FROM "alert" '
    f"WHERE $timeFilter AND {KECAMATAN}"
)
ALERT_TAGS = "event,rule_id,severity,device_id"
# An alert is open while its newest event is neither a clear nor a resolve.
OPEN_ALERT = "\"event\" != 'clear' AND \"event\" != 'resolve'"


# The hub's counts of devices online per family and kecamatan, one point a minute per hub
# (docs/ingest.md, "fleet_online"): a few hundred series for a city, where each device's
# last device_status point is one series per device (16,400 for Semarang, ~1.9 s).
FLEET = "fleet_online"
# A hub writes every minute: five minutes leave room for a late write, and a hub stopped
# for longer drops out of the sums instead of being counted as it last was.
FLEET_NOW = "time > now() - 5m"
# Also by team (the owner): the CCTV board's share by owner sums over kecamatan.
FLEET_SERIES = '"hub", "family", "kecamatan", "team"'
# Buckets of at least two of a hub's minutes, so that each holds a point of every hub.
FLEET_STEP = "2m"
# A time series of the counts over every family, kecamatan and team: 150 points a line
# (10-minute buckets over a day, 6-hour over 30 days) instead of 1,000, since each series
# costs its buckets twice, in the subquery and in the sum: over a day of 39 series,
# 1,140 ms at 1-minute buckets, 331 at 5, 178 at 10 (1.2-1.8 s at full size at 1,000).
FLEET_POINTS = 150
FLEET_POINTS_NOTE = "Up to 150 points a line: 10-minute means over a day, 6-hour over 30 days."


def fleet_now(where: str) -> str:
    """A subquery: each hub's newest counts per family, kecamatan and team.

    A board sums ``online`` and ``devices`` over ``hub`` (and groups by ``family``,
    ``kecamatan`` or ``team``).
    """
    return (
        f'(SELECT last("online") AS "online", last("devices") AS "devices" FROM "{FLEET}" '
        f"WHERE {where} AND {FLEET_NOW} GROUP BY {FLEET_SERIES})"
    )


def fleet_over_time(where: str) -> str:
    """A subquery: each hub's mean counts per family, kecamatan and team per ``$__interval``.

    Reads ``$rollup`` (raw points, or the rollups' means for longer ranges); the panel
    sets ``min_interval=FLEET_STEP``.
    """
    return (
        f'(SELECT mean("online") AS "online", mean("devices") AS "devices" FROM {rollup(FLEET)} '
        f"WHERE {where} AND $timeFilter "
        f"GROUP BY time($__interval), {FLEET_SERIES} fill(none))"
    )


# The hub's totals per family and kecamatan of the metrics a family declares, one point a
# minute per hub (docs/ingest.md, "area_totals"): a sum over a kecamatan's access points
# or cameras reads a few series instead of one per device (28 s over 30 days for 2,300
# APs). Written on fleet_online's schedule: FLEET_NOW and FLEET_STEP fit it too.
AREA = "area_totals"
AREA_SERIES = '"hub", "kecamatan"'
# A panel reading area_totals says so: its totals have no device_id to filter on.
NO_DEVICE_FILTER = (
    "Read from the hubs' area_totals (sums per kecamatan each minute): the Device filter "
    "does not apply."
)


def area_over_time(family: str, *fields: str) -> str:
    """A subquery: each hub's mean of ``area_totals`` fields per kecamatan per ``$__interval``.

    Reads ``$rollup``; a board sums it over ``hub``, and the panel sets
    ``min_interval=FLEET_STEP``.
    """
    means = ", ".join(f'mean("{name}") AS "{name}"' for name in fields)
    return (
        f"(SELECT {means} FROM {rollup(AREA)} "
        f"WHERE \"family\" = '{family}' AND {KECAMATAN} AND $timeFilter "
        f"GROUP BY time($__interval), {AREA_SERIES} fill(none))"
    )


# Panels over many dense series (the fleet's vehicles report every 10-30 s) read the policy
# of a range this many times as long (``$rollup_coarse``): raw under 2 hours, 1-minute
# rollups up to 14 hours, hourly beyond. At 24 hours ``$rollup`` is the 1-minute policy,
# and 300 vehicles' minutes (432,000 points) took 1.0-1.4 s at full size.
COARSE_FACTOR = 12
COARSE = "rollup_coarse"
COARSE_NOTE = (
    "Reads coarser rollups than the board's other panels (its series are many and dense): "
    "raw points under 2 hours, 1-minute means up to 14 hours, hourly beyond."
)


def rollup(measurement: str, *, coarse: bool = False) -> str:
    """The measurement in the policy the time range calls for (``coarse``: see COARSE)."""
    return f'"${COARSE if coarse else "rollup"}"."{measurement}"'


def rollup_variable(*, coarse: bool = False) -> dash.QueryVariable:
    """Hidden: the retention policy for the current range, from ``rp_config``.

    ``coarse``: the policy of a range ``COARSE_FACTOR`` times as long (``$rollup_coarse``).
    """
    span = f"{COARSE_FACTOR} * $__range_ms" if coarse else "$__range_ms"
    return (
        dash.QueryVariable(COARSE if coarse else "rollup")
        .label("Retention policy, coarse" if coarse else "Retention policy")
        .datasource(DATASOURCE)
        .query(
            'SELECT "rp" FROM "forever"."rp_config" '
            f'WHERE "min_range_ms" <= {span} AND "max_range_ms" > {span}'
        )
        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .hide(dashboard.VariableHide.HIDE_VARIABLE)
    )


def _multi(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .multi(True)
        .include_all(True)
        # A custom All value is passed unformatted: every series, also those without the tag.
        .all_value(".*")
        .current(dashboard.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(dashboard.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
    )


def kecamatan_variable() -> dash.QueryVariable:
    """Kecamatan (district) filter, from the registry tags InfluxDB holds."""
    return _multi("kecamatan", "Kecamatan", 'SHOW TAG VALUES WITH KEY = "kecamatan"')


def family_variable() -> dash.QueryVariable:
    """Device family filter."""
    return _multi("family", "Family", 'SHOW TAG VALUES FROM "device_status" WITH KEY = "family"')


def tag_variable(
    name: str, label: str, measurement: str, key: str, narrowed_by: str = KECAMATAN
) -> dash.QueryVariable:
    """A multi-value filter over one tag's values in one measurement."""
    return _multi(
        name, label, f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "{key}" WHERE {narrowed_by}'
    )


def device_variable(measurement: str, narrowed_by: str = KECAMATAN) -> dash.QueryVariable:
    """Device filter for one measurement, narrowed by another variable (kecamatan)."""
    return _multi(
        "device",
        "Device",
        f'SHOW TAG VALUES FROM "{measurement}" WITH KEY = "device_id" WHERE {narrowed_by}',
    )


def board(uid: str, title: str, description: str, *, time_from: str = "now-6h") -> dash.Dashboard:
    """A board with Kotahub's defaults: tags, browser time zone, 1-minute refresh."""
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(BOARD_TAGS)
        .timezone("browser")
        .time(time_from, "now")
        .refresh("1m")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .readonly()
    )


def _thresholds(steps: Thresholds | None) -> dash.ThresholdsConfig:
    chosen = steps or ((None, "green"),)
    return (
        dash.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=v, color=c) for v, c in chosen])
    )


def series(
    title: str,
    *queries: InfluxQL,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    thresholds: Thresholds | None = None,
    description: str = "",
    stacked: bool = False,
    bars: bool = False,
    min_interval: str | None = None,
    max_points: int | None = None,
) -> timeseries.Panel:
    """A time series panel; thresholds are drawn as dashed lines.

    ``min_interval`` keeps ``$__interval`` at or above the devices' reporting interval, so
    a sum over devices sees each of them in every bucket (and a day costs fewer buckets).
    ``max_points`` (Grafana's "Max data points", 1,000 by default) widens the buckets of a
    panel with many series: each costs InfluxDB its buckets, and hundreds of lines show no
    more detail with 1,000 points each than with 200.
    """
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(h)
        .thresholds(_thresholds(thresholds))
        .span_nulls(True)
        .fill_opacity(20 if stacked else 8)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    )
    if thresholds:
        panel = panel.thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS)
    if min_interval:
        panel = panel.interval(min_interval)
    if max_points:
        panel = panel.max_data_points(max_points)
    for index, query in enumerate(queries):
        panel = panel.with_target(query.ref_id(chr(ord("A") + index)))
    return panel


def single(
    title: str,
    query: InfluxQL,
    *,
    unit: str = "short",
    w: int = 4,
    h: int = 4,
    thresholds: Thresholds | None = None,
    description: str = "",
    decimals: int | None = None,
) -> stat.Panel:
    """A stat: the last value, coloured by thresholds."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(h)
        .thresholds(_thresholds(thresholds))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .no_value("0")
        .with_target(query)
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    return panel


def bars(
    title: str,
    query: InfluxQL,
    *,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    thresholds: Thresholds | None = None,
    description: str = "",
    max_value: float | None = None,
) -> bargauge.Panel:
    """A bar gauge per series (per gauge, per family...), last value against thresholds."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(h)
        .thresholds(_thresholds(thresholds))
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .with_target(query)
    )
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def rows(
    title: str,
    query: InfluxQL,
    *,
    w: int = 12,
    h: int = 8,
    description: str = "",
    thresholds: Thresholds | None = None,
) -> table.Panel:
    """A table of the query's rows."""
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(w)
        .height(h)
        .thresholds(_thresholds(thresholds))
        .with_target(query.table())
    )


def states(
    title: str,
    query: InfluxQL,
    *,
    w: int = 12,
    h: int = 8,
    description: str = "",
    mappings: dict[str, str] | None = None,
) -> statetimeline.Panel:
    """A state timeline: one lane per series (controller mode, flash)."""
    panel = (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(w)
        .height(h)
        .show_value(common.VisibilityMode.AUTO)
        .with_target(query)
    )
    if mappings:
        panel = panel.mappings(
            [
                dashboard.ValueMap(
                    options={
                        value: dashboard.ValueMappingResult(color=colour, index=index)
                        for index, (value, colour) in enumerate(mappings.items())
                    }
                )
            ]
        )
    return panel


def heat(
    title: str,
    query: InfluxQL,
    *,
    unit: str = "short",
    w: int = 12,
    h: int = 9,
    description: str = "",
    min_interval: str | None = None,
    max_points: int | None = None,
) -> heatmap.Panel:
    """A heatmap whose rows are the query's series (one per intersection).

    ``min_interval`` and ``max_points`` bound its columns, as in ``series``.
    """
    panel = (
        heatmap.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(h)
        .calculate(False)
        .with_target(query)
    )
    if min_interval:
        panel = panel.interval(min_interval)
    if max_points:
        panel = panel.max_data_points(max_points)
    return panel


def city_map(
    title: str,
    query: InfluxQL,
    *,
    center: tuple[float, float],
    zoom: float = 11,
    w: int = 12,
    h: int = 12,
    lookup_gazetteer: str | None = None,
    thresholds: Thresholds | None = None,
    description: str = "",
) -> geomap.Panel:
    """A geomap: points from ``lat``/``lon`` columns, or kecamatan looked up in a gazetteer."""
    location = common_builders.FrameGeometrySource()
    if lookup_gazetteer is None:
        location = (
            location.mode(common.FrameGeometrySourceMode.COORDS).latitude("lat").longitude("lon")
        )
    else:
        location = (
            location.mode(common.FrameGeometrySourceMode.LOOKUP)
            .lookup("kecamatan")
            .gazetteer(lookup_gazetteer)
        )
    layer = (
        common_builders.MapLayerOptions()
        .type("markers")
        .name(title)
        .location(location)
        .tooltip(True)
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": "online" if lookup_gazetteer else "speed_kmh"},
                    "size": {"fixed": 8, "min": 4, "max": 20},
                    "opacity": 0.8,
                },
            }
        )
    )
    return (
        geomap.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(w)
        .height(h)
        .thresholds(_thresholds(thresholds))
        # The SDK types lat/lon/zoom as int; Grafana stores floats (a city needs decimals).
        .view(
            geomap.MapViewConfig()
            .id("coords")
            .lat(cast(int, center[0]))
            .lon(cast(int, center[1]))
            .zoom(cast(int, zoom))
        )
        .layers([layer])
        .with_target(query.table())
    )


def note(title: str, markdown: str, *, w: int = 24, h: int = 4) -> text.Panel:
    """A text panel (definitions, how to read a board)."""
    return (
        text.Panel()
        .title(title)
        .span(w)
        .height(h)
        .mode(text_models.TextMode.MARKDOWN)
        .content(markdown)
    )


def section(title: str) -> dash.Row:
    """A row header."""
    return dash.Row(title)
