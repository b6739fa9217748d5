"""Planned maintenance windows: covered devices page no one, their alerts are still recorded."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.alerts.alert_store import AlertStore
from hub.alerts.maintenance import MaintenanceError, add_window, end_window, in_window, windows
from tests.alerts.receivers import SmtpReceiver, WebhookReceiver, smtp_receiver, webhook_receiver
from tests.alerts.test_alert_state import T0, Rig

HOUR_MS = 3_600_000


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[Rig, WebhookReceiver, SmtpReceiver]]:
    with webhook_receiver() as webhook, smtp_receiver() as smtp:
        made = Rig(tmp_path, webhook, smtp)
        yield made, webhook, smtp
        made.store.close()


def _events(r: Rig, key: str) -> list[str]:
    return [row["kind"] for row in r.store.events_of(key)]


def test_a_kecamatan_and_family_window_pages_no_one_then_escalation_resumes(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, webhook, smtp = rig
    # Planned the day before: flood devices of Genuk, from T0 + 1 h for one hour.
    add_window(
        r.store,
        kecamatan="Genuk",
        family="flood",
        starts_ms=T0 + HOUR_MS,
        ends_ms=T0 + 2 * HOUR_MS,
        actor="budi",
        comment="pump house works",
    )
    r.tick(3601)
    r.feed("g1", 3.5)  # Genuk, in the window
    r.feed("g2", 3.5)  # Tugu, not in it: paged to the default team
    assert r.send() == 1
    assert [p["title"] for p in webhook.wait_for(1)] == ["[ALERT] warning: high-water on g2"]
    assert r.store.alert("high-water|g1").state == "firing"  # recorded all the same
    assert _events(r, "high-water|g1") == ["raise"]
    r.tick(20 * 60)  # past the team's 15 min escalation, inside the window: none
    assert r.send() == 0
    assert _events(r, "high-water|g1") == ["raise"]
    # The window closes with g1 still high: its escalation goes out now, not before.
    r.clock.set(T0 + 2 * HOUR_MS)
    r.tick(0)
    assert r.send() == 1
    (mail,) = smtp.wait_for(1)
    assert "high-water on g1" in str(mail["Subject"])
    assert _events(r, "high-water|g1") == ["raise", "escalate"]


def test_a_device_window_covers_that_device_only_and_can_be_ended_early(
    rig: tuple[Rig, WebhookReceiver, SmtpReceiver],
) -> None:
    r, webhook, _smtp = rig
    window = add_window(r.store, device_id="g1", starts_ms=T0, ends_ms=T0 + HOUR_MS, actor="budi")
    # A window of another family in the same kecamatan does not cover the gauge.
    add_window(
        r.store, kecamatan="Genuk", family="cctv", starts_ms=T0, ends_ms=T0 + HOUR_MS, actor="x"
    )
    r.feed("g1", 3.5)
    assert r.send() == 0
    assert [w.id for w in windows(r.store, after_ms=r.clock.now_ms())] == [window, window + 1]
    r.feed("g1", 2.0)  # cleared inside the window: nobody was told, no RESOLVED either
    assert r.send() == 0
    assert end_window(r.store, window, r.clock.now_ms())
    assert not end_window(r.store, window, r.clock.now_ms())  # already closed
    r.tick(1)
    r.feed("g1", 3.5)  # raised again after the window: paged
    assert r.send() == 1
    assert [p["title"] for p in webhook.wait_for(1)] == ["[ALERT] warning: high-water on g1"]


def test_a_window_needs_a_scope_and_an_end_after_its_start(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.sqlite3")
    with pytest.raises(MaintenanceError, match="needs a device"):
        add_window(store, starts_ms=T0, ends_ms=T0 + 1, actor="x")
    with pytest.raises(MaintenanceError, match="end after"):
        add_window(store, device_id="g1", starts_ms=T0, ends_ms=T0, actor="x")
    store.close()


_SCOPES = st.sampled_from([None, "a", "b"])


@settings(max_examples=200, deadline=None)
@given(
    device=_SCOPES,
    kecamatan=_SCOPES,
    family=_SCOPES,
    starts=st.integers(0, 100),
    length=st.integers(1, 100),
    now=st.integers(-5, 205),
    alert_scope=st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["a", "b"])),
)
def test_window_coverage_matches_its_definition(
    device: str | None,
    kecamatan: str | None,
    family: str | None,
    starts: int,
    length: int,
    now: int,
    alert_scope: tuple[str, str],
) -> None:
    """Open from its start (included) to its end (excluded); a device id, else every given key."""
    db = sqlite3.connect(":memory:")
    from hub.alerts.maintenance import SCHEMA

    db.executescript(SCHEMA)
    db.execute(
        "INSERT INTO maintenance (device_id, kecamatan, family, starts_ms, ends_ms, created_by) "
        "VALUES (?, ?, ?, ?, ?, 'x')",
        (device, kecamatan, family, starts, starts + length),
    )
    alert_device, alert_kecamatan = alert_scope

    class Alert:
        device_id = alert_device
        kecamatan = alert_kecamatan
        family = "a"

    open_now = starts <= now < starts + length
    if device is not None:
        covers = device == alert_device
    else:
        covers = kecamatan in (None, alert_kecamatan) and family in (None, "a")
    assert in_window(db, Alert(), now) == (open_now and covers)  # type: ignore[arg-type]
