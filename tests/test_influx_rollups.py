"""Rollup policies and continuous queries on the real InfluxDB: values, idempotence, dry run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from drivers.framework import discover_families
from hub.cli import app
from hub.influx_rollups import (
    ROLLUP_LEVELS,
    SKIP_FIELDS,
    Kind,
    RollupError,
    RollupSetup,
    field_rollup,
    http_writer,
    measurement_fields,
)
from tests.conftest import RunningStack

MINUTE = 60_000
T0 = 1_796_000_000_000 - 1_796_000_000_000 % 3_600_000  # an hour boundary
FIELDS: dict[str, dict[str, Kind]] = {
    "flood": {
        "level_m": "number",
        "rain_mm": "number",
        "pumps_running": "integer",
        "pump_on": "boolean",
        "sensor_status": "string",
    }
}


def _setup(stack: RunningStack, database: str) -> RollupSetup:
    url = stack.settings.influx.url
    return RollupSetup(
        stack.influx, database=database, raw_policy="autogen", write=http_writer(url), fields=FIELDS
    )


def _write(stack: RunningStack, database: str, lines: list[str]) -> None:
    resp = httpx.post(
        f"{stack.settings.influx.url}/write",
        params={"db": database, "precision": "ms"},
        content="\n".join(lines).encode(),
    )
    assert resp.status_code == 204, resp.text


def test_rollups_hold_mean_min_max_sum_and_last(
    running_stack: RunningStack, influx_db: str
) -> None:
    setup = _setup(running_stack, influx_db)
    changes = setup.plan()
    assert any("rollup_1m" in c.description for c in changes)
    setup.apply(changes)
    assert setup.plan() == []  # idempotent
    tags = "flood,device_id=g1,kecamatan=Genuk"
    points = [
        # minute 0: three readings; minute 1: one; minute 61: one (next hour)
        (0, 1.0, 0.2, 1, "false", "ok"),
        (20_000, 2.0, 0.3, 2, "true", "ok"),
        (40_000, 3.0, 0.5, 3, "true", "check"),
        (MINUTE, 5.0, 1.0, 0, "false", "ok"),
        (61 * MINUTE, 7.0, 0.0, 1, "true", "fault"),
    ]
    _write(
        running_stack,
        influx_db,
        [
            f"{tags} level_m={lvl},rain_mm={rain},pumps_running={pumps}i,pump_on={on},"
            f'sensor_status="{status}" {T0 + t}'
            for t, lvl, rain, pumps, on, status in points
        ],
    )
    minute, hour = ROLLUP_LEVELS
    setup.backfill("flood", minute, T0, T0 + 2 * 3_600_000)
    setup.backfill("flood", hour, T0, T0 + 2 * 3_600_000)
    rows = running_stack.influx.rows(
        'SELECT * FROM "rollup_1m"."flood" WHERE time >= 0', database=influx_db
    )
    first = rows[0]
    assert first["time"] == T0
    assert first["level_m"] == pytest.approx(2.0)
    assert (first["level_m_min"], first["level_m_max"]) == (1.0, 3.0)
    assert first["rain_mm"] == pytest.approx(1.0)
    assert first["pumps_running"] == pytest.approx(2.0)
    assert first["pumps_running_max"] == 3
    assert first["pump_on"] is True
    assert first["sensor_status"] == "check"
    assert first["device_id"] == "g1"
    assert first["kecamatan"] == "Genuk"  # GROUP BY * keeps the registry tags
    assert len(rows) == 3
    hours = running_stack.influx.rows(
        'SELECT * FROM "rollup_1h"."flood" WHERE time >= 0', database=influx_db
    )
    assert [h["time"] for h in hours] == [T0, T0 + 3_600_000]
    assert hours[0]["rain_mm"] == pytest.approx(2.0)  # sums of sums
    assert hours[0]["level_m_max"] == 5.0
    assert hours[0]["level_m_min"] == 1.0
    assert hours[0]["sensor_status"] == "ok"
    assert hours[1]["level_m"] == pytest.approx(7.0)


def test_changed_server_is_put_back(running_stack: RunningStack, influx_db: str) -> None:
    setup = _setup(running_stack, influx_db)
    setup.apply(setup.plan())
    running_stack.influx.query(f'ALTER RETENTION POLICY "rollup_1m" ON "{influx_db}" DURATION 30d')
    running_stack.influx.query(f'DROP CONTINUOUS QUERY "cq_rollup_1h_flood" ON "{influx_db}"')
    wider = {"flood": {**FIELDS["flood"], "battery_v": "number"}}
    changed = RollupSetup(
        running_stack.influx,
        database=influx_db,
        raw_policy="autogen",
        write=setup._write,
        fields=wider,
    )
    descriptions = [c.description for c in changed.plan()]
    assert "set retention policy rollup_1m to 365d" in descriptions
    assert "create continuous query cq_rollup_1h_flood" in descriptions
    assert any(d.startswith("replace continuous query cq_rollup_1m_flood") for d in descriptions)
    changed.apply(changed.plan())
    assert changed.plan() == []


def test_missing_database_or_policy_is_one_line(running_stack: RunningStack) -> None:
    setup = _setup(running_stack, "no_such_db_here")
    with pytest.raises(RollupError, match="database no_such_db_here does not exist"):
        setup.plan()


def test_cli_dry_run_changes_nothing_then_init_applies(
    running_stack: RunningStack, influx_db: str, tmp_path: Path
) -> None:
    config = tmp_path / "kotahub.toml"
    url = running_stack.settings.influx.url
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[influx]\nurl = "{url}"\n'
        f'database = "{influx_db}"\nretention_policy = "autogen"\n'
    )
    runner = CliRunner()
    dry = runner.invoke(app, ["influx", "init", "--config", str(config), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would make" in dry.output
    assert "CREATE CONTINUOUS QUERY" in dry.output
    assert "rollup_1m" not in running_stack.influx.first_column(
        f'SHOW RETENTION POLICIES ON "{influx_db}"'
    )
    done = runner.invoke(app, ["influx", "init", "--config", str(config)])
    assert done.exit_code == 0, done.output
    again = runner.invoke(app, ["influx", "init", "--config", str(config)])
    assert "nothing to change" in again.output
    policies = running_stack.influx.first_column(f'SHOW RETENTION POLICIES ON "{influx_db}"')
    assert {"rollup_1m", "rollup_1h", "forever"} <= set(policies)


def test_stack_up_created_the_rollups(running_stack: RunningStack) -> None:
    database = running_stack.settings.influx.database
    policies = running_stack.influx.first_column(f'SHOW RETENTION POLICIES ON "{database}"')
    assert {"rollup_1m", "rollup_1h", "forever"} <= set(policies)
    names = [
        row[0]
        for s in running_stack.influx.query("SHOW CONTINUOUS QUERIES")
        if s.name == database
        for row in s.values
    ]
    assert "cq_rollup_1m_flood" in names
    assert "cq_rollup_1h_wifi" in names


@given(
    st.sampled_from(["number", "integer", "boolean", "string"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
)
def test_outputs_are_unique_and_the_first_keeps_the_name(kind: Kind, name: str) -> None:
    rollup = field_rollup("flood", name, kind)
    outputs = [output for _, output in rollup.outputs]
    assert outputs[0] == name
    assert len(set(outputs)) == len(outputs)


def test_a_continuous_query_with_another_resample_window_is_replaced(
    running_stack: RunningStack, influx_db: str
) -> None:
    setup = _setup(running_stack, influx_db)
    setup.apply(setup.plan())
    name = "cq_rollup_1m_flood"
    wanted = setup.desired_cqs()[name]
    running_stack.influx.query(f'DROP CONTINUOUS QUERY "{name}" ON "{influx_db}"')
    resample = f"FOR {ROLLUP_LEVELS[0].resample_for}"
    assert resample in wanted
    running_stack.influx.query(wanted.replace(resample, "FOR 30m"))
    assert [c.description for c in setup.plan()] == [
        f"replace continuous query {name} (fields or interval changed)"
    ]


def test_a_family_rolls_up_only_its_rollup_metrics() -> None:
    families = discover_families()
    cctv = families["cctv"]
    assert cctv.rollup_metrics is not None
    fields = measurement_fields(families)
    assert set(fields["cctv"]) == set(cctv.rollup_metrics)
    assert "serial" not in fields["cctv"]
    assert "luma_mean" not in fields["cctv"]
    # A family that names none rolls up its whole table (less the inventory rows).
    wide = dataclasses.replace(cctv, rollup_metrics=None)
    assert set(measurement_fields({"cctv": wide})["cctv"]) == set(cctv.metric_schema()) - (
        SKIP_FIELDS
    )


def test_rollup_metrics_must_be_rows_of_the_table() -> None:
    cctv = discover_families()["cctv"]
    with pytest.raises(ValueError, match=r"rollup_metrics names \['no_such_metric'\]"):
        dataclasses.replace(cctv, rollup_metrics=("stream_ok", "no_such_metric"))
