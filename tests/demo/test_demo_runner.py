"""The demo runner on a small fleet and a real stack: data for every family, and each fault
changes what the summary model reports (the model, not its rendering); heal restores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
import pytest_asyncio

from hub.demo.control import parse_fault
from hub.demo.runner import DemoOptions, DemoRunner
from hub.demo.summary import DemoSnapshot, GatewayRow
from hub.influxql import InfluxQL
from tests.conftest import RunningStack, free_port
from tests.demo.conftest import SMALL_AREAS, demo_settings, small_fleet
from tests.demo.helpers import eventually

# Fast enough that a 5-minute gauge reports every second and is offline after 3 s.
SPEED = 300.0
FAMILIES = ("flood", "gps", "ble", "cctv", "wifi", "atcs")
# Detectors have a measurement of their own; their controller's simulator counts them.
MEASUREMENTS = (*FAMILIES, "atcs_detector")


def points(influx: InfluxQL, database: str, measurement: str) -> int:
    """How many values of any field the measurement holds."""
    try:
        series = influx.query(f'SELECT count(*) FROM "{measurement}"', database=database)
    except Exception:
        return 0
    return max((int(v) for s in series for row in s.values for v in row[1:] if v), default=0)


def all_up(runner: DemoRunner, families: tuple[str, ...]) -> bool:
    """Whether every device of these families is online."""
    rows = [snap(runner).family(f) for f in families]
    return all(row is not None and row.online == row.total for row in rows)


def has_points(influx: InfluxQL, database: str, measurement: str) -> bool:
    """Whether the measurement holds anything yet."""
    return points(influx, database, measurement) > 0


@pytest_asyncio.fixture
async def runner(demo_stack: RunningStack, tmp_path: Path) -> AsyncIterator[DemoRunner]:
    """A demo on the module's stack with a small fleet, stopped after the test."""
    # Gayamsari: the small fleet's signal controller and its detectors.
    fleet = small_fleet(tmp_path / "fleet.json", areas=(*SMALL_AREAS, "Gayamsari"))
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
    """Every family reaches InfluxDB; unknown ids are refused; device-dies, gateway-cut and
    flood-rises change the summary model; heal restores it."""
    influx = demo_stack.influx
    database = runner.settings.influx.database
    for measurement in MEASUREMENTS:
        await eventually(
            f"{measurement} points in InfluxDB",
            partial(has_points, influx, database, measurement),
        )
    # Sensors that sleep at night (simulated time) stay offline: the baseline is who is up
    # once every flood gauge and vehicle reports.
    await eventually("gauges and vehicles online", partial(all_up, runner, ("flood", "gps")))
    baseline = snap(runner).devices_online
    assert snap(runner).lines_written > 0
    await eventually("a rate in the summary", lambda: snap(runner).messages_in_per_s > 0)
    # Polled families count a poll once it is over (its timeout_s after its first request,
    # a camera's 20 s), not at once.
    await eventually(
        "readings counted for every family",
        lambda: all(snap(runner).produced.get(f, 0) > 0 for f in FAMILIES),
        timeout_s=90.0,
    )

    # Unknown ids: one line each, and no fault set.
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

    # Three faults at once (their effects are awaited together, to keep the test short):
    # a gauge of the first area dies, the last area's gateway is cut, the first floods.
    assert runner.fleet is not None
    first, last = runner.fleet.gateways[0], runner.fleet.gateways[-1]
    polled = next(
        d for d in runner.fleet.devices if d.gateway_id == first.gateway_id and d.family == "flood"
    )
    assert runner._ingest.status.online(polled.device_id) is True
    area = first.area

    def level() -> float | None:
        runner.summary.refresh_levels()  # type: ignore[union-attr]
        return snap(runner).flood_level(area)

    await eventually(f"a water level in {area}", lambda: level() is not None)
    before = level()
    assert before is not None
    gateway_online = _gw(runner, last.gateway_id).online
    assert gateway_online > 0
    for name, target in (
        ("device-dies", polled.device_id),
        ("gateway-cut", last.gateway_id),
        ("flood-rises", area.upper()),  # any case, or the slug
    ):
        reply = await runner.control(parse_fault(name, target).as_message())
        assert reply["ok"], reply
    faults = snap(runner).faults
    assert f"device {polled.device_id} dead" in faults
    assert f"gateway {last.gateway_id} cut" in faults
    assert f"flood in {area.casefold()}" in faults

    await eventually(
        "the dead device offline", lambda: runner._ingest.status.online(polled.device_id) is False
    )
    await eventually(
        "the cut gateway's devices offline", lambda: _gw(runner, last.gateway_id).online == 0
    )
    row = _gw(runner, last.gateway_id)
    assert row.cut
    assert row.total > 0

    await eventually(
        f"the water rises in {area}", lambda: (level() or before) > before + 0.1, every_s=1.0
    )
    assert snap(runner).devices_online < baseline - 1

    reply = await runner.control({"command": "heal"})
    assert reply["ok"], reply
    assert snap(runner).faults == ()
    assert not _gw(runner, last.gateway_id).cut
    await eventually("back to the baseline", lambda: snap(runner).devices_online >= baseline)
    assert _gw(runner, last.gateway_id).online >= gateway_online


def _gw(runner: DemoRunner, gateway: str) -> GatewayRow:
    row = snap(runner).gateway(gateway)
    assert row is not None, gateway
    return row


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

    reply = await runner.control(parse_fault("influx-outage", "3s").as_message())
    assert reply["ok"], reply
    assert any(f.startswith("InfluxDB down") for f in snap(runner).faults)
    await eventually("the WAL grows during the outage", lambda: snap(runner).wal_depth_bytes > 0)
    await eventually(
        "InfluxDB back and the WAL drained",
        lambda: not snap(runner).faults and snap(runner).wal_depth_bytes == 0,
        timeout_s=60,
    )
    stats = runner._ingest.stats
    appended = stats.lines_appended
    await eventually("everything appended is written", lambda: stats.lines_written >= appended)
