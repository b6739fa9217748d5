"""An offline rule with ``for:`` keeps the status reason until its raise (and across a restart)."""

from __future__ import annotations

from pathlib import Path

import yaml

from device_registry.directory import DeviceRecord, SnapshotDirectory
from drivers.cctv.nvr_links import parent_cause
from hub.alerts.alert_consumer import AlertConsumer
from hub.alerts.alert_router import AlertRouter, load_routing
from hub.alerts.alert_store import AlertStore
from hub.alerts.clock import ManualClock
from hub.alerts.notifier import Notifier
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import load_rule_files, parse_rules
from hub.ingest.device_status import StatusChange
from hub.ingest.write_ahead_log import WalPosition
from tests.alerts.receivers import webhook_receiver

T0 = 1_795_000_000_000
CITY_RULES = Path(__file__).parents[2] / "hub" / "alerts" / "rules" / "semarang.yaml"
RULES = """
rules:
  - id: camera-offline
    kind: absence
    offline: true
    for: 5m
    scope: {families: [cctv]}
    message: "{device_id} offline: {cause}"
"""
NVR_DOWN = parent_cause("nvr1", "no TCP answer at 10.0.0.9:80 (TimeoutError)")


def _directory() -> SnapshotDirectory:
    return SnapshotDirectory(
        [
            DeviceRecord(device_id="nvr1", family="cctv", device_type="nvr"),
            DeviceRecord(device_id="c1", family="cctv", device_type="onvif", parent_id="nvr1"),
        ]
    )


def _consumer(
    store: AlertStore, clock: ManualClock, router: AlertRouter | None = None
) -> AlertConsumer:
    defaults, rules = parse_rules(RULES, "rules.yaml")
    engine = RuleEngine([(defaults, r) for r in rules], _directory(), clock)
    if router is None:
        return AlertConsumer(engine, store, clock)
    return AlertConsumer(engine, store, clock, pages=router, escalations=router.run_escalations)


def _status(
    consumer: AlertConsumer, clock: ManualClock, device_id: str, online: bool, reason: str, n: int
) -> None:
    change = StatusChange(device_id, "cctv", online, reason, clock.now_ms(), ())
    consumer.consume([change], WalPosition(1, n))


def test_a_delayed_raise_carries_the_reason_and_a_restart_keeps_it(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    store = AlertStore(tmp_path / "alerts.sqlite3")
    _status(_consumer(store, clock), clock, "c1", False, NVR_DOWN, 1)
    store.close()
    # The hub restarts while the for-duration runs: the reason comes back from the store.
    clock.advance(301)
    store = AlertStore(tmp_path / "alerts.sqlite3")
    consumer = _consumer(store, clock)
    events = consumer.engine.tick()
    assert [(e.kind, e.cause) for e in events] == [("raise", NVR_DOWN)]
    assert events[0].message == f"c1 offline: {NVR_DOWN}"
    # Back online: the clear has no cause, and the next outage brings its own reason.
    _status(consumer, clock, "c1", True, "data", 2)
    _status(consumer, clock, "c1", False, "silent", 3)
    clock.advance(301)
    assert [(e.kind, e.cause) for e in consumer.engine.tick()] == [("raise", "silent")]
    store.close()


def test_a_delayed_camera_raise_waits_for_its_nvr_and_joins_its_incident(tmp_path: Path) -> None:
    """The camera's raise comes from the tick, before its NVR's: held for the NVR by its
    cause, it joins the NVR's incident and pages no one."""
    clock = ManualClock(T0)
    with webhook_receiver() as webhook:
        routing = tmp_path / "routing.yaml"
        routing.write_text(yaml.safe_dump({"default": {"notify": [webhook.url]}}))
        store = AlertStore(tmp_path / "alerts.sqlite3")
        router = AlertRouter(load_routing(routing), _directory(), parent_hold_s=120)
        consumer = _consumer(store, clock, router)
        notifier = Notifier(tmp_path / "alerts.sqlite3", clock)
        _status(consumer, clock, "c1", False, NVR_DOWN, 1)
        clock.advance(30)
        _status(consumer, clock, "nvr1", False, "no answer on port 80", 2)
        clock.advance(271)
        consumer.tick()  # the camera's for: 5m ran out, its NVR's not yet
        assert store.alert("camera-offline|c1").state == "firing"
        assert notifier.drain(store) == 0
        clock.advance(30)
        consumer.tick()  # the NVR raises: the camera joins it
        assert notifier.drain(store) == 1
        children = [row["child_key"] for row in store.children("camera-offline|nvr1")]
        assert children == ["camera-offline|c1"]
        clock.advance(121)
        consumer.tick()
        assert notifier.drain(store) == 0  # the camera's held page was dropped
        assert [p["title"] for p in webhook.wait_for(1)] == [
            "[ALERT] warning: camera-offline on nvr1"
        ]
        store.close()


def test_the_city_rules_page_says_why_a_camera_is_offline() -> None:
    """The shipped camera-offline rule (for: 5m) names the status reason in its message."""
    clock = ManualClock(T0)
    engine = RuleEngine(load_rule_files([CITY_RULES]), _directory(), clock)
    assert engine.on_status(StatusChange("c1", "cctv", False, NVR_DOWN, T0, ())) == []
    clock.advance(301)
    (event,) = engine.tick()
    assert (event.rule_id, event.cause) == ("camera-offline", NVR_DOWN)
    assert f"offline: {NVR_DOWN}." in event.message
