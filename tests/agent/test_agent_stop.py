"""The agent stops even when a driver swallows the cancel (Python 3.11's wait_for race)."""

from __future__ import annotations

import asyncio

from device_registry.directory import DeviceRecord, SnapshotDirectory
from drivers.framework import (
    DeviceSpec,
    DriverConfig,
    DriverFamily,
    Metric,
    Reading,
    utc_now,
)
from hub.agent.agent import Agent
from hub.settings import Settings
from tests.agent.conftest import agent_settings


class SwallowingDriver:
    """A fake driver that behaves like pymodbus under CPython gh-86296.

    When a reply races the cancel, ``asyncio.wait_for`` returns the reply and the cancel
    is lost: this driver does that on purpose, on every cancel it receives.
    """

    swallowed = 0
    swallow = True

    def __init__(self, spec: DeviceSpec, _config: DriverConfig) -> None:
        self.device_id = spec.device_id

    async def poll(self) -> list[Reading]:
        """Wait a little; a cancel during the wait is swallowed and a reading returned."""
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if not SwallowingDriver.swallow:
                raise
            SwallowingDriver.swallowed += 1
        return [Reading(device_id=self.device_id, ts=utc_now(), metrics={"x": 1.0})]

    async def close(self) -> None:
        """Nothing to release."""


FAMILY = DriverFamily(
    name="swallower",
    description="test family whose poll swallows cancellation",
    protocols=("test",),
    metrics=(Metric(key="x", unit="", type="float", description="a value"),),
    config_model=DriverConfig,
    create_poller=SwallowingDriver,
)


async def test_agent_stops_when_a_poll_swallows_the_cancel(
    test_settings: Settings, unique_id: str
) -> None:
    gw = f"gw-{unique_id}"
    records = [
        DeviceRecord(
            device_id=f"{unique_id}-{i}",
            family="swallower",
            device_type="fake",
            gateway_id=gw,
            # Polls back to back, so the stop nearly always lands inside a poll.
            expected_interval_s=0.01,
            protocol="test",
        )
        for i in range(20)
    ]
    agent = Agent(
        settings=agent_settings(test_settings),
        gateway_id=gw,
        directory=SnapshotDirectory(records),
        families={"swallower": FAMILY},
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(1.0)
    assert agent.stats.polls > 20
    SwallowingDriver.swallowed = 0
    stop.set()
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:
        # Let the test end instead of hanging: the fake stops swallowing, then fail.
        SwallowingDriver.swallow = False
        task.cancel()
        await asyncio.wait({task}, timeout=10)
    assert done, "the agent did not stop within 10 s of its stop event"
    assert SwallowingDriver.swallowed > 0  # the cancel was really lost at least once
