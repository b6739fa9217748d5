"""Incidents by topology: devices behind a dead gateway join its incident and page no one."""

from __future__ import annotations

from pathlib import Path

import yaml

from device_registry.directory import DeviceRecord, SnapshotDirectory
from drivers.cctv.nvr_links import parent_cause
from hub.alerts.alert_consumer import AlertConsumer
from hub.alerts.alert_router import PARENT_CAUSE, AlertRouter, load_routing
from hub.alerts.alert_store import AlertStore
from hub.alerts.clock import ManualClock
from hub.alerts.notifier import Notifier
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import parse_rules
from hub.ingest.device_status import StatusChange
from hub.ingest.write_ahead_log import WalPosition
from tests.alerts.receivers import webhook_receiver

T0 = 1_795_000_000_000
RULES = """
rules:
  - {id: gateway-silent, kind: absence, offline: true, scope: {families: [gateway]}}
  - {id: camera-offline, kind: absence, offline: true, scope: {families: [cctv]}}
"""


def test_cameras_behind_a_dead_gateway_are_one_incident(tmp_path: Path) -> None:
    gateway = DeviceRecord(device_id="gw1", family="gateway", device_type="agent")
    cameras = [
        DeviceRecord(device_id=f"cam{n}", family="cctv", device_type="onvif", gateway_id="gw1")
        for n in range(1, 4)
    ]
    lone = DeviceRecord(device_id="cam9", family="cctv", device_type="onvif")
    directory = SnapshotDirectory([gateway, *cameras, lone])
    clock = ManualClock(T0)
    with webhook_receiver() as webhook:
        routing = tmp_path / "routing.yaml"
        routing.write_text(yaml.safe_dump({"default": {"notify": [webhook.url], "repeat": "10m"}}))
        defaults, rules = parse_rules(RULES, "rules.yaml")
        store = AlertStore(tmp_path / "alerts.sqlite3")
        router = AlertRouter(load_routing(routing), directory)
        engine = RuleEngine([(defaults, r) for r in rules], directory, clock)
        consumer = AlertConsumer(
            engine, store, clock, pages=router, escalations=router.run_escalations
        )
        notifier = Notifier(tmp_path / "alerts.sqlite3", clock)
        offset = 0

        def offline(device_id: str, family: str) -> None:
            nonlocal offset
            offset += 1
            change = StatusChange(device_id, family, False, "silent", clock.now_ms(), ())
            consumer.consume([change], WalPosition(1, offset))
            clock.advance(1)

        offline("cam3", "cctv")  # fails before its gateway: paged on its own
        offline("gw1", "gateway")
        offline("cam1", "cctv")
        offline("cam2", "cctv")
        offline("cam9", "cctv")  # behind no gateway: its own page
        notifier.drain(store)
        titles = sorted(p["title"] for p in webhook.wait_for(3))
        assert titles == [
            "[ALERT] warning: camera-offline on cam3",
            "[ALERT] warning: camera-offline on cam9",
            "[ALERT] warning: gateway-silent on gw1",
        ]
        children = [row["child_key"] for row in store.children("gateway-silent|gw1")]
        assert children == ["camera-offline|cam3", "camera-offline|cam1", "camera-offline|cam2"]
        # Ten minutes on, nobody acknowledged: the gateway and the lone camera repeat, the
        # cameras of the incident (cam3 included, since it joined) do not.
        clock.advance(601)
        consumer.tick()
        notifier.drain(store)
        repeats = sorted(p["title"] for p in webhook.wait_for(5)[3:])
        assert repeats == [
            "[STILL FIRING] warning: camera-offline on cam9",
            "[STILL FIRING] warning: gateway-silent on gw1",
        ]
        store.close()


def test_cameras_whose_nvr_is_down_join_its_incident_even_when_they_report_first(
    tmp_path: Path,
) -> None:
    """The agent's cause (``parent NVR <id> unreachable: ...``) holds a camera's page until
    the NVR's own alert raises and takes it in; with no NVR alert, the page goes after all."""
    cause = parent_cause("nvr1", "no TCP answer at 10.0.0.9:80 (TimeoutError)")
    assert PARENT_CAUSE.match(cause) is not None  # the router reads what the driver writes
    nvrs = [DeviceRecord(device_id=n, family="cctv", device_type="nvr") for n in ("nvr1", "nvr2")]
    cameras = [
        DeviceRecord(device_id=c, family="cctv", device_type="onvif", parent_id=p)
        for c, p in (("c1", "nvr1"), ("c2", "nvr1"), ("c4", "nvr2"))
    ]
    directory = SnapshotDirectory([*nvrs, *cameras])
    clock = ManualClock(T0)
    with webhook_receiver() as webhook:
        routing = tmp_path / "routing.yaml"
        routing.write_text(yaml.safe_dump({"default": {"notify": [webhook.url]}}))
        defaults, rules = parse_rules(RULES, "rules.yaml")
        store = AlertStore(tmp_path / "alerts.sqlite3")
        router = AlertRouter(load_routing(routing), directory, parent_hold_s=120)
        engine = RuleEngine([(defaults, r) for r in rules], directory, clock)
        consumer = AlertConsumer(
            engine, store, clock, pages=router, escalations=router.run_escalations
        )
        notifier = Notifier(tmp_path / "alerts.sqlite3", clock)
        offset = 0

        def offline(device_id: str, reason: str) -> None:
            nonlocal offset
            offset += 1
            change = StatusChange(device_id, "cctv", False, reason, clock.now_ms(), ())
            consumer.consume([change], WalPosition(1, offset))
            clock.advance(1)

        offline("c1", cause)  # the camera's poll came first: held for its NVR
        assert notifier.drain(store) == 0
        offline("nvr1", "no answer on port 80")
        offline("c2", cause)  # its NVR's alert fires: part of the incident at once
        offline("c4", parent_cause("nvr2", "refused"))  # nvr2 never alerts at the hub
        assert notifier.drain(store) == 1
        assert [p["title"] for p in webhook.wait_for(1)] == [
            "[ALERT] warning: camera-offline on nvr1"
        ]
        children = [row["child_key"] for row in store.children("camera-offline|nvr1")]
        assert children == ["camera-offline|c1", "camera-offline|c2"]
        # After the hold: c1's held page was dropped with the join, c4's goes out now.
        clock.advance(121)
        assert notifier.drain(store) == 1
        titles = [p["title"] for p in webhook.wait_for(2)]
        assert titles[1:] == ["[ALERT] warning: camera-offline on c4"]
        store.close()
