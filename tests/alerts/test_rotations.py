"""On-call rotations: who is paged at an instant, across a handover, on the manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.alert_consumer import AlertConsumer
from hub.alerts.alert_router import AlertRouter, load_routing
from hub.alerts.alert_store import AlertStore
from hub.alerts.clock import ManualClock
from hub.alerts.notifier import Notifier, RetryPolicy
from hub.alerts.rotations import Rotation
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import RuleError, parse_rules
from hub.ingest.wal_consumers import Reading
from hub.ingest.write_ahead_log import WalPosition
from tests.alerts.receivers import WebhookReceiver, webhook_receiver

# Monday 7 December 2026, 08:00 in Jakarta (WIB, UTC+7) is 01:00 UTC.
HANDOVER_MS = int(datetime(2026, 12, 7, 1, 0, tzinfo=UTC).timestamp() * 1000)
MINUTE_MS = 60_000


def weekly(*names: str) -> Rotation:
    """A rotation handing over every Monday at 08:00 WIB, in the listed order."""
    return Rotation.model_validate(
        {
            "id": "pompa",
            "members": [{"name": n, "notify": [f"json://127.0.0.1:1/{n}"]} for n in names],
            "handover": {"start": "2026-11-30 08:00", "every": "1w"},
        }
    )


def test_a_weekly_handover_passes_the_pager_at_the_local_time() -> None:
    rotation = weekly("budi", "sari", "eko")
    before = rotation.on_call(HANDOVER_MS - 1)
    after = rotation.on_call(HANDOVER_MS)
    assert before.member.name == "budi"  # his week began on 30 November
    assert after.member.name == "sari"
    assert before.end_ms == after.start_ms == HANDOVER_MS
    assert rotation.on_call(HANDOVER_MS + 7 * 86_400_000).member.name == "eko"
    assert rotation.on_call(HANDOVER_MS + 14 * 86_400_000).member.name == "budi"


def test_shifts_follow_the_weekly_timetable_and_wrap_round_the_week() -> None:
    rotation = Rotation.model_validate(
        {
            "id": "supervisors",
            "members": [
                {"name": "ani", "notify": ["json://x/ani"]},
                {"name": "eko", "notify": ["json://x/eko"]},
            ],
            "shifts": [
                {"from": "mon 08:00", "member": "ani"},
                {"from": "fri 20:00", "member": "eko"},
            ],
        }
    )
    assert rotation.on_call(HANDOVER_MS - 1).member.name == "eko"  # Sunday night: Friday's shift
    assert rotation.on_call(HANDOVER_MS).member.name == "ani"
    friday_2000_wib = HANDOVER_MS + 4 * 86_400_000 + 12 * 3_600_000
    assert rotation.on_call(friday_2000_wib - 1).member.name == "ani"
    assert rotation.on_call(friday_2000_wib).member.name == "eko"


@pytest.mark.parametrize(
    ("rotation", "message"),
    [
        (
            {
                "members": [
                    {"name": "a", "notify": ["json://x"]},
                    {"name": "b", "notify": ["json://y"]},
                ]
            },
            "needs handover or shifts",
        ),
        (
            {
                "members": [{"name": "a", "notify": ["json://x"]}],
                "shifts": [{"from": "mon 08:00", "member": "zz"}],
            },
            "'zz' is not one of the members",
        ),
        (
            {"members": [{"name": "a", "notify": ["json://x"]}], "timezone": "Asia/Semarang"},
            "unknown time zone",
        ),
        (
            {
                "members": [{"name": "a", "notify": ["json://x"]}],
                "shifts": [{"from": "someday 08:00", "member": "a"}],
            },
            "a shift starts at",
        ),
    ],
)
def test_a_bad_rotation_stops_the_load_naming_the_file(
    tmp_path: Path, rotation: dict[str, object], message: str
) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump({"rotations": [{"id": "r", **rotation}]}))
    with pytest.raises(RuleError, match=message) as caught:
        load_routing(path)
    assert str(path) in str(caught.value)


def test_a_team_naming_an_unknown_rotation_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump({"teams": [{"id": "t", "rotation": "nobody"}]}))
    with pytest.raises(RuleError, match="team 't': no rotation 'nobody'"):
        load_routing(path)


ZONES = ["Asia/Jakarta", "Asia/Makassar", "Asia/Jayapura", "UTC", "Asia/Kolkata", "Europe/Berlin"]


@st.composite
def rotations(draw: st.DrawFn) -> Rotation:
    """Any non-empty rotation: one member, a handover, or a weekly timetable."""
    count = draw(st.integers(1, 5))
    members = [{"name": f"m{i}", "notify": [f"json://x/m{i}"]} for i in range(count)]
    spec: dict[str, object] = {
        "id": "r",
        "members": members,
        "timezone": draw(st.sampled_from(ZONES)),
    }
    kind = draw(
        st.sampled_from(["single", "handover", "shifts"]) if count > 1 else st.just("single")
    )
    if kind == "single":
        spec["members"] = members[:1]
    elif kind == "handover":
        start = draw(st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)))
        every = draw(st.integers(3600, 14 * 86_400))
        spec["handover"] = {"start": start.replace(microsecond=0).isoformat(), "every": every}
    else:
        days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        starts = draw(
            st.lists(
                st.tuples(st.sampled_from(days), st.integers(0, 23), st.integers(0, 59)),
                min_size=1,
                max_size=8,
                unique=True,
            )
        )
        spec["shifts"] = [
            {"from": f"{d} {h:02d}:{m:02d}", "member": f"m{i % count}"}
            for i, (d, h, m) in enumerate(starts)
        ]
    return Rotation.model_validate(spec)


@settings(max_examples=300, deadline=None)
@given(rotation=rotations(), at_ms=st.integers(1_600_000_000_000, 1_900_000_000_000))
def test_exactly_one_member_is_on_call_at_any_instant(rotation: Rotation, at_ms: int) -> None:
    shift = rotation.on_call(at_ms)
    assert shift.member in rotation.members
    assert shift.start_ms <= at_ms < shift.end_ms
    # The shifts tile time: the one before ends where this one starts, the next starts at its
    # end, and the whole shift is one member's (no overlap, no gap, no second member).
    if shift.end_ms < 2**62:
        assert rotation.on_call(shift.end_ms).start_ms == shift.end_ms
        assert rotation.on_call(shift.start_ms - 1).end_ms == shift.start_ms
        assert rotation.on_call(shift.end_ms - 1) == shift
    assert rotation.on_call(shift.start_ms) == shift


RULES = """
rules:
  - {id: high-water, kind: threshold, metric: level_m, above: 3.0, clear: 2.8}
"""


class Rig:
    """Engine, store, router with a rotation, consumer and notifier on a manual clock."""

    def __init__(self, tmp_path: Path, webhook: WebhookReceiver) -> None:
        hook = f"json://127.0.0.1:{webhook.port}"
        routing = tmp_path / "routing.yaml"
        routing.write_text(
            yaml.safe_dump(
                {
                    "rotations": [
                        {
                            "id": "pompa-genuk",
                            "members": [
                                {"name": "budi", "notify": [f"{hook}/budi"]},
                                {"name": "sari", "notify": [f"{hook}/sari"]},
                            ],
                            "handover": {"start": "2026-11-30 08:00", "every": "1w"},
                        },
                        {
                            "id": "supervisors",
                            "members": [
                                {"name": "ani", "notify": [f"{hook}/ani"]},
                                {"name": "eko", "notify": [f"{hook}/eko"]},
                            ],
                            "shifts": [
                                {"from": "mon 08:00", "member": "eko"},
                                {"from": "08:30", "member": "ani"},
                            ],
                        },
                    ],
                    "teams": [
                        {
                            "id": "pompa-genuk",
                            "match": {"kecamatan": ["Genuk"]},
                            "rotation": "pompa-genuk",
                            "escalate": [{"after": "15m", "rotation": "supervisors"}],
                        }
                    ],
                }
            )
        )
        self.clock = ManualClock(HANDOVER_MS - 10 * MINUTE_MS)  # Monday 07:50 WIB
        defaults, rules = parse_rules(RULES, "rules.yaml")
        self.store = AlertStore(tmp_path / "alerts.sqlite3")
        directory = SnapshotDirectory(
            [
                DeviceRecord(
                    device_id=f"g{i}",
                    family="flood",
                    device_type="vegapuls-c21",
                    tags={"kecamatan": "Genuk"},
                )
                for i in (1, 2)
            ]
        )
        router = AlertRouter(load_routing(routing), directory)
        engine = RuleEngine([(defaults, r) for r in rules], directory, self.clock)
        self.consumer = AlertConsumer(
            engine, self.store, self.clock, pages=router, escalations=router.run_escalations
        )
        self.notifier = Notifier(
            tmp_path / "alerts.sqlite3",
            self.clock,
            policy=RetryPolicy(retry_min_s=1, retry_max_s=4, max_attempts=3, timeout_s=5),
        )
        self.offset = 0

    def feed(self, device_id: str, level: float) -> None:
        self.offset += 100
        reading = Reading(
            device_id, "flood", "telemetry", {}, {"level_m": level}, self.clock.now_ms()
        )
        self.consumer.consume([reading], WalPosition(1, self.offset))

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.consumer.tick()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Rig, WebhookReceiver]]:
    with webhook_receiver() as webhook:
        made = Rig(tmp_path, webhook)
        yield made, webhook
        made.store.close()


def test_pages_go_to_whoever_is_on_call_across_a_handover(rig: tuple[Rig, WebhookReceiver]) -> None:
    r, webhook = rig
    r.feed("g1", 3.4)  # Monday 07:50 WIB: still budi's week
    assert r.notifier.drain(r.store) == 1
    webhook.wait_for(1)
    assert webhook.paths == ["/budi"]
    r.tick(10 * 60)  # 08:00: sari takes over
    r.feed("g2", 3.5)
    assert r.notifier.drain(r.store) == 1
    webhook.wait_for(2)
    assert webhook.paths[1] == "/sari"
    # g1 not acknowledged 15 min after its raise (08:05): the supervisors' level pages eko,
    # whose shift runs 08:00-08:30.
    r.tick(5 * 60)
    assert r.notifier.drain(r.store) == 1
    webhook.wait_for(3)
    assert webhook.paths[2] == "/eko"
    # The clear tells the member that got the page (budi), not the new on-call.
    r.feed("g1", 2.0)
    r.notifier.drain(r.store)
    posts = webhook.wait_for(5)
    resolved = sorted(
        p for p, post in zip(webhook.paths, posts, strict=True) if "RESOLVED" in post["title"]
    )
    assert resolved == ["/budi", "/eko"]
    # After 08:30 the supervisors' pages go to ani: g2's escalation (due 08:15, run at
    # 08:36), and g1 raised again at 08:36 (sari's week) and escalated at 08:52.
    r.tick(31 * 60)
    r.feed("g1", 3.6)
    r.notifier.drain(r.store)
    webhook.wait_for(7)
    assert sorted(webhook.paths[5:7]) == ["/ani", "/sari"]
    r.tick(16 * 60)
    r.notifier.drain(r.store)
    webhook.wait_for(8)
    assert webhook.paths[7] == "/ani"
