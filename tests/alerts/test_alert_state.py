"""Alert state in SQLite, routing, paging through real receivers, escalation, links, restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.ack_links import LinkOutcome, LinkSigner, acknowledge_by_link
from hub.alerts.alert_consumer import AlertConsumer
from hub.alerts.alert_router import AlertRouter, load_routing
from hub.alerts.alert_store import AlertStore
from hub.alerts.clock import ManualClock
from hub.alerts.notifier import Notifier, RetryPolicy
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import RuleError, parse_rules
from hub.ingest.wal_consumers import Reading
from hub.ingest.write_ahead_log import WalPosition
from tests.alerts.receivers import SmtpReceiver, WebhookReceiver, smtp_receiver, webhook_receiver

T0 = 1_795_000_000_000
RULES = """
rules:
  - {id: high-water, kind: threshold, metric: level_m, above: 3.0, clear: 2.8,
     message: "{device_name} at {location}: {value} m"}
"""
GAUGES = [
    DeviceRecord(
        device_id="g1",
        family="flood",
        device_type="vegapuls-c21",
        tags={"kecamatan": "Genuk", "site": "Sringin", "team": "pompa-1", "name": "Sringin 1"},
    ),
    DeviceRecord(
        device_id="g2",
        family="flood",
        device_type="vegapuls-c21",
        tags={"kecamatan": "Tugu", "site": "Tugu", "name": "Tugu 1"},
    ),
]


class Rig:
    """Engine, store, router, consumer and notifier on one database and a manual clock."""

    def __init__(self, tmp_path: Path, webhook: WebhookReceiver, smtp: SmtpReceiver) -> None:
        self.tmp_path = tmp_path
        self.clock = ManualClock(T0)
        self.routing_path = tmp_path / "routing.yaml"
        self.routing_path.write_text(
            yaml.safe_dump(
                {
                    "teams": [
                        {
                            "id": "pompa-genuk",
                            "match": {"kecamatan": ["Genuk"], "families": ["flood"]},
                            "notify": [webhook.url],
                            "escalate": [{"after": "15m", "notify": [smtp.url]}],
                            "repeat": "30m",
                        }
                    ],
                    "default": {"notify": [f"{webhook.url}-default"]},
                }
            )
        )
        self.lines: list[str] = []
        self.segment_offset = 0
        self.open()

    def open(self) -> None:
        defaults, rules = parse_rules(RULES, "rules.yaml")
        self.store = AlertStore(self.tmp_path / "alerts.sqlite3")
        self.directory = SnapshotDirectory(GAUGES)
        self.router = AlertRouter(load_routing(self.routing_path), self.directory)
        engine = RuleEngine([(defaults, r) for r in rules], self.directory, self.clock)
        self.consumer = AlertConsumer(
            engine,
            self.store,
            self.clock,
            pages=self.router,
            sink=self.lines.extend,
            escalations=self.router.run_escalations,
        )
        self.notifier = Notifier(
            self.tmp_path / "alerts.sqlite3",
            self.clock,
            policy=RetryPolicy(retry_min_s=1, retry_max_s=4, max_attempts=3, timeout_s=5),
        )

    def restart(self) -> None:
        self.store.close()
        self.open()

    def feed(self, device_id: str, level: float) -> None:
        self.segment_offset += 100
        reading = Reading(
            device_id, "flood", "telemetry", {}, {"level_m": level}, self.clock.now_ms()
        )
        self.consumer.consume([reading], WalPosition(1, self.segment_offset))

    def tick(self, seconds: float = 0) -> None:
        self.clock.advance(seconds)
        self.consumer.tick()

    def send(self) -> int:
        return self.notifier.drain(self.store)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Rig, WebhookReceiver, SmtpReceiver]]:
    with webhook_receiver() as webhook, smtp_receiver() as smtp:
        made = Rig(tmp_path, webhook, smtp)
        yield made, webhook, smtp
        made.store.close()


def test_a_raise_pages_the_area_team_once_and_a_clear_tells_it(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, webhook, _smtp = rig
    r.feed("g1", 3.4)
    r.feed("g1", 3.6)  # still firing: no second page
    assert r.send() == 1
    (post,) = webhook.wait_for(1)
    assert post["title"] == "[ALERT] warning: high-water on g1"
    assert post["message"] == "Sringin 1 at Sringin, Genuk: 3.4 m"
    assert webhook.headers[0]["X-Kotahub-Page"] == "1"
    r.feed("g1", 2.0)
    assert r.send() == 1
    assert webhook.wait_for(2)[1]["title"] == "[RESOLVED] warning: high-water on g1"
    # Another kecamatan goes to the default route.
    r.feed("g2", 3.5)
    r.send()
    webhook.wait_for(3)
    assert r.store.pages()[-1]["target"] == f"{webhook.url}-default"
    # Every event also became an alert point (through the sink), once.
    r.tick(1)
    r.tick(1)
    kinds = [line.split(",event=")[1].split(",")[0].split(" ")[0] for line in r.lines]
    assert kinds == ["raise", "clear", "raise"]
    assert all(line.startswith("alert,") for line in r.lines)
    assert r.store.unexported() == []


def test_unacknowledged_alert_escalates_to_email_then_repeats(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, webhook, smtp = rig
    r.feed("g1", 3.5)
    r.send()
    r.tick(14 * 60)
    assert r.send() == 0
    r.tick(61)
    assert r.send() == 1
    (mail,) = smtp.wait_for(1)
    assert "ESCALATED" in str(mail["Subject"])
    assert "Sringin 1" in mail.get_payload(decode=False) or mail.is_multipart()
    r.tick(30 * 60)
    assert r.send() == 1  # the repeat goes to the current level: email
    smtp.wait_for(2)
    assert [p["kind"] for p in r.store.pages()] == ["raise", "escalate", "repeat"]
    assert len(webhook.posts) == 1


def test_acknowledged_alert_is_not_paged_again_even_after_a_restart(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, webhook, smtp = rig
    r.feed("g1", 3.5)
    r.send()
    assert r.store.operator_event("high-water|g1", "ack", "budi", r.clock.now_ms())
    assert not r.store.operator_event("high-water|g1", "ack", "budi", r.clock.now_ms())
    r.restart()
    r.feed("g1", 3.9)
    r.tick(16 * 60)
    r.tick(31 * 60)
    assert r.send() == 0
    assert len(webhook.posts) == 1
    assert smtp.mailbox.messages == []
    # The restart kept the track: it is firing, a drop below 2.8 clears it.
    r.feed("g1", 2.5)
    assert r.store.alert("high-water|g1").state == "resolved"


def test_a_refusing_receiver_is_retried_and_every_attempt_logged(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, webhook, _smtp = rig
    webhook.refuse = 2
    r.feed("g1", 3.5)
    assert r.send() == 1
    assert r.send() == 0  # not due yet
    r.clock.advance(1.1)
    assert r.send() == 1
    r.clock.advance(2.1)
    assert r.send() == 1
    webhook.wait_for(1)
    attempts = [(d["attempt"], d["ok"]) for d in r.store.deliveries()]
    assert attempts == [(1, 0), (2, 0), (3, 1)]
    assert r.store.pages()[0]["state"] == "sent"


def test_a_receiver_that_never_answers_is_given_up_after_max_attempts(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, webhook, _smtp = rig
    webhook.refuse = 99
    r.feed("g1", 3.5)
    for _ in range(3):
        r.send()
        r.clock.advance(5)
    page = r.store.pages()[0]
    assert (page["state"], page["attempts"]) == ("failed", 3)
    assert "503" in page["last_error"] or page["last_error"]


def test_silence_stops_pages_of_its_match(rig: tuple[Rig, WebhookReceiver, SmtpReceiver]) -> None:
    r, webhook, _smtp = rig
    now = r.clock.now_ms()
    r.store.add_silence(
        rule_id=None,
        device_id="g1",
        kecamatan=None,
        starts_ms=now,
        ends_ms=now + 3600_000,
        actor="ops",
    )
    r.feed("g1", 3.5)
    r.tick(16 * 60)
    assert r.send() == 0
    assert webhook.posts == []
    assert r.store.alert("high-water|g1").state == "firing"  # recorded, not paged


def test_one_tap_link_works_once_and_refuses_forged_and_expired(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, _webhook, _smtp = rig
    r.feed("g1", 3.5)
    signer = LinkSigner(b"s3cret-of-the-city", ttl_ms=600_000)
    token = signer.token("high-water|g1", 1, r.clock.now_ms())
    forged = LinkSigner(b"another-secret", ttl_ms=600_000).token(
        "high-water|g1", 1, r.clock.now_ms()
    )
    now = r.clock.now_ms()
    assert acknowledge_by_link(r.store, signer, forged, now) is LinkOutcome.FORGED
    assert acknowledge_by_link(r.store, signer, token[:-2] + "xx", now) is LinkOutcome.FORGED
    assert acknowledge_by_link(r.store, signer, token, now + 600_001) is LinkOutcome.EXPIRED
    assert acknowledge_by_link(r.store, signer, token, now) is LinkOutcome.ACKNOWLEDGED
    assert acknowledge_by_link(r.store, signer, token, now) is LinkOutcome.USED
    assert r.store.alert("high-water|g1").acked_by == "link"
    # A link of an earlier instance does not acknowledge the next raise.
    r.feed("g1", 2.0)
    r.feed("g1", 3.5)
    stale = signer.token("high-water|g1", 1, r.clock.now_ms())
    assert acknowledge_by_link(r.store, signer, stale, r.clock.now_ms()) is LinkOutcome.ALREADY


@settings(max_examples=200, deadline=None)
@given(token=st.text(max_size=80) | st.binary(max_size=60).map(lambda b: b.hex()))
def test_no_made_up_token_is_accepted(token: str) -> None:
    signer = LinkSigner(b"k", ttl_ms=1000)
    assert signer.read(token, T0) in (LinkOutcome.FORGED, LinkOutcome.EXPIRED)


def test_routing_file_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("teams: [{id: t, escalate: [{after: soon, notify: [x]}]}]")
    with pytest.raises(RuleError, match=r"routing.yaml: key 'teams.0.escalate.0.after'"):
        load_routing(path)


def test_a_device_in_maintenance_pages_no_one(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, webhook, smtp = rig
    r.directory.replace([replace(GAUGES[0], state="maintenance"), GAUGES[1]])
    r.feed("g1", 3.5)
    r.tick(16 * 60)  # no escalation either
    assert r.send() == 0
    assert r.store.alert("high-water|g1").state == "firing"  # recorded all the same
    # Back in service: the escalation that is due now goes out.
    r.directory.replace(GAUGES)
    r.tick(1)
    assert r.send() == 1
    smtp.wait_for(1)
    assert webhook.posts == []


def test_quiet_hours_defer_non_critical_pages_and_let_critical_ones_through(tmp_path: Path) -> None:
    from hub.alerts.alert_router import QuietHours

    quiet = QuietHours(start="22:00", end="06:00", utc_offset_h=7)
    # 2026-12-02 23:30 WIB is 16:30 UTC; the quiet hours end at 06:00 WIB = 23:00 UTC.
    late = 1_796_315_400_000
    assert quiet.end_if_quiet(late) == 1_796_338_800_000
    assert quiet.end_if_quiet(late + 7 * 3_600_000) is None  # 06:30 WIB
    with webhook_receiver() as webhook:
        routing = tmp_path / "routing.yaml"
        team = {
            "notify": [webhook.url],
            "repeat": "10m",
            "quiet_hours": {"start": "22:00", "end": "06:00"},
        }
        routing.write_text(yaml.safe_dump({"default": team}))
        text = (
            RULES
            + "  - {id: flood, kind: threshold, metric: level_m, above: 4, severity: critical}\n"
        )
        defaults, rules = parse_rules(text, "rules.yaml")
        clock = ManualClock(late)
        store = AlertStore(tmp_path / "alerts.sqlite3")
        router = AlertRouter(load_routing(routing))
        engine = RuleEngine([(defaults, r) for r in rules], SnapshotDirectory(GAUGES), clock)
        consumer = AlertConsumer(
            engine, store, clock, pages=router, escalations=router.run_escalations
        )
        notifier = Notifier(tmp_path / "alerts.sqlite3", clock)
        reading = Reading("g1", "flood", "telemetry", {}, {"level_m": 4.5}, late)
        consumer.consume([reading], WalPosition(1, 1))
        assert notifier.drain(store) == 1  # the critical one, now
        assert [p["title"] for p in webhook.wait_for(1)] == ["[ALERT] critical: flood on g1"]
        clock.advance(3600)
        consumer.tick()  # no repeat of the warning while quiet
        assert notifier.drain(store) == 1  # the critical one's repeat
        clock.set(1_796_338_800_000)
        consumer.tick()
        assert notifier.drain(store) >= 1  # the warning, at 06:00
        titles = [p["title"] for p in webhook.wait_for(3)]
        assert "[ALERT] warning: high-water on g1" in titles
        assert titles.count("[ALERT] warning: high-water on g1") == 1
        store.close()


def test_a_failed_save_loses_no_raise_when_the_batch_comes_again(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, _webhook, _smtp = rig
    reading = Reading("g1", "flood", "telemetry", {}, {"level_m": 3.5}, r.clock.now_ms())
    real_apply = r.store.apply

    def failing_apply(*_args: object, **_kwargs: object) -> list[int]:
        raise sqlite3.OperationalError("database is locked (test)")

    r.store.apply = failing_apply  # type: ignore[method-assign]
    with pytest.raises(sqlite3.OperationalError):
        r.consumer.consume([reading], WalPosition(1, 10))
    r.store.apply = real_apply  # type: ignore[method-assign]
    r.consumer.consume([reading], WalPosition(1, 10))  # what the seam does after a failure
    assert r.store.alert("high-water|g1").state == "firing"
    assert [p["kind"] for p in r.store.pages()] == ["raise"]
