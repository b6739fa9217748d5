"""Draw a board as a PNG without Grafana: its panels' real query answers in its grid layout.

Each panel is drawn where its ``gridPos`` puts it (24 columns), with its title, unit and
thresholds: time series as lines or bars with dashed threshold lines, stats as a coloured
value, bar gauges as bars coloured by threshold, tables as text, state timelines as
coloured lanes, heatmaps as cells, maps as points (no tiles: kecamatan and positions on a
plain lat/lon plane). It is a preview of what the situation room sees, not a Grafana
renderer: fonts, spacing and palette are matplotlib's.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from dashboards.grafana.board_queries import PanelResult

COLUMN_IN = 0.8
ROW_IN = 0.42
BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#d8d9da"
GRID = "#2c3235"
COLOURS = {
    "green": "#73bf69",
    "yellow": "#fade2a",
    "orange": "#ff9830",
    "red": "#f2495c",
    "blue": "#5794f2",
    "purple": "#b877d9",
}
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]
UNIT_SUFFIX = {
    "lengthm": " m",
    "lengthmm": " mm",
    "percent": " %",
    "percentunit": "",
    "s": " s",
    "bps": " bit/s",
    "bytes": " B",
    "velocitykmh": " km/h",
    "reqps": "/s",
}


def _num(when: Any) -> float:
    """A datetime as matplotlib's date number (mdates is untyped)."""
    return float(mdates.date2num(when))  # type: ignore[no-untyped-call]


def _date_format(pattern: str) -> Any:
    """A date tick formatter (mdates is untyped)."""
    return mdates.DateFormatter(pattern)  # type: ignore[no-untyped-call]


def _colour(name: str) -> str:
    return COLOURS.get(name, name)


def _steps(panel: Mapping[str, Any]) -> list[tuple[float | None, str]]:
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
    return [(s.get("value"), _colour(s.get("color", "green"))) for s in steps or []]


def _colour_for(value: float, steps: Sequence[tuple[float | None, str]]) -> str:
    chosen = COLOURS["green"]
    for limit, colour in steps:
        if limit is None or value >= limit:
            chosen = colour
    return chosen


def _unit(panel: Mapping[str, Any]) -> str:
    return str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))


def _format(value: Any, unit: str, decimals: int | None = None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, int | float):
        return str(value)
    if unit == "bytes":
        for size, suffix in ((1e9, " GB"), (1e6, " MB"), (1e3, " kB")):
            if abs(value) >= size:
                return f"{value / size:.1f}{suffix}"
    if unit == "bps":
        for size, suffix in ((1e9, " Gbit/s"), (1e6, " Mbit/s"), (1e3, " kbit/s")):
            if abs(value) >= size:
                return f"{value / size:.1f}{suffix}"
    if unit == "percentunit":
        return f"{value * 100:.0f} %"
    places = decimals if decimals is not None else (0 if float(value).is_integer() else 2)
    return f"{value:,.{places}f}{UNIT_SUFFIX.get(unit, '')}"


def _title(panel: Mapping[str, Any], results: Sequence[PanelResult]) -> str:
    """The panel's title; a repeated panel's copy names its value, as Grafana's does."""
    text = str(panel.get("title", ""))
    for result in results[:1]:
        if result.repeated:
            text = text.replace(f"${result.repeated[0]}", result.repeated[1])
    return text


def _label(result: PanelResult, series_tags: Mapping[str, str], column: str) -> str:
    alias = str(result.target.get("alias") or "")
    if result.repeated:
        alias = alias.replace(f"${result.repeated[0]}", result.repeated[1])
    if alias:
        text = alias
        for key, value in series_tags.items():
            text = text.replace(f"$tag_{key}", value)
        return text.replace("$col", column)
    if series_tags:
        return ", ".join(series_tags.values())
    return column


def _time_series(results: Sequence[PanelResult]) -> list[tuple[str, list[Any], list[Any]]]:
    """(label, times, values) of every numeric or state column of the answers."""
    out = []
    for result in results:
        for series in result.series:
            columns = series.columns
            for index, column in enumerate(columns):
                if column == "time":
                    continue
                times = [_to_datetime(row[0]) for row in series.values]
                values = [row[index] for row in series.values]
                out.append((_label(result, series.tags, column), times, values))
    return out


def _to_datetime(ms: int) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def _style(ax: Axes) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.tick_params(colors=TEXT, labelsize=7)
    ax.grid(color=GRID, linewidth=0.5)


def _config_from_data(
    panel: Mapping[str, Any], results: Sequence[PanelResult]
) -> tuple[Sequence[PanelResult], list[tuple[float | None, str]]]:
    """Grafana's "Config from query results": the config query's values become threshold
    steps (colours from the panel's own steps, in order) and it is not drawn as a series."""
    steps = _steps(panel)
    for transform in panel.get("transformations") or []:
        if transform.get("id") != "configFromData":
            continue
        options = transform.get("options", {})
        ref = options.get("configRefId")
        fields = [
            m["fieldName"]
            for m in options.get("mappings", [])
            if m.get("handlerKey") == "threshold1"
        ]
        config = [r for r in results if r.target.get("refId") == ref]
        found: list[float] = []
        for result in config:
            for series in result.series[:1]:
                row = series.values[-1] if series.values else []
                for name in fields:
                    value = row[series.columns.index(name)] if name in series.columns else None
                    if isinstance(value, int | float):
                        found.append(float(value))
        colours = [c for _v, c in steps[1:]] or [COLOURS["red"]]
        steps = steps[:1] + [(v, colours[min(i, len(colours) - 1)]) for i, v in enumerate(found)]
        results = [r for r in results if r.target.get("refId") != ref]
    return results, steps


def _draw_timeseries(ax: Axes, panel: Mapping[str, Any], results: Sequence[PanelResult]) -> None:
    _style(ax)
    results, steps = _config_from_data(panel, results)
    unit = _unit(panel)
    custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
    bars = custom.get("drawStyle")
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    # Stacked bars sit on the ones drawn before them at the same time.
    base: dict[Any, float] = {}
    drawn = 0
    for index, (label, times, values) in enumerate(_time_series(results)[:8]):
        points = [(t, v) for t, v in zip(times, values, strict=True) if isinstance(v, int | float)]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        colour = PALETTE[index % len(PALETTE)]
        if bars == "bars":
            bottoms = [base.get(x, 0.0) if stacked else 0.0 for x in xs]
            ax.bar(
                xs,
                ys,
                width=0.8 * _bar_width(xs),
                bottom=bottoms,
                color=colour,
                label=label,
                alpha=0.85,
            )
            if stacked:
                for x, y, b in zip(xs, ys, bottoms, strict=True):
                    base[x] = b + float(y)
        else:
            ax.plot(xs, ys, color=colour, linewidth=1.4, label=label)
        drawn += 1
    for limit, colour in steps:
        if limit is not None and len(steps) > 1:
            ax.axhline(limit, color=colour, linestyle="--", linewidth=1.0)
    ax.xaxis.set_major_formatter(_date_format("%H:%M\n%d %b"))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: _format(v, unit)))
    if drawn:
        ax.legend(
            fontsize=6.5,
            loc="upper left",
            ncol=min(drawn, 4),
            facecolor=PANEL,
            labelcolor=TEXT,
            framealpha=0.7,
            edgecolor=GRID,
        )
    else:
        _no_data(ax)


def _bar_width(xs: Sequence[Any]) -> float:
    if len(xs) < 2:
        return 0.01
    return float(_num(xs[1]) - _num(xs[0]))


def _values(results: Sequence[PanelResult]) -> list[tuple[str, Any]]:
    """(label, last non-null value) per series and column."""
    out = []
    for label, _times, values in _time_series(results):
        present = [v for v in values if v is not None]
        if present:
            out.append((label, present[-1]))
    return out


def _draw_stat(ax: Axes, panel: Mapping[str, Any], results: Sequence[PanelResult]) -> None:
    ax.set_axis_off()
    values = _values(results)
    unit = _unit(panel)
    if unit == "dateTimeFromNow":
        times = [s.values[-1][0] for r in results for s in r.series if s.values]
        if not times:
            _no_data(ax)
            return
        import time as _time

        age_s = max(0.0, _time.time() - times[-1] / 1000)
        text = f"{age_s / 60:.0f} min ago" if age_s >= 60 else f"{age_s:.0f} s ago"
        ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, color=COLOURS["blue"]))
        ax.text(
            0.5,
            0.45,
            text,
            ha="center",
            va="center",
            fontsize=15,
            color="white",
            weight="bold",
            transform=ax.transAxes,
        )
        return
    value = values[0][1] if values else 0
    colour = _colour_for(float(value), _steps(panel)) if isinstance(value, int | float) else PANEL
    decimals = panel.get("fieldConfig", {}).get("defaults", {}).get("decimals")
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, color=colour))
    ax.text(
        0.5,
        0.45,
        _format(value, unit, decimals),
        ha="center",
        va="center",
        fontsize=22,
        color="white",
        weight="bold",
        transform=ax.transAxes,
    )


def _draw_bargauge(ax: Axes, panel: Mapping[str, Any], results: Sequence[PanelResult]) -> None:
    _style(ax)
    ax.grid(False)
    values = [(label, v) for label, v in _values(results) if isinstance(v, int | float)][:14]
    if not values:
        _no_data(ax)
        return
    unit = _unit(panel)
    labels = [label for label, _ in values][::-1]
    numbers = [float(v) for _, v in values][::-1]
    colours = [_colour_for(v, _steps(panel)) for v in numbers]
    ax.barh(labels, numbers, color=colours)
    for y, v in enumerate(numbers):
        ax.text(v, y, " " + _format(v, unit), va="center", color=TEXT, fontsize=7)
    maximum = panel.get("fieldConfig", {}).get("defaults", {}).get("max")
    top = max([*numbers, *(s for s, _ in _steps(panel) if s is not None)])
    ax.set_xlim(0, maximum or top * 1.25 or 1)
    for limit, colour in _steps(panel):
        if limit is not None and len(_steps(panel)) > 1:
            ax.axvline(limit, color=colour, linestyle="--", linewidth=1.0)
    ax.tick_params(axis="y", labelsize=7)


def _draw_table(ax: Axes, panel: Mapping[str, Any], results: Sequence[PanelResult]) -> None:
    ax.set_axis_off()
    header: list[str] = []
    rows: list[list[str]] = []
    for result in results:
        for series in result.series:
            tag_keys = list(series.tags)
            columns = [c for c in series.columns if c != "time"]
            header = tag_keys + columns
            for row in series.values:
                cells = [series.tags[k] for k in tag_keys]
                cells += [
                    "-"
                    if row[series.columns.index(c)] is None
                    else _format(row[series.columns.index(c)], "")
                    for c in columns
                ]
                rows.append([textwrap.shorten(c, 28) for c in cells])
    if not rows:
        _no_data(ax)
        return
    shown = rows[:8]
    table = ax.table(cellText=shown, colLabels=header, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for (r, _c), cell in table.get_celld().items():
        cell.set_facecolor(PANEL if r else "#22252b")
        cell.set_edgecolor(GRID)
        cell.get_text().set_color(TEXT)
    if len(rows) > len(shown):
        ax.text(
            0.99,
            0.01,
            f"+{len(rows) - len(shown)} more rows",
            ha="right",
            color=TEXT,
            fontsize=7,
            transform=ax.transAxes,
        )


def _state_colour(panel: Mapping[str, Any], value: Any) -> str:
    for mapping in panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []) or []:
        option = mapping.get("options", {}).get(
            str(value).lower() if isinstance(value, bool) else str(value)
        )
        if option and option.get("color"):
            return _colour(option["color"])
    return PALETTE[hash(str(value)) % len(PALETTE)]


def _draw_states(ax: Axes, panel: Mapping[str, Any], results: Sequence[PanelResult]) -> None:
    _style(ax)
    lanes = _time_series(results)[:10]
    if not lanes:
        _no_data(ax)
        return
    for lane, (_label, times, values) in enumerate(lanes):
        for i, (t, v) in enumerate(zip(times, values, strict=True)):
            if v is None:
                continue
            end = times[i + 1] if i + 1 < len(times) else t
            width = max(_num(end) - _num(t), 1e-4)
            ax.barh(lane, width, left=_num(t), color=_state_colour(panel, v), height=0.8)
        last = next((v for v in reversed(values) if v is not None), "")
        ax.text(_num(times[-1]), lane, f" {last}", va="center", color=TEXT, fontsize=6)
    ax.set_yticks(range(len(lanes)), [label for label, _, _ in lanes])
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(_date_format("%H:%M"))


def _draw_heatmap(ax: Axes, panel: Mapping[str, Any], results: Sequence[PanelResult]) -> None:
    _style(ax)
    lanes = [lane for lane in _time_series(results) if lane[1]][:16]
    if not lanes:
        _no_data(ax)
        return
    width = max(len(times) for _, times, _ in lanes)
    grid = [
        [(v if isinstance(v, int | float) else float("nan")) for v in values]
        + [float("nan")] * (width - len(values))
        for _, _, values in lanes
    ]
    start, end = lanes[0][1][0], lanes[0][1][-1]
    image = ax.imshow(
        grid,
        aspect="auto",
        cmap="inferno",
        interpolation="nearest",
        extent=(_num(start), _num(end), len(lanes) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(lanes)), [label for label, _, _ in lanes])
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(_date_format("%H:%M"))
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    bar.ax.tick_params(colors=TEXT, labelsize=6)


def _draw_map(
    ax: Axes,
    panel: Mapping[str, Any],
    results: Sequence[PanelResult],
    gazetteer: Mapping[str, tuple[float, float]],
) -> None:
    _style(ax)
    steps = _steps(panel)
    drawn = False
    for name, (lat, lon) in gazetteer.items():
        ax.scatter([lon], [lat], s=12, color=GRID)
        ax.text(lon, lat, f" {name}", fontsize=5.5, color="#6c7079")
    for result in results:
        for series in result.series:
            cols = series.columns
            for row in series.values:
                record = dict(zip(cols, row, strict=True)) | series.tags
                if "lat" in record and record["lat"] is not None:
                    lat, lon = float(record["lat"]), float(record["lon"])
                    value = float(record.get("speed_kmh") or 0)
                    label = record.get("device_id", "")
                elif record.get("kecamatan") in gazetteer:
                    lat, lon = gazetteer[record["kecamatan"]]
                    value = float(record.get("online") or 0)
                    label = f"{record.get('online', 0):.0f}/{record.get('devices', 0):.0f}"
                else:
                    continue
                ax.scatter(
                    [lon],
                    [lat],
                    s=90,
                    color=_colour_for(value, steps),
                    edgecolor="white",
                    linewidth=0.6,
                    zorder=3,
                )
                ax.text(lon, lat, f"  {label}", fontsize=6.5, color=TEXT, zorder=4)
                drawn = True
    if not drawn:
        _no_data(ax)
    ax.set_xlabel("longitude", color=TEXT, fontsize=7)
    ax.set_ylabel("latitude", color=TEXT, fontsize=7)


def _draw_text(ax: Axes, panel: Mapping[str, Any]) -> None:
    ax.set_axis_off()
    content = str(panel.get("options", {}).get("content", "")).replace("**", "").replace("`", "")
    ax.text(
        0.01,
        0.85,
        textwrap.fill(content, 190),
        va="top",
        color=TEXT,
        fontsize=8,
        transform=ax.transAxes,
    )


def _no_data(ax: Axes) -> None:
    ax.text(
        0.5,
        0.5,
        "No data",
        ha="center",
        va="center",
        color="#8e8e8e",
        fontsize=11,
        transform=ax.transAxes,
    )


def render_board(
    board: Mapping[str, Any],
    results: Sequence[PanelResult],
    out: Path,
    *,
    gazetteer: Mapping[str, tuple[float, float]] | None = None,
    dpi: int = 72,
) -> Path:
    """Draw the board to ``out`` (PNG)."""
    panels = list(board.get("panels", []))
    by_panel: dict[int, list[PanelResult]] = {}
    for result in results:
        by_panel.setdefault(id(result.panel), []).append(result)
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    top_in = 1.2
    width_in, height_in = 24 * COLUMN_IN, top_in + bottom * ROW_IN + 0.3
    figure: Figure = plt.figure(figsize=(width_in, height_in), facecolor=BACKGROUND)
    figure.text(
        0.01,
        1 - 0.6 / height_in,
        str(board.get("title", "")),
        color=TEXT,
        fontsize=15,
        weight="bold",
        va="center",
    )
    figure.text(
        0.99,
        1 - 0.6 / height_in,
        "preview from the panels' InfluxQL on demo data",
        color="#8e8e8e",
        fontsize=8,
        ha="right",
        va="center",
    )
    for panel in panels:
        pos = panel["gridPos"]
        left = (pos["x"] * COLUMN_IN + 0.12) / width_in
        width = (pos["w"] * COLUMN_IN - 0.24) / width_in
        if panel.get("type") == "row":
            y = 1 - (top_in + pos["y"] * ROW_IN + 0.3) / height_in
            figure.text(
                0.01, y, str(panel.get("title", "")), color=TEXT, fontsize=11, weight="bold"
            )
            continue
        title_in = 0.32
        top = top_in + pos["y"] * ROW_IN + title_in
        height = pos["h"] * ROW_IN - title_in - 0.35
        kind = panel.get("type")
        # Axes with tick labels need room for them inside the panel's cell.
        inset_in = 0.75 if kind in ("timeseries", "heatmap", "state-timeline", "geomap") else 0.0
        inset_in = 1.6 if kind == "bargauge" else inset_in
        bottom_in = (
            0.3 if kind in ("timeseries", "heatmap", "state-timeline", "bargauge", "geomap") else 0
        )
        ax = figure.add_axes(
            (
                left + inset_in / width_in,
                1 - (top + height) / height_in + bottom_in / height_in,
                width - inset_in / width_in,
                (height - bottom_in) / height_in,
            )
        )
        figure.text(
            left,
            1 - (top - 0.08) / height_in,
            _title(panel, by_panel.get(id(panel), [])),
            color=TEXT,
            fontsize=9,
            weight="bold",
        )
        answers = by_panel.get(id(panel), [])
        if kind == "timeseries":
            _draw_timeseries(ax, panel, answers)
        elif kind == "stat":
            _draw_stat(ax, panel, answers)
        elif kind == "bargauge":
            _draw_bargauge(ax, panel, answers)
        elif kind == "table":
            _draw_table(ax, panel, answers)
        elif kind == "state-timeline":
            _draw_states(ax, panel, answers)
        elif kind == "heatmap":
            _draw_heatmap(ax, panel, answers)
        elif kind == "geomap":
            _draw_map(ax, panel, answers, gazetteer or {})
        elif kind == "text":
            _draw_text(ax, panel)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=dpi, facecolor=BACKGROUND)
    plt.close(figure)
    return out
