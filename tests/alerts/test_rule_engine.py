"""Rule evaluation on a hand-driven clock: every rule kind, hysteresis, durations, stages, flap."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.clock import ManualClock
from hub.alerts.rule_engine import AlertEvent, RuleEngine, Track, level_of
from hub.alerts.rule_model import parse_rules
from hub.ingest.device_status import StatusChange
from hub.ingest.wal_consumers import Reading

T0 = 1_795_000_000_000


def gauge(device_id: str = "g1", **tags: str) -> DeviceRecord:
    base = {
        "site": "Kali Banger",
        "kecamatan": "Semarang Timur",
        "team": "pompa-1",
        "name": "Banger 1",
    }
    return DeviceRecord(
        device_id=device_id, family="flood", device_type="vegapuls-c21", tags={**base, **tags}
    )


def engine(yaml_text: str, *records: DeviceRecord) -> tuple[RuleEngine, ManualClock]:
    defaults_rules = parse_rules(yaml_text, "test.yaml")
    clock = ManualClock(T0)
    directory = SnapshotDirectory(records or [gauge()])
    return RuleEngine([(defaults_rules[0], r) for r in defaults_rules[1]], directory, clock), clock


def reading(
    clock: ManualClock, device_id: str = "g1", family: str = "flood", **metrics: Any
) -> Reading:
    return Reading(
        device_id, family, "telemetry", {"device_id": device_id}, metrics, clock.now_ms()
    )


def kinds(events: list[AlertEvent]) -> list[tuple[str, int]]:
    return [(e.kind, e.level) for e in events]


def test_threshold_with_hysteresis_and_durations() -> None:
    eng, clock = engine(
        """
rules:
  - id: high-water
    kind: threshold
    metric: level_m
    above: 3.0
    clear: 2.8
    for: 2m
    clear_for: 5m
    message: "{device_name} at {location}: {value:.2f} m > {threshold} m"
"""
    )
    assert eng.on_reading(reading(clock, level_m=3.2)) == []  # pending: not 2 min yet
    clock.advance(60)
    assert eng.on_reading(reading(clock, level_m=3.1)) == []
    assert eng.tick() == []
    clock.advance(61)
    raised = eng.tick()
    assert kinds(raised) == [("raise", 1)]
    assert raised[0].message == "Banger 1 at Kali Banger, Semarang Timur: 3.10 m > 3.0 m"
    # Between the clear threshold and the raise one: still firing (hysteresis).
    clock.advance(10)
    assert eng.on_reading(reading(clock, level_m=2.9)) == []
    assert eng.tick() == []
    clock.advance(10)
    assert eng.on_reading(reading(clock, level_m=2.7)) == []  # below clear: clear_for runs
    clock.advance(4 * 60)
    assert eng.on_reading(reading(clock, level_m=2.9)) == []  # back above clear: stays firing
    clock.advance(10 * 60)
    assert eng.tick() == []
    assert eng.on_reading(reading(clock, level_m=2.0)) == []
    clock.advance(5 * 60)
    assert kinds(eng.tick()) == [("clear", 1)]


def test_below_threshold_and_match_and_rate() -> None:
    eng, clock = engine(
        """
rules:
  - {id: low-battery, kind: threshold, metric: battery_v, below: 11.5, clear: 12.0}
  - {id: sensor-fault, kind: match, metric: sensor_status, not_equals: ok}
  - {id: rising, kind: rate, metric: level_m, rise: 0.10, within: 15m}
"""
    )
    assert kinds(eng.on_reading(reading(clock, battery_v=11.4))) == [("raise", 1)]
    assert eng.on_reading(reading(clock, battery_v=11.8)) == []
    assert kinds(eng.on_reading(reading(clock, battery_v=12.1))) == [("clear", 1)]
    assert kinds(eng.on_reading(reading(clock, sensor_status="echo_lost"))) == [("raise", 1)]
    assert kinds(eng.on_reading(reading(clock, sensor_status="ok"))) == [("clear", 1)]
    # 10 cm in 15 minutes: 1.00 -> 1.06 (10 min) -> 1.11 (14 min) raises.
    assert eng.on_reading(reading(clock, level_m=1.00)) == []
    clock.advance(600)
    assert eng.on_reading(reading(clock, level_m=1.06)) == []
    clock.advance(240)
    assert kinds(eng.on_reading(reading(clock, level_m=1.11))) == [("raise", 1)]
    # 20 minutes on, the window holds only the last readings: the rise is over.
    clock.advance(1200)
    assert kinds(eng.on_reading(reading(clock, level_m=1.12))) == [("clear", 1)]


def test_slow_rise_over_longer_than_the_window_never_raises() -> None:
    eng, clock = engine(
        "rules: [{id: rising, kind: rate, metric: level_m, rise: 0.10, within: 15m}]"
    )
    events = []
    for step in range(20):  # 4 cm every 10 min: 0.8 m in total, never 10 cm within 15 min
        events += eng.on_reading(reading(clock, level_m=1 + 0.04 * step))
        clock.advance(600)
    assert events == []


def test_absence_of_a_metric_and_offline_device() -> None:
    eng, clock = engine(
        """
rules:
  - {id: no-level, kind: absence, metric: level_m, for: 10m}
  - {id: offline, kind: absence, offline: true, for: 5m, severity: critical}
"""
    )
    eng.on_reading(reading(clock, level_m=1.0))
    clock.advance(9 * 60)
    assert eng.tick() == []
    eng.on_reading(reading(clock, rain_mm=0.2))  # other metrics do not count
    clock.advance(61 + 60)
    assert kinds(eng.tick()) == [("raise", 1)]
    assert kinds(eng.on_reading(reading(clock, level_m=1.0))) == [("clear", 1)]
    tags = (("device_id", "g1"), ("family", "flood"))
    offline = StatusChange("g1", "flood", False, "silent", clock.now_ms(), tags)
    assert eng.on_status(offline) == []
    clock.advance(301)
    (event,) = eng.tick()
    assert (event.kind, event.severity, event.rule_id) == ("raise", "critical", "offline")
    online = StatusChange("g1", "flood", True, "data", clock.now_ms(), tags)
    assert kinds(eng.on_status(online)) == [("clear", 1)]


STAGES = """
defaults:
  map_url: "https://peta.semarangkota.go.id/?device={device_id}"
  runbook_url: "https://wiki.kotahub.example/runbooks/{runbook}"
rules:
  - id: flood-stage
    kind: stages
    metric: level_m
    hysteresis: 0.05
    scope: {families: flood}
    runbook: flood-stages
    message: "{stage} {device_name} {value} m {map_link} {runbook_link}"
    stages:
      - {name: Siaga 4, severity: info, threshold: {attribute: siaga4_m}}
      - {name: Siaga 3, severity: warning, threshold: {attribute: siaga3_m}}
      - {name: Siaga 2, severity: critical, threshold: {attribute: siaga2_m}}
      - {name: Siaga 1, severity: critical, threshold: {attribute: siaga1_m, default: 9.9}}
"""


def test_flood_stages_escalate_and_deescalate_one_alert_per_gauge() -> None:
    eng, clock = engine(
        STAGES,
        gauge("g1", siaga4_m="1.0", siaga3_m="1.5", siaga2_m="2.0", siaga1_m="2.5"),
        gauge("g2", siaga4_m="3.0", siaga3_m="3.5", siaga2_m="4.0"),
    )
    seen: list[tuple[str, str, str]] = []
    for level in (0.5, 1.2, 1.6, 2.6, 2.47, 2.3, 1.4, 0.9):
        for event in eng.on_reading(reading(clock, "g1", level_m=level)):
            seen.append((event.kind, event.stage, event.severity))
        clock.advance(60)
    assert seen == [
        ("raise", "Siaga 4", "info"),
        ("stage", "Siaga 3", "warning"),
        ("stage", "Siaga 1", "critical"),
        # 2.47 is within the hysteresis of Siaga 1 (2.5 - 0.05): no change
        ("stage", "Siaga 2", "critical"),
        ("stage", "Siaga 4", "info"),
        ("clear", "Siaga 4", "info"),
    ]
    # Thresholds per gauge: 2.6 m is nothing at g2.
    assert eng.on_reading(reading(clock, "g2", level_m=2.6)) == []
    (event,) = eng.on_reading(reading(clock, "g2", level_m=4.2))
    assert (event.kind, event.stage) == ("raise", "Siaga 2")
    assert event.message == (
        "Siaga 2 Banger 1 4.2 m https://peta.semarangkota.go.id/?device=g2 "
        "https://wiki.kotahub.example/runbooks/flood-stages"
    )


def test_flapping_is_flagged_then_calms_down() -> None:
    eng, clock = engine(
        """
rules:
  - {id: pump, kind: match, metric: pump_on, equals: false, flap: {changes: 4, within: 10m}}
"""
    )
    events: list[AlertEvent] = []
    for value in (False, True, False, True):
        events += eng.on_reading(reading(clock, pump_on=value))
        clock.advance(30)
    assert [e.kind for e in events] == ["raise", "clear", "raise", "clear", "flap_start"]
    assert events[-1].flapping
    clock.advance(11 * 60)
    assert [e.kind for e in eng.tick()] == ["flap_end"]


def test_scope_by_family_type_kecamatan_team_and_tag() -> None:
    eng, clock = engine(
        """
rules:
  - id: scoped
    kind: threshold
    metric: level_m
    above: 1
    scope:
      families: [flood]
      device_types: [vegapuls-c21]
      kecamatan: Genuk
      teams: [pompa-2]
      tags: {river: Sringin}
""",
        gauge("in", kecamatan="Genuk", team="pompa-2", river="Sringin"),
        gauge("other-river", kecamatan="Genuk", team="pompa-2", river="Banger"),
        gauge("other-team", kecamatan="Genuk", team="pompa-1", river="Sringin"),
    )
    assert kinds(eng.on_reading(reading(clock, "in", level_m=2))) == [("raise", 1)]
    assert eng.on_reading(reading(clock, "other-river", level_m=2)) == []
    assert eng.on_reading(reading(clock, "other-team", level_m=2)) == []
    assert eng.on_reading(reading(clock, "in", family="atcs", level_m=5)) == []


def test_tracks_survive_a_restart_through_json() -> None:
    text = "rules: [{id: high, kind: threshold, metric: level_m, above: 3, for: 2m}]"
    eng, clock = engine(text)
    eng.on_reading(reading(clock, level_m=3.5))
    saved = {key: Track.from_json(track.to_json()) for key, track in eng.take_dirty().items()}
    again, clock2 = engine(text)
    again.load(saved)
    clock2.advance(121)
    assert kinds(again.tick()) == [("raise", 1)]


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=-5, max_value=5), min_size=1, max_size=30),
    raise_at=st.floats(min_value=-2, max_value=2),
    margin=st.floats(min_value=0, max_value=1),
)
def test_hysteresis_never_chatters_inside_the_band(
    values: list[float], raise_at: float, margin: float
) -> None:
    level = 0
    for value in values:
        new = level_of(value, level, [(raise_at, raise_at - margin)])
        if raise_at - margin <= value <= raise_at:
            assert new == level  # inside the band nothing changes
        elif value > raise_at:
            assert new == 1
        else:
            assert new == 0
        level = new
