"""`kotahub alerts list|show|ack|resolve|silence` on a real alert database."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.alert_store import AlertStore
from hub.alerts.clock import ManualClock
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import parse_rules
from hub.cli import app
from hub.ingest.wal_consumers import Reading
from hub.ingest.write_ahead_log import WalPosition

T0 = 1_795_000_000_000
runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A settings file whose state folder holds an alert database with one firing alert."""
    path = tmp_path / "kotahub.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    defaults, rules = parse_rules(
        "rules: [{id: high, kind: threshold, metric: level_m, above: 3}]", "r.yaml"
    )
    gauge = DeviceRecord(
        device_id="g1",
        family="flood",
        device_type="t",
        tags={"kecamatan": "Tugu", "team": "pompa-1"},
    )
    engine = RuleEngine([(defaults, r) for r in rules], SnapshotDirectory([gauge]), ManualClock(T0))
    store = AlertStore(tmp_path / "state" / "alerts" / "alerts.sqlite3")
    events = engine.on_reading(Reading("g1", "flood", "telemetry", {}, {"level_m": 3.5}, T0))
    store.apply(events, engine.take_dirty(), WalPosition(1, 10), None, T0)
    store.close()
    return path


def test_list_show_ack_resolve(config: Path) -> None:
    listed = runner.invoke(app, ["alerts", "list", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "high|g1" in listed.output
    assert "1 alert(s)" in listed.output
    mine = runner.invoke(app, ["alerts", "list", "--team", "pompa-1", "--config", str(config)])
    assert "high|g1" in mine.output
    other = runner.invoke(app, ["alerts", "list", "--team", "parks", "--config", str(config)])
    assert "0 alert(s)" in other.output
    acked = runner.invoke(
        app, ["alerts", "ack", "high|g1", "--by", "sari", "--config", str(config)]
    )
    assert acked.exit_code == 0
    assert "high|g1: acknowledged" in acked.output
    again = runner.invoke(app, ["alerts", "ack", "high|g1", "--config", str(config)])
    assert again.exit_code == 1
    assert "acknowledged already" in again.output
    shown = runner.invoke(app, ["alerts", "show", "high|g1", "--config", str(config)])
    assert shown.exit_code == 0
    assert "raise" in shown.output
    assert "sari" in shown.output
    resolved = runner.invoke(app, ["alerts", "resolve", "high|g1", "--config", str(config)])
    assert resolved.exit_code == 0
    firing = runner.invoke(app, ["alerts", "list", "--config", str(config)])
    assert "0 alert(s)" in firing.output
    every = runner.invoke(app, ["alerts", "list", "--state", "all", "--config", str(config)])
    assert "resolved" in every.output


def test_silence_and_errors_are_one_line(config: Path) -> None:
    done = runner.invoke(
        app, ["alerts", "silence", "--for", "2h", "--kecamatan", "Tugu", "--config", str(config)]
    )
    assert done.exit_code == 0
    assert done.output.startswith("silence 1 until ")
    for args, expected in [
        (["silence", "--for", "soon", "--device", "g1"], "--for: a duration is"),
        (["silence", "--for", "1h"], "give --rule, --device or --kecamatan"),
        (["show", "nope|x"], "no alert 'nope|x'"),
        (["ack", "nope|x"], "no alert 'nope|x'"),
        (["list", "--state", "open"], "--state must be firing, resolved or all"),
    ]:
        result = runner.invoke(app, ["alerts", *args, "--config", str(config)])
        assert result.exit_code != 0
        assert expected in result.output


def test_without_a_database_it_says_so(tmp_path: Path) -> None:
    path = tmp_path / "kotahub.toml"
    path.write_text(f'state_dir = "{tmp_path / "empty"}"\n')
    result = runner.invoke(app, ["alerts", "list", "--config", str(path)])
    assert result.exit_code == 1
    assert "no alert database at" in result.output


def test_maintenance_add_list_end(config: Path, tmp_path: Path) -> None:
    add = runner.invoke(
        app,
        [
            "alerts", "maintenance", "add", "--kecamatan", "Tugu", "--family", "flood",
            "--from", "2030-01-02T08:00+07:00", "--for", "2h", "--by", "budi",
            "--comment", "pump works", "--config", str(config),
        ],
    )  # fmt: skip
    assert add.exit_code == 0, add.output
    assert "2030-01-02 01:00:00 to 2030-01-02 03:00:00 UTC" in add.output
    listed = runner.invoke(app, ["alerts", "maintenance", "list", "--config", str(config)])
    for word in ("kecamatan", "Tugu", "family", "flood", "budi", "pump"):  # the table wraps
        assert word in listed.output
    store = AlertStore(tmp_path / "state" / "alerts" / "alerts.sqlite3")
    alert = store.alert("high|g1")
    assert store.in_maintenance_window(alert, 1_893_546_000_000)  # 2030-01-02 01:00 UTC
    assert not store.in_maintenance_window(alert, 1_893_546_000_000 - 1)
    store.close()
    refused = runner.invoke(
        app, ["alerts", "maintenance", "add", "--for", "1h", "--config", str(config)]
    )
    assert refused.exit_code == 2
    assert "needs a device" in refused.output
    ended = runner.invoke(app, ["alerts", "maintenance", "end", "1", "--config", str(config)])
    assert ended.exit_code == 0, ended.output
    again = runner.invoke(app, ["alerts", "maintenance", "end", "1", "--config", str(config)])
    assert again.exit_code == 1
    listed = runner.invoke(app, ["alerts", "maintenance", "list", "--config", str(config)])
    assert "Tugu" not in listed.output
