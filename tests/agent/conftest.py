"""Fixtures for agent tests: a running agent over real Mosquitto and real pymodbus servers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import paho.mqtt.client as mqtt

from device_registry.directory import DeviceRecord, SnapshotDirectory
from drivers.framework import DriverFamily
from hub.agent.agent import Agent
from hub.agent.task_supervisor import RestartPolicy
from hub.settings import AgentSettings, Settings
from tests.drivers.conftest import modbus_station  # noqa: F401  (shared fixture)


def flood_record(device_id: str, gateway_id: str, port: int, **config: Any) -> DeviceRecord:
    """A generic 4-20 mA gauge polled every 0.2 s unless the config says otherwise."""
    return DeviceRecord(
        device_id=device_id,
        family="flood",
        device_type="generic_4_20ma",
        gateway_id=gateway_id,
        expected_interval_s=0.2,
        protocol="modbus_tcp",
        address=f"127.0.0.1:{port}",
        driver_config={"timeout_s": 0.3, **config},
    )


def agent_settings(settings: Settings, **agent: Any) -> Settings:
    """Test settings with fast failure policies."""
    fast = {
        # The session broker's gateways have no registry-issued identity: log in as admin.
        "mqtt_username": settings.mqtt.username,
        "offline_after_failures": 2,
        "breaker_failures": 3,
        "breaker_open_s": 0.4,
        "retry_max_s": 0.4,
        "refresh_interval_s": 0.2,
        **agent,
    }
    return settings.model_copy(update={"agent": AgentSettings(**fast)})


@asynccontextmanager
async def running_agent(
    settings: Settings,
    gateway_id: str,
    records: Iterable[DeviceRecord],
    *,
    families: Mapping[str, DriverFamily] | None = None,
    restart_policy: RestartPolicy | None = None,
) -> AsyncIterator[Agent]:
    """An agent running in this loop; stopped (and its tasks joined) on exit."""
    agent = Agent(
        settings=settings,
        gateway_id=gateway_id,
        directory=SnapshotDirectory(records),
        families=families,
        restart_policy=restart_policy,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="agent-under-test")
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a condition without blocking the loop; fail with a clear message on timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


def by_topic(messages: list[mqtt.MQTTMessage], suffix: str) -> list[dict[str, Any]]:
    """Payloads (JSON) of the messages whose topic ends with suffix, in arrival order."""
    return [json.loads(m.payload) for m in messages if m.topic.endswith(suffix)]
