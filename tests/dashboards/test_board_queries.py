"""Every panel's InfluxQL, filled as Grafana fills it, against the real InfluxDB.

The module's database holds a small simulated city (every family, the hub's own
measurements, alert events) and its rollups; a query that fails, names an unknown
measurement or field, or returns nothing fails the test.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboards.grafana.board_queries import (
    annotation_statements,
    load_boards,
    run_board,
    variable_statements,
    variable_values,
)
from dashboards.grafana.demo_points import CitySize, city_lines, devices
from dashboards.grafana.grafana_interpolation import (
    ALL,
    Interpolator,
    TimeRange,
    format_variable,
    grafana_interval_ms,
    interval_text,
    select_columns,
)
from drivers.framework import discover_families
from hub.influx_rollups import PENDING_FAMILY_FIELDS
from hub.ingest.area_totals import MEASUREMENT as AREA_TOTALS
from hub.ingest.area_totals import area_fields
from hub.registry_thresholds import MEASUREMENT as THRESHOLDS
from hub.registry_thresholds import STAGES
from tests.dashboards.conftest import CityDb

BOARDS = load_boards()
DAY_MS = 86_400_000


def _ranges(city: CityDb) -> dict[str, TimeRange]:
    return {
        "6h": TimeRange(from_ms=city.end_ms - 6 * 3_600_000, to_ms=city.end_ms + 60_000),
        "30d": TimeRange(from_ms=city.end_ms - 30 * DAY_MS, to_ms=city.end_ms + 60_000),
    }


def test_all_boards_are_there() -> None:
    assert set(BOARDS) == {
        "kotahub-overview",
        "kotahub-flood",
        "kotahub-traffic",
        "kotahub-cctv",
        "kotahub-wifi",
        "kotahub-fleet",
        "kotahub-hub",
        "kotahub-indicators",
    }


@pytest.mark.parametrize("uid", sorted(BOARDS))
@pytest.mark.parametrize("span", ["6h", "30d"])
def test_every_panel_query_returns_its_fields(city_db: CityDb, uid: str, span: str) -> None:
    board = BOARDS[uid]
    results = list(run_board(board, city_db.stack.influx, city_db.name, _ranges(city_db)[span]))
    assert results, f"{uid} has no queries"
    problems = [p for r in results for p in r.problems()]
    assert not problems, "\n".join(problems)


def test_long_ranges_read_the_rollups(city_db: CityDb) -> None:
    board = BOARDS["kotahub-flood"]
    ranges = _ranges(city_db)
    raw, _ = variable_values(board, city_db.stack.influx, city_db.name, ranges["6h"])
    long, _ = variable_values(board, city_db.stack.influx, city_db.name, ranges["30d"])
    week = TimeRange(from_ms=city_db.end_ms - 3 * DAY_MS, to_ms=city_db.end_ms)
    mid, _ = variable_values(board, city_db.stack.influx, city_db.name, week)
    assert (raw["rollup"], mid["rollup"], long["rollup"]) == ("autogen", "rollup_1m", "rollup_1h")
    statements = [
        r.statement for r in run_board(board, city_db.stack.influx, city_db.name, ranges["30d"])
    ]
    assert any('"rollup_1h"."flood"' in s for s in statements)


def test_panels_of_many_dense_series_read_coarser_rollups(city_db: CityDb) -> None:
    # $rollup_coarse (fleet): the policy of a range 12 times as long as $rollup's (flood).
    chosen = {}
    for hours in (1, 6, 24):
        span = TimeRange(from_ms=city_db.end_ms - hours * 3_600_000, to_ms=city_db.end_ms)
        policies = [
            variable_values(BOARDS[uid], city_db.stack.influx, city_db.name, span)[0][name]
            for uid, name in (("kotahub-flood", "rollup"), ("kotahub-fleet", "rollup_coarse"))
        ]
        chosen[hours] = tuple(policies)
    assert chosen == {
        1: ("autogen", "autogen"),
        6: ("autogen", "rollup_1m"),
        24: ("rollup_1m", "rollup_1h"),
    }


def test_nvr_panels_count_the_nvrs_of_each_kecamatan(city_db: CityDb) -> None:
    # The test city's two NVRs: nvr-0000 in Banyumanik records, nvr-0001 in Candisari
    # does not and has lost a channel's video (demo_points).
    results = run_board(
        BOARDS["kotahub-cctv"], city_db.stack.influx, city_db.name, _ranges(city_db)["6h"]
    )
    by_title = {str(r.panel["title"]): r for r in results}

    def per_kecamatan(title: str) -> dict[str, float]:
        return {s.tags["kecamatan"]: s.values[-1][1] for s in by_title[title].series}

    assert per_kecamatan("NVRs not recording, by kecamatan") == {"Banyumanik": 0, "Candisari": 1}
    assert per_kecamatan("NVR channels with video loss, by kecamatan") == {
        "Banyumanik": 0,
        "Candisari": 1,
    }
    fullest = per_kecamatan("Fullest NVR disk, by kecamatan")
    assert set(fullest) == {"Banyumanik", "Candisari"}
    assert 42 <= fullest["Banyumanik"] <= 58  # 50 % +- 8 (kecamatan 0)
    assert 47 <= fullest["Candisari"] <= 63


def test_multi_value_selection_narrows_the_series(city_db: CityDb) -> None:
    board = BOARDS["kotahub-flood"]
    chosen = ["Banyumanik", "Candisari"]
    results = run_board(
        board,
        city_db.stack.influx,
        city_db.name,
        _ranges(city_db)["6h"],
        selection={"kecamatan": chosen},
    )
    level = next(r for r in results if r.panel["title"] == "Water level per gauge")
    assert "=~ /^(Banyumanik|Candisari)$/" in level.statement
    gauges = {s.tags["device_id"] for s in level.series}
    wanted = {
        d.device_id
        for d in devices(CitySize())
        if d.family == "flood"
        and d.tags["kecamatan"] in chosen
        and "rain" not in d.device_id
        and "pump" not in d.device_id
    }
    assert gauges == wanted


def test_variable_and_annotation_queries_answer(city_db: CityDb) -> None:
    tr = _ranges(city_db)["6h"]
    for uid, board in BOARDS.items():
        values, _ = variable_values(board, city_db.stack.influx, city_db.name, tr)
        for statement in variable_statements(board, tr, values):
            answer = city_db.stack.influx.query(statement, database=city_db.name)
            assert answer, f"{uid}: variable query empty: {statement}"
            assert answer[0].values, statement
        for statement in annotation_statements(board, tr):
            rows = city_db.stack.influx.rows(statement, database=city_db.name)
            assert {r["event"] for r in rows} >= {"raise", "ack", "clear"}, statement
            assert all(r["message"] for r in rows)


def test_a_broken_query_is_caught(city_db: CityDb) -> None:
    board = BOARDS["kotahub-flood"]
    broken = {
        **board,
        "panels": [
            {
                **p,
                "targets": [
                    {**t, "query": t["query"].replace('"level_m"', '"level_mm"')}
                    for t in p.get("targets", [])
                ],
            }
            for p in board["panels"]
        ],
    }
    results = list(run_board(broken, city_db.stack.influx, city_db.name, _ranges(city_db)["6h"]))
    assert any(r.problems() for r in results)


def test_demo_fields_are_in_the_metric_tables() -> None:
    families = discover_families()
    tables = {name: set(f.metric_schema()) for name, f in families.items()}
    for name, fields in PENDING_FAMILY_FIELDS.items():
        tables.setdefault(name, set(fields))
    hub_measurements = {"device_status", "hub", "deadletter", "alert", "fleet_online"}
    tables[THRESHOLDS] = set(STAGES)  # the hub's registry_thresholds writes these
    # The hub's area_totals fields, from the families' declarations (area_totals.py).
    tables[AREA_TOTALS] = set(area_fields(families.values()))
    written: dict[str, set[str]] = {}
    for text in city_lines(CitySize(), start_ms=0, end_ms=600_000):
        head, field_text, _ = text.rsplit(" ", 2)
        measurement = head.split(",", 1)[0]
        keys = {kv.split("=", 1)[0] for kv in re.split(r",(?=[a-z_]+=)", field_text)}
        written.setdefault(measurement, set()).update(keys)
    for measurement, keys in written.items():
        if measurement in hub_measurements:
            continue
        assert keys <= tables[measurement], (measurement, keys - tables[measurement])


def test_interval_follows_grafana_steps() -> None:
    assert interval_text(grafana_interval_ms(6 * 3_600_000)) == "20s"
    assert interval_text(grafana_interval_ms(30 * DAY_MS)) == "30m"
    assert interval_text(grafana_interval_ms(15 * 60_000)) == "10s"  # data source minimum
    assert select_columns('SELECT last("a") AS "x", "b" FROM (SELECT 1 AS "y" FROM m)') == [
        "x",
        "b",
    ]


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5))
def test_multi_value_regex_matches_exactly_the_chosen_values(values: list[str]) -> None:
    pattern = "^" + format_variable(values, ".*") + "$"
    for value in values:
        assert re.fullmatch(pattern, value, flags=re.DOTALL)
    assert not re.fullmatch(pattern, "\x00".join(values) + "\x01", flags=re.DOTALL)


def test_all_with_custom_value_is_not_escaped() -> None:
    fill = Interpolator(
        time_range=TimeRange(from_ms=0, to_ms=3_600_000),
        values={"kecamatan": ALL},
        all_values={"kecamatan": ".*"},
    ).fill
    assert fill('"kecamatan" =~ /^$kecamatan$/ AND $timeFilter') == (
        '"kecamatan" =~ /^.*$/ AND time >= 0ms and time <= 3600000ms'
    )


def test_a_repeated_panel_runs_as_its_first_copy(city_db: CityDb) -> None:
    flood = load_boards()["kotahub-flood"]
    results = [
        r
        for r in run_board(flood, city_db.stack.influx, city_db.name, _ranges(city_db)["6h"])
        if r.panel.get("repeat") == "gauge"
    ]
    assert results
    assert {r.repeated for r in results} == {("gauge", "smg-gauge-000")}
    stages = next(r for r in results if "flood_threshold" in r.statement)
    assert [s.tags["device_id"] for s in stages.series] == ["smg-gauge-000"]
