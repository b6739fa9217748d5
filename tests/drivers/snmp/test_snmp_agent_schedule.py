"""The real agent over SNMP targets: a burst of first polls (the bench's), and its stop
closing the families' shared engine (no pysnmp timer task left behind)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from device_registry.directory import SnapshotDirectory
from drivers.atcs.simulated_controller import SimulatedController
from drivers.snmp.simulated_agent import SimulatedAgents
from drivers.wifi.simulated_ap import SimulatedAccessPoint
from hub.agent.agent import Agent
from hub.settings import Settings
from tests.agent.conftest import agent_settings, by_topic, wait_until
from tests.conftest import MqttClientFactory
from tests.drivers.snmp.conftest import free_udp_port
from tests.drivers.snmp.test_snmp_agent import record


def pysnmp_timers() -> list[asyncio.Task[object]]:
    """This loop's live pysnmp dispatcher timer tasks (one per open SNMP engine)."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and task.get_coro().__qualname__.endswith("handle_timeout")  # type: ignore[union-attr]
    ]


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
        # Slow, not dead: its 0.5 s is well inside its attempt (pysnmp times out on a
        # 0.5 s tick, so the default 0.4 s here could go either way).
        record(
            f"{unique_id}-slow",
            gw,
            "wifi",
            "mikrotik_ap",
            "snmp",
            slow_port,
            request_timeout_s=2.0,
            retries=0,
            timeout_s=4.0,
        ),
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


async def test_the_last_agent_to_stop_closes_the_snmp_engines(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    agents: SimulatedAgents,
    unique_id: str,
) -> None:
    ap_port = await agents.serve(SimulatedAccessPoint(seed=1))
    controller_port = await agents.serve(SimulatedController(period_s=1))
    watcher = mqtt_client()
    runs = []
    for n in (1, 2):
        gw = f"gw-{unique_id}-{n}"
        watcher.subscribe(f"kota/v1/gw/{gw}/dev/+/telemetry")
        # Both families, and the first agent's trap receiver on the wifi engine: every part
        # of it in use (one receiver per engine: pysnmp refuses a second registration).
        traps = {"trap_port": free_udp_port()} if n == 1 else {}
        records = [
            record(f"{unique_id}-ap{n}", gw, "wifi", "mikrotik_ap", "snmp", ap_port, **traps),
            record(
                f"{unique_id}-ctl{n}",
                gw,
                "atcs",
                "ntcip_1202_controller",
                "ntcip_1202",
                controller_port,
            ),
        ]
        agent = Agent(
            settings=agent_settings(test_settings),
            gateway_id=gw,
            directory=SnapshotDirectory(records),
        )
        stop = asyncio.Event()
        runs.append((agent, stop, asyncio.create_task(agent.run(stop))))

    def polled(device_id: str) -> int:
        return len(by_topic(list(watcher.messages), f"dev/{device_id}/telemetry"))

    names = [f"{unique_id}-{kind}{n}" for kind in ("ap", "ctl") for n in (1, 2)]
    try:
        await wait_until(lambda: all(polled(name) for name in names), timeout_s=20)
        assert len(pysnmp_timers()) == 2  # one engine per family on this loop, shared
        # The first agent stops: the second one's engines stay open, its polls go on.
        _, first_stop, first_task = runs[0]
        first_stop.set()
        await asyncio.wait_for(first_task, 15)
        assert len(pysnmp_timers()) == 2
        before = polled(f"{unique_id}-ap2"), polled(f"{unique_id}-ctl2")
        await wait_until(
            lambda: (
                polled(f"{unique_id}-ap2") > before[0] and polled(f"{unique_id}-ctl2") > before[1]
            ),
            timeout_s=20,
        )
    finally:
        for _agent, stop, task in runs:
            stop.set()
            await asyncio.wait_for(task, 15)
    await asyncio.sleep(0)  # a cancelled task ends on the loop's next turn
    assert pysnmp_timers() == []
