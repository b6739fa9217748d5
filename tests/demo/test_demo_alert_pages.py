"""Demo item 8: the shipped rule set runs in the demo, and ``flood-rises AREA`` pages that
area's team at the webhook receiver the demo starts (real HTTP, real stack)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from device_registry.api_tokens import create_token
from hub.alerts.demo_pages import area_slug
from hub.demo.control import parse_fault
from hub.demo.runner import DemoOptions, DemoRunner
from tests.conftest import RunningStack, free_port
from tests.demo.conftest import SMALL_AREAS, demo_settings, small_fleet
from tests.demo.helpers import eventually

SPEED = 300.0  # a simulated hour in 12 s: the raised flood lifts levels 0.9 m an hour
FLOODED = SMALL_AREAS[0]  # Semarang Utara
FLOOD_RULES = ("flood-stage", "flood-rising-fast")


@pytest_asyncio.fixture
async def runner(demo_stack: RunningStack, tmp_path: Path) -> AsyncIterator[DemoRunner]:
    """A demo on the module's stack with a small fleet, stopped after the test."""
    demo = DemoRunner(
        demo_settings(demo_stack),
        DemoOptions(
            speed=SPEED,
            manage_stack=False,
            fleet_file=small_fleet(tmp_path / "fleet.json"),
            first_port=free_port(),
            with_api=False,
        ),
    )
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


def flood_pages(runner: DemoRunner, area: str) -> list[dict[str, str]]:
    """The flood rules' pages the receiver lists (over HTTP) for the area's team."""
    listed = httpx.get(runner.pages_url, timeout=5).json()
    return [
        page
        for page in listed
        if page["team"] == f"area-{area_slug(area)}"
        and any(f": {rule} on " in page["title"] for rule in FLOOD_RULES)
    ]


def device_of(title: str) -> str:
    """The device a page's title names (``[ALERT] warning: RULE on DEVICE``)."""
    found = re.search(r" on (\S+)$", title)
    assert found is not None, title
    return found.group(1)


def flood_online(runner: DemoRunner) -> bool:
    """Whether every flood device reports."""
    row = runner.snapshot().family("flood")
    return row is not None and row.total > 0 and row.online == row.total


@pytest.mark.asyncio
async def test_flood_rises_pages_the_area_team_at_the_demo_receiver(runner: DemoRunner) -> None:
    assert runner.pages_url.startswith("http://127.0.0.1:")
    snap = runner.snapshot()
    assert any(
        label == "alert pages" and runner.pages_url in text for label, text in snap.next_steps
    )
    area_of = {d.device_id: d.kecamatan for d in runner.fleet.devices} if runner.fleet else {}
    # The rules see the gauges first (readings flowing), then the flood is raised.
    await eventually("flood gauges online", lambda: flood_online(runner))
    before = len(flood_pages(runner, FLOODED))
    reply = await runner.control(parse_fault("flood-rises", FLOODED).as_message())
    assert reply["ok"], reply
    await eventually(
        f"a flood page to {FLOODED}'s team", lambda: len(flood_pages(runner, FLOODED)) > before
    )
    # Every page went to the team of the device's own area (routing by kecamatan).
    for page in runner._alerts.receiver.received():
        assert page.area == area_slug(area_of.get(device_of(page.title), "city")), page
    flooded = {device_of(p["title"]) for p in flood_pages(runner, FLOODED)}
    assert flooded <= {d for d, a in area_of.items() if a == FLOODED}
    # The technician page's Alerts tab reads the same alerts from the demo's alert API with
    # a registry token (the demo's sign-in is one); without a token the API refuses.
    assert runner._alerts.page_url.startswith("http://127.0.0.1:")
    api = f"{runner._alerts.page_url}/alerts/api/v1/alerts"
    assert runner._database is not None
    viewer = create_token(runner._database, name=f"t-{FLOODED}", role="viewer", actor="test")
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(api)).status_code == 401
        listed = await client.get(api, headers={"Authorization": f"Bearer {viewer.token}"})
    assert listed.status_code == 200, listed.text
    assert flooded & {str(row["device_id"]) for row in listed.json()["alerts"]}
