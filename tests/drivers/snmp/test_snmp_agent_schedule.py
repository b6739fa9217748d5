"""The real agent's schedule over SNMP targets: a burst of first polls (the bench's)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from device_registry.directory import SnapshotDirectory
from drivers.snmp.simulated_agent import SimulatedAgents
from drivers.wifi.simulated_ap import SimulatedAccessPoint
from hub.agent.agent import Agent
from hub.settings import Settings
from tests.agent.conftest import agent_settings, by_topic, wait_until
from tests.conftest import MqttClientFactory
from tests.drivers.snmp.test_snmp_agent import record


async def test_burst_polls_every_target_at_once_past_silent_and_slow_ones(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    agents: SimulatedAgents,
    unique_id: str,
) -> None:
    gw = f"gw-{unique_id}"
    answering = [f"{unique_id}-ap{n}" for n in range(6)]
    ports = [await agents.serve(SimulatedAccessPoint(seed=n)) for n in range(6)]
    slow_port = await agents.serve(SimulatedAccessPoint(seed=9, delay_s=0.5))
    silent_port = await agents.serve(SimulatedAccessPoint(silent=True))
    records = [
        record(name, gw, "wifi", "mikrotik_ap", "snmp", port)
        for name, port in zip(answering, ports, strict=True)
    ]
    records += [
        record(f"{unique_id}-slow", gw, "wifi", "mikrotik_ap", "snmp", slow_port),
        record(f"{unique_id}-dead", gw, "wifi", "mikrotik_ap", "snmp", silent_port),
    ]
    # A 60 s interval: spread, the last of 8 first polls would wait 52 s; a burst waits none.
    records = [replace(r, expected_interval_s=60.0) for r in records]
    records = records[-1:] + records[:-1]  # the silent one first: it must hold no one up
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gw}/dev/+/telemetry")
    agent = Agent(
        settings=agent_settings(test_settings),
        gateway_id=gw,
        directory=SnapshotDirectory(records),
        spread_first_polls=False,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await wait_until(
            lambda: all(
                by_topic(watcher.messages, f"dev/{name}/telemetry")
                for name in [*answering, f"{unique_id}-slow"]
            ),
            timeout_s=20,
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert agent.stats.late_polls == 0
    assert not by_topic(list(watcher.messages), f"dev/{unique_id}-dead/telemetry")
    # One poll each so far: the next ones are a whole interval away.
    assert all(len(by_topic(list(watcher.messages), f"dev/{n}/telemetry")) == 1 for n in answering)
