"""The demo runner on a small fleet and a real stack: data for every family, and each fault
changes what the summary model reports (the model, not its rendering); heal restores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import pytest
import pytest_asyncio

from hub.demo.control import parse_fault
from hub.demo.runner import DemoOptions, DemoRunner
from hub.demo.summary import DemoSnapshot, GatewayRow
from hub.influxql import InfluxQL
from tests.conftest import RunningStack, free_port
from tests.demo.conftest import demo_settings, small_fleet

# Fast enough that a 5-minute gauge reports every second and is offline after 3 s.
SPEED = 300.0
FAMILIES = ("flood", "gps", "ble")


async def eventually(
    what: str, check: Callable[[], bool], timeout_s: float = 30.0, every_s: float = 0.25
) -> None:
    """Wait until ``check()`` holds (generous: the machine is shared)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(every_s)


def points(influx: InfluxQL, database: str, measurement: str) -> int:
    """How many values of any field the measurement holds."""
    try:
        series = influx.query(f'SELECT count(*) FROM "{measurement}"', database=database)
    except Exception:
        return 0
    return max((int(v) for s in series for row in s.values for v in row[1:] if v), default=0)


def has_points(influx: InfluxQL, database: str, measurement: str) -> bool:
    """Whether the measurement holds anything yet."""
    return points(influx, database, measurement) > 0


@pytest_asyncio.fixture
async def runner(demo_stack: RunningStack, tmp_path: Path) -> AsyncIterator[DemoRunner]:
    """A demo on the module's stack with a small fleet, stopped after the test."""
    fleet = small_fleet(tmp_path / "fleet.json")
    demo = DemoRunner(
        demo_settings(demo_stack),
        DemoOptions(speed=SPEED, manage_stack=False, fleet_file=fleet, first_port=free_port()),
    )
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


def snap(runner: DemoRunner) -> DemoSnapshot:
    """The summary model now."""
    return runner.snapshot()


@pytest.mark.asyncio
async def test_data_for_every_family_and_device_faults(
    runner: DemoRunner, demo_stack: RunningStack
) -> None:
    """Every family reaches InfluxDB; device-dies, gateway-cut, flood-rises show; heal restores."""
    influx = demo_stack.influx
    database = runner.settings.influx.database
    for family in FAMILIES:
        await eventually(
            f"{family} points in InfluxDB", partial(has_points, influx, database, family)
        )
    await eventually(
        "every device online", lambda: snap(runner).devices_online == snap(runner).devices_total
    )
    assert snap(runner).lines_written > 0
    assert snap(runner).messages_in_per_s > 0
    assert all(snap(runner).produced.get(f, 0) > 0 for f in FAMILIES)

    assert runner.fleet is not None
    polled = next(d for d in runner.fleet.devices if d.family == "flood" and d.gateway_id)
    reply = await runner.control(parse_fault("device-dies", polled.device_id).as_message())
    assert reply["ok"], reply
    await eventually(
        "the dead device offline", lambda: runner._ingest.status.online(polled.device_id) is False
    )
    assert f"device {polled.device_id} dead" in snap(runner).faults
    flood = snap(runner).family("flood")
    assert flood is not None
    assert flood.online == flood.total - 1

    gateway = runner.fleet.gateways[-1].gateway_id
    reply = await runner.control(parse_fault("gateway-cut", gateway).as_message())
    assert reply["ok"], reply
    await eventually("the cut gateway's devices offline", lambda: _gw(runner, gateway).online == 0)
    row = _gw(runner, gateway)
    assert row.cut
    assert row.total > 0

    area = runner.fleet.gateways[0].area
    before = snap(runner).flood_level(area)
    reply = await runner.control(parse_fault("flood-rises", area).as_message())
    assert reply["ok"], reply
    assert f"flood in {area.casefold()}" in snap(runner).faults

    def risen() -> bool:
        runner.summary.refresh_levels()  # type: ignore[union-attr]
        level = snap(runner).flood_level(area)
        return level is not None and (before is None or level > before + 0.1)

    await eventually(f"the water rises in {area}", risen, every_s=1.0)

    reply = await runner.control({"command": "heal"})
    assert reply["ok"], reply
    assert snap(runner).faults == ()
    await eventually(
        "every device back online",
        lambda: snap(runner).devices_online == snap(runner).devices_total,
    )
    assert not _gw(runner, gateway).cut


def _gw(runner: DemoRunner, gateway: str) -> GatewayRow:
    row = snap(runner).gateway(gateway)
    assert row is not None, gateway
    return row


@pytest.mark.asyncio
async def test_unknown_ids_are_refused_and_change_nothing(runner: DemoRunner) -> None:
    """A device, gateway or area the fleet does not hold: one line, no fault set."""
    for name, target, expected in (
        ("device-dies", "no-such-device", "unknown device 'no-such-device'"),
        ("gateway-cut", "gw-nowhere", "unknown gateway 'gw-nowhere'"),
        ("flood-rises", "Atlantis", "unknown area 'Atlantis'"),
    ):
        reply = await runner.control(parse_fault(name, target).as_message())
        assert not reply["ok"]
        assert expected in reply["message"]
        assert "\n" not in reply["message"]
    assert snap(runner).faults == ()


@pytest.mark.asyncio
async def test_broker_restart_and_influx_outage_lose_nothing(runner: DemoRunner) -> None:
    """The broker restarts and the hub reconnects; during an InfluxDB outage the WAL grows,
    after it the WAL drains and every message the hub took in is written."""
    await eventually("data flowing", lambda: snap(runner).lines_written > 20)
    reply = await runner.control(parse_fault("broker-restart", None).as_message())
    assert reply["ok"]
    assert "broker restarted" in reply["message"]
    written = snap(runner).lines_written
    await eventually(
        "the hub writes again after the restart", lambda: snap(runner).lines_written > written + 10
    )

    reply = await runner.control(parse_fault("influx-outage", "4s").as_message())
    assert reply["ok"], reply
    assert any(f.startswith("InfluxDB down") for f in snap(runner).faults)
    await eventually("the WAL grows during the outage", lambda: snap(runner).wal_depth_bytes > 0)
    await eventually(
        "InfluxDB back and the WAL drained",
        lambda: not snap(runner).faults and snap(runner).wal_depth_bytes == 0,
        timeout_s=60,
    )
    stats = runner._ingest.stats
    await eventually(
        "everything appended is written", lambda: stats.lines_written >= stats.lines_appended
    )
