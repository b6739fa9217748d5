"""Rule files: validated at start-up, errors name the file, the rule and the key; the city set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.clock import ManualClock
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import RuleError, load_rule_files, parse_rules
from hub.ingest.device_status import StatusChange
from hub.ingest.wal_consumers import Reading

CITY_RULES = Path(__file__).parents[2] / "hub" / "alerts" / "rules" / "semarang.yaml"
T0 = 1_795_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules: [{id: a, kind: threshold, metric: x}]",
            "rule 'a': key '(rule)': give exactly one of 'above' and 'below'",
        ),
        (
            "rules: [{id: a, kind: thresold, metric: x}]",
            "rule 'a': key 'kind': must be one of threshold",
        ),
        ("rules: [{id: a, metric: x}]", "rule 'a': key 'kind': missing"),
        (
            "rules: [{id: a, kind: threshold, metric: x, above: 1, for: soon}]",
            "rule 'a': key 'for': a duration is",
        ),
        (
            "rules: [{id: a, kind: threshold, metric: x, above: 1, colour: red}]",
            "rule 'a': key 'colour': Extra inputs",
        ),
        (
            "rules: [{id: a, kind: threshold, metric: x, above: 1, message: '{nope}'}]",
            "rule 'a': key 'message': unknown field {nope}",
        ),
        (
            "rules: [{id: a, kind: stages, metric: x, "
            "stages: [{name: S, severity: loud, threshold: 1}]}]",
            "rule 'a': key 'stages.0.severity'",
        ),
        (
            "rules: [{id: a, kind: match, metric: x, equals: 1, in: [2]}]",
            "give exactly one of 'equals', 'in' and 'not_equals'",
        ),
        (
            "rules: [{id: a, kind: rate, metric: x, rise: 1, within: 0}]",
            "'within' must be longer than 0 s",
        ),
        ("rules: [{id: a, kind: absence, for: 1m}]", "give either 'offline: true' or a 'metric'"),
        (
            "rules: [{id: a, kind: absence, offline: true}, {id: a, kind: absence, offline: true}]",
            "rule 'a': key 'id': used twice",
        ),
        ("rules: [{id: Bad Id, kind: absence, offline: true}]", "rule 'Bad Id': key 'id'"),
        ("rules: [42]", "rule 1: a rule is a mapping"),
        ("rules: {a: 1}", "key 'rules'"),
        ("[1, 2]", "a rule file is a mapping"),
        ("rules: [{id: a", "not valid YAML"),
    ],
)
def test_errors_name_the_file_the_rule_and_the_key(text: str, expected: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(text, "rules/city.yaml")
    message = str(caught.value)
    assert message.startswith("rules/city.yaml: ")
    assert expected in message
    assert "\n" not in message.strip()


def test_ids_are_unique_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules: [{id: x, kind: absence, offline: true}]")
    (tmp_path / "b.yaml").write_text("rules: [{id: x, kind: absence, offline: true}]")
    with pytest.raises(RuleError, match=r"b.yaml: rule 'x': key 'id': already used in .*a.yaml"):
        load_rule_files([tmp_path])
    with pytest.raises(RuleError, match="cannot read the rule file"):
        load_rule_files([tmp_path / "missing.yaml"])


YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
RULE_KEYS = st.sampled_from(
    ["id", "kind", "metric", "above", "below", "clear", "for", "stages", "scope", "message", "in"]
)
RULEISH = st.dictionaries(RULE_KEYS, YAMLISH | st.sampled_from(["threshold", "stages", "1m", "a"]))


@settings(max_examples=120, deadline=None)
@given(data=YAMLISH | st.fixed_dictionaries({"rules": st.lists(RULEISH, max_size=3)}))
def test_any_input_is_rules_or_one_rule_error(data: object) -> None:
    text = yaml.safe_dump(data)
    try:
        _defaults, rules = parse_rules(text, "x.yaml")
    except RuleError as err:
        problem = str(err)
        assert problem.startswith("x.yaml: ")
    else:
        assert all(rule.id for rule in rules)


# -- the city's rule set -------------------------------------------------------------------
def _city_engine(*records: DeviceRecord) -> tuple[RuleEngine, ManualClock]:
    clock = ManualClock(T0)
    return RuleEngine(load_rule_files([CITY_RULES]), SnapshotDirectory(records), clock), clock


def test_the_city_rule_set_loads_and_covers_each_family() -> None:
    rules = [rule for _defaults, rule in load_rule_files([CITY_RULES])]
    ids = {rule.id for rule in rules}
    assert {
        "flood-stage",
        "flood-rising-fast",
        "pump-failure",
        "atcs-flash",
        "atcs-detector-fault",
        "camera-offline",
        "camera-tampered",
        "ap-down",
        "brt-overspeed",
        "garbage-truck-off-round",
        "gateway-silent",
    } <= ids
    families = {family for rule in rules for family in rule.scope.families}
    assert {"flood", "atcs", "atcs_detector", "cctv", "wifi", "gps", "gateway"} <= families


def test_city_rules_on_a_gauge_a_bus_and_a_camera() -> None:
    gauge = DeviceRecord(
        device_id="bkt-1",
        family="flood",
        device_type="vegapuls-c21",
        tags={
            "name": "Banjir Kanal Timur 1",
            "site": "BKT Pedurungan",
            "kecamatan": "Pedurungan",
            "siaga4_m": "2.0",
            "siaga3_m": "2.5",
            "siaga2_m": "3.0",
            "siaga1_m": "3.5",
        },
    )
    bus = DeviceRecord(
        device_id="brt-k1-07",
        family="gps",
        device_type="gps-tracker",
        tags={"fleet": "brt", "speed_limit_kmh": "60", "name": "Koridor 1 bus 7"},
    )
    camera = DeviceRecord(device_id="cam-1", family="cctv", device_type="onvif")
    eng, clock = _city_engine(gauge, bus, camera)

    def read(device: DeviceRecord, kind: str = "telemetry", **metrics: object) -> Reading:
        return Reading(device.device_id, device.family, kind, {}, dict(metrics), clock.now_ms())  # type: ignore[arg-type]

    events = []
    for level in (1.0, 2.6, 2.6, 2.6, 2.6):  # Siaga 3 held for the 2-minute for-duration
        events += eng.on_reading(read(gauge, level_m=level))
        clock.advance(40)
    events += eng.tick()
    stage = [e for e in events if e.rule_id == "flood-stage"]
    assert [(e.kind, e.stage) for e in stage] == [("raise", "Siaga 3")]
    assert "Banjir Kanal Timur 1 (BKT Pedurungan, Pedurungan): water 2.60 m" in stage[0].message
    assert "https://peta.semarangkota.go.id/kotahub/?device=bkt-1" in stage[0].message
    assert "https://kotahub.semarangkota.go.id/runbooks/flood-stages" in stage[0].message
    # 1.0 -> 2.6 m within 15 minutes also trips the rate rule.
    assert any(e.rule_id == "flood-rising-fast" and e.kind == "raise" for e in events)

    # The bus: 70 km/h for 20 s is not enough; 35 s is.
    assert eng.on_reading(read(bus, speed_kmh=70.0)) == []
    clock.advance(20)
    assert eng.on_reading(read(bus, speed_kmh=72.0)) == []
    clock.advance(15)
    (speeding,) = eng.on_reading(read(bus, speed_kmh=71.0))
    assert speeding.message.startswith("Bus Koridor 1 bus 7 at 71 km/h (limit 60)")

    (tamper,) = eng.on_reading(read(camera, "event", tamper=True))
    assert (tamper.rule_id, tamper.severity) == ("camera-tampered", "critical")
    offline = StatusChange("cam-1", "cctv", False, "silent", clock.now_ms(), ())
    assert eng.on_status(offline) == []
    clock.advance(301)
    assert [e.rule_id for e in eng.tick()] == ["camera-offline"]
