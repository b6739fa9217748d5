"""Alertmanager output against Debian's real prometheus-alertmanager: grouping, silences, ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.alert_consumer import AlertConsumer
from hub.alerts.alert_router import AlertRouter, Routing
from hub.alerts.alert_store import AlertStore
from hub.alerts.alertmanager import AlertmanagerOutput, rfc3339
from hub.alerts.clock import ManualClock
from hub.alerts.maintenance import add_window
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import parse_rules
from hub.ingest.device_status import StatusChange
from hub.ingest.wal_consumers import Reading
from hub.ingest.write_ahead_log import WalPosition
from tests.alerts.alertmanager_server import RunningAlertmanager, alertmanager
from tests.alerts.receivers import WebhookReceiver, webhook_receiver
from tests.conftest import free_port

RULES = "rules:\n  - {id: pump-offline, kind: absence, offline: true, severity: critical}\n"
STAGES = """
rules:
  - id: flood-stage
    kind: stages
    metric: level_m
    direction: above
    stages:
      - {name: Siaga 3, severity: warning, threshold: 2.5}
      - {name: Siaga 1, severity: critical, threshold: 3.5}
"""
KECAMATAN = {"p1": "Genuk", "p2": "Genuk", "p3": "Tugu"}


class Hub:
    """The alert engine's consumer and store over a fixed directory, fed status changes."""

    def __init__(self, tmp_path: Path, am: RunningAlertmanager) -> None:
        records = [
            DeviceRecord(device_id=d, family="flood", device_type="pump", tags={"kecamatan": k})
            for d, k in KECAMATAN.items()
        ]
        directory = SnapshotDirectory(records)
        # Alertmanager compares startsAt/endsAt with its own clock: start at the real time.
        self.clock = ManualClock(time.time_ns() // 1_000_000)
        defaults, rules = parse_rules(RULES, "rules.yaml")
        database = tmp_path / "alerts.sqlite3"
        self.store = AlertStore(database)
        engine = RuleEngine([(defaults, r) for r in rules], directory, clock=self.clock)
        router = AlertRouter(Routing(), directory)
        self.consumer = AlertConsumer(engine, self.store, self.clock, pages=router)
        self.output = AlertmanagerOutput([am.url], database, self.clock, interval_s=60)
        self.offset = 0

    def status(self, device_id: str, online: bool) -> None:
        """One status change of a pump, then the output's post."""
        self.offset += 1
        change = StatusChange(device_id, "flood", online, "silent", self.clock.now_ms(), ())
        self.consumer.consume([change], WalPosition(1, self.offset))
        self.clock.advance(0.01)

    def push(self) -> None:
        """The output's post, as its thread makes it after a saved batch."""
        with httpx.Client(timeout=10) as client:
            assert self.output.push(self.store, client) == 1


def _config(webhook: WebhookReceiver) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "hook",
            "group_by": ["kecamatan"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "hook",
                "webhook_configs": [
                    {"url": f"http://127.0.0.1:{webhook.port}/hook", "send_resolved": True}
                ],
            }
        ],
    }


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Hub, RunningAlertmanager, WebhookReceiver]]:
    with webhook_receiver() as webhook, alertmanager(_config(webhook), tmp_path / "am") as am:
        hub = Hub(tmp_path, am)
        yield hub, am, webhook
        hub.store.close()


def _by_group(posts: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    return {
        post["groupLabels"]["kecamatan"]: sorted(
            (a["labels"]["device_id"], a["status"]) for a in post["alerts"]
        )
        for post in posts
    }


def test_alerts_arrive_grouped_and_resolve(
    setup: tuple[Hub, RunningAlertmanager, WebhookReceiver],
) -> None:
    hub, am, webhook = setup
    for device in ("p1", "p2", "p3"):
        hub.status(device, online=False)
    hub.push()
    first = webhook.wait_for(2)
    assert _by_group(first) == {
        "Genuk": [("p1", "firing"), ("p2", "firing")],
        "Tugu": [("p3", "firing")],
    }
    held = {a["labels"]["device_id"]: a for a in am.alerts()}
    assert held["p1"]["labels"] == {
        "alertname": "pump-offline",
        "device_id": "p1",
        "family": "flood",
        "kecamatan": "Genuk",
        "severity": "critical",
    }
    assert held["p1"]["startsAt"].startswith(
        rfc3339(hub.store.alert("pump-offline|p1").raised_ms)[:19]
    )
    # p1 comes back: sent once more with its end, Alertmanager tells the group it resolved.
    hub.status("p1", online=True)
    hub.push()
    (update,) = webhook.wait_for(3)[2:]
    assert _by_group([update]) == {"Genuk": [("p1", "resolved"), ("p2", "firing")]}
    assert {a["labels"]["device_id"] for a in am.alerts()} == {"p2", "p3"}


def test_a_silence_made_in_alertmanager_silences(
    setup: tuple[Hub, RunningAlertmanager, WebhookReceiver],
) -> None:
    hub, am, webhook = setup
    now = hub.clock.now_ms()
    silence = am.api(
        "POST",
        "/silences",
        json={
            "matchers": [{"name": "device_id", "value": "p3", "isRegex": False, "isEqual": True}],
            "startsAt": rfc3339(now - 1000),
            "endsAt": rfc3339(now + 3_600_000),
            "createdBy": "budi",
            "comment": "pump p3 under repair",
        },
    )
    hub.status("p3", online=False)
    hub.status("p1", online=False)
    hub.push()
    # Both were posted at once with the same group_wait: Genuk's page came, Tugu's never does.
    assert _by_group(webhook.wait_for(1)) == {"Genuk": [("p1", "firing")]}
    held = {a["labels"]["device_id"]: a["status"] for a in am.alerts()}
    assert held["p3"]["state"] == "suppressed"
    assert held["p3"]["silencedBy"] == [silence["silenceID"]]
    assert held["p1"]["state"] == "active"
    assert "Tugu" not in {p["groupLabels"]["kecamatan"] for p in webhook.posts}


def test_a_device_in_a_maintenance_window_is_not_posted(
    setup: tuple[Hub, RunningAlertmanager, WebhookReceiver],
) -> None:
    hub, am, webhook = setup
    now = hub.clock.now_ms()
    add_window(hub.store, device_id="p2", starts_ms=now, ends_ms=now + 3_600_000, actor="budi")
    hub.status("p1", online=False)
    hub.status("p2", online=False)
    hub.push()
    assert _by_group(webhook.wait_for(1)) == {"Genuk": [("p1", "firing")]}
    assert {a["labels"]["device_id"] for a in am.alerts()} == {"p1"}


def test_a_stage_that_changes_the_severity_ends_the_old_alert_in_alertmanager(
    setup: tuple[Hub, RunningAlertmanager, WebhookReceiver],
) -> None:
    hub, am, _webhook = setup
    defaults, rules = parse_rules(STAGES, "stages.yaml")
    directory = SnapshotDirectory(
        [DeviceRecord(device_id="g1", family="flood", device_type="gauge")]
    )
    engine = RuleEngine([(defaults, r) for r in rules], directory, clock=hub.clock)
    consumer = AlertConsumer(engine, hub.store, hub.clock)
    for offset, level in enumerate((2.6, 3.6), start=1000):
        reading = Reading("g1", "flood", "telemetry", {}, {"level_m": level}, hub.clock.now_ms())
        consumer.consume([reading], WalPosition(1, offset))
        hub.push()
        hub.clock.advance(0.01)
    held = [(a["labels"]["severity"], a["annotations"]["stage"]) for a in am.alerts()]
    assert held == [("critical", "Siaga 1")]


def test_an_alertmanager_that_does_not_answer_is_retried_and_the_others_still_get_alerts(
    setup: tuple[Hub, RunningAlertmanager, WebhookReceiver],
) -> None:
    hub, am, _webhook = setup
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    output = AlertmanagerOutput([dead, am.url], hub.output.database, hub.clock)
    hub.status("p1", online=False)
    with httpx.Client(timeout=5) as client:
        assert output.push(hub.store, client) == 1
        assert output.failures == 1
        hub.status("p1", online=True)
        assert output.push(hub.store, client) == 1
        # The dead one was never told p1 fired: nothing to end there; the live one ended it.
        assert output.body(hub.store, dead, hub.clock.now_ms())[0] == []
    assert am.alerts() == []


def test_an_incident_is_one_alert_in_alertmanager_naming_its_children(
    setup: tuple[Hub, RunningAlertmanager, WebhookReceiver],
) -> None:
    hub, am, _webhook = setup
    records = [
        DeviceRecord(device_id="nvr1", family="flood", device_type="nvr"),
        *(
            DeviceRecord(device_id=c, family="flood", device_type="cam", parent_id="nvr1")
            for c in ("c1", "c2")
        ),
    ]
    directory = SnapshotDirectory(records)
    defaults, rules = parse_rules(RULES, "rules.yaml")
    engine = RuleEngine([(defaults, r) for r in rules], directory, clock=hub.clock)
    consumer = AlertConsumer(engine, hub.store, hub.clock, pages=AlertRouter(Routing(), directory))
    for offset, device in enumerate(("c1", "nvr1", "c2"), start=1000):
        change = StatusChange(device, "flood", False, "silent", hub.clock.now_ms(), ())
        consumer.consume([change], WalPosition(1, offset))
        hub.clock.advance(0.01)
    hub.push()
    (held,) = am.alerts()
    assert held["labels"]["device_id"] == "nvr1"
    assert held["annotations"]["incident_children"] == "c1, c2"
