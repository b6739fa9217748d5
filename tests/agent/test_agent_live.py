"""The agent end to end: real pymodbus servers in, real Mosquitto out."""

from __future__ import annotations

import asyncio
import json

from hub.settings import Settings
from tests.agent.conftest import agent_settings, by_topic, flood_record, running_agent, wait_until
from tests.conftest import MqttClientFactory, free_port
from tests.drivers.conftest import StationFactory


async def test_publishes_per_contract_and_a_dead_or_slow_device_delays_no_one(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    modbus_station: StationFactory,
    unique_id: str,
) -> None:
    gw = f"gw-{unique_id}"
    good_station = await modbus_station()
    good_station.set_registers(1, 3, [2])
    good_station.set_int16(1, 4, -41)
    slow_station = await modbus_station()
    slow_station.response_delay_s = 5.0
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gw}/#")
    records = [
        flood_record(f"{unique_id}-good", gw, good_station.port),
        flood_record(f"{unique_id}-slow", gw, slow_station.port),
        flood_record(f"{unique_id}-dead", gw, free_port()),
    ]
    settings = agent_settings(test_settings)
    async with running_agent(settings, gw, records) as agent:
        await asyncio.sleep(2.5)
        stats = agent.stats
    messages = watcher.wait_for(1)
    good = by_topic(messages, f"dev/{unique_id}-good/telemetry")
    # 2.5 s at 0.2 s: about 12 polls; the slow and the dead device must not hold it back.
    assert len(good) >= 9, len(good)
    assert all(p["metrics"] == {"level_m": -0.41} for p in good)
    assert [p["seq"] for p in good] == sorted(p["seq"] for p in good)
    # Contract: the agent sends ts as epoch milliseconds (the hub's fast path).
    assert all(isinstance(p["ts"], int) and p["ts"] > 1_600_000_000_000 for p in good)
    assert [p["online"] for p in by_topic(messages, f"dev/{unique_id}-good/status")] == [True]
    for bad in ("slow", "dead"):
        statuses = by_topic(messages, f"dev/{unique_id}-{bad}/status")
        assert [s["online"] for s in statuses] == [False], bad
        assert statuses[0]["reason"]
        assert not by_topic(messages, f"dev/{unique_id}-{bad}/telemetry")
    status_messages = [m for m in messages if m.topic.endswith("/status") and "/dev/" in m.topic]
    assert all(m.retain is False for m in status_messages)  # live delivery clears the flag
    # Breaker: after 3 failures the dead device is probed only every 0.4 s, not every 0.2 s.
    assert stats.failures < stats.polls
    # Why they failed, counted by family and reason (numbers folded, so ports do not split).
    assert sum(stats.failed_by.values()) == stats.failures
    assert all(kind.startswith("flood: ") for kind in stats.failed_by)
    assert all(not any(c.isdigit() for c in kind) for kind in stats.failed_by)
    own = by_topic(messages, f"gw/{gw}/status")
    assert [s["online"] for s in own] == [True, False]
    assert own[-1]["reason"] == "agent stopped"
    # The device statuses were retained: a newcomer sees them.
    late = mqtt_client()
    late.subscribe(f"kota/v1/gw/{gw}/dev/{unique_id}-dead/status")
    retained = late.wait_for(1, timeout_s=5)
    assert retained
    assert retained[0].retain


async def test_device_offline_and_back_online_once_each_way(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    modbus_station: StationFactory,
    unique_id: str,
) -> None:
    gw = f"gw-{unique_id}"
    station = await modbus_station()
    station.set_registers(1, 3, [0])
    station.set_int16(1, 4, 3)
    watcher = mqtt_client()
    status_topic = f"kota/v1/gw/{gw}/dev/{unique_id}-g/status"
    watcher.subscribe(status_topic)
    telemetry = mqtt_client()
    telemetry.subscribe(f"kota/v1/gw/{gw}/dev/{unique_id}-g/telemetry")
    records = [flood_record(f"{unique_id}-g", gw, station.port)]
    async with running_agent(agent_settings(test_settings), gw, records) as agent:
        await wait_until(lambda: len(telemetry.messages) >= 2)
        await station.stop()
        await wait_until(lambda: len(watcher.messages) >= 2)
        failures_when_offline = agent.health[f"{unique_id}-g"].failures
        await wait_until(
            lambda: agent.health[f"{unique_id}-g"].failures >= failures_when_offline + 3
        )
        await station.start()
        await wait_until(lambda: len(watcher.messages) >= 3)
        count = len(telemetry.messages)
        await wait_until(lambda: len(telemetry.messages) >= count + 3)
    statuses = [m.payload for m in watcher.messages]
    assert [json.loads(s)["online"] for s in statuses] == [True, False, True]
