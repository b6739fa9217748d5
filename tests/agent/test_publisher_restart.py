"""The outbox publisher under the agent's supervisor, on the real Mosquitto.

A failed ``run`` (an outbox read error) is restarted on the same live session: the
gateway's retained status stays "online" instead of flapping through "offline, agent
stopped" on every restart, and only the agent stopping says offline. paho's network
thread is not ours to supervise: an exception in a callback must neither end it silently
(which stopped every publish and reconnect for good) nor go unnoticed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hub.agent.disk_buffer import DiskBuffer
from hub.agent.mqtt_publisher import MqttPublisher, agent_status_topic
from hub.agent.task_supervisor import RestartPolicy, TaskSupervisor
from tests.agent.conftest import wait_until
from tests.conftest import MqttClientFactory, MqttTestClient, RunningStack

FAST = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2, healthy_after_s=0.5)


@pytest_asyncio.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[DiskBuffer]:
    """The publisher's on-disk outbox."""
    buffer = DiskBuffer(tmp_path / "outbox.sqlite3", max_messages=1000)
    yield buffer
    buffer.close()


def make_publisher(stack: RunningStack, gateway: str, outbox: DiskBuffer) -> MqttPublisher:
    """A publisher on the session broker (admin identity: the test watches every topic)."""
    return MqttPublisher(
        gateway_id=gateway,
        host=stack.mqtt_host,
        port=stack.mqtt_port,
        username=stack.settings.mqtt.username,
        password=stack.mqtt_password,
        outbox=outbox,
    )


def statuses(watcher: MqttTestClient, gateway: str) -> list[tuple[bool, str]]:
    """The gateway's status messages so far: (online, reason)."""
    out = []
    for message in watcher.messages:
        if message.topic == agent_status_topic(gateway):
            body = json.loads(message.payload)
            out.append((bool(body["online"]), str(body.get("reason", ""))))
    return out


def delivered(watcher: MqttTestClient, gateway: str) -> list[bytes]:
    """Payloads of the gateway's data topic the watcher got."""
    return [bytes(m.payload) for m in watcher.messages if m.topic == f"kota/v1/gw/{gateway}/data"]


async def test_a_restarted_publisher_resumes_on_the_live_session_without_flapping(
    running_stack: RunningStack,
    mqtt_client: MqttClientFactory,
    outbox: DiskBuffer,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway = f"{unique_id}-gw"
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gateway}/#")
    publisher = make_publisher(running_stack, gateway, outbox)
    connects = 0
    on_connect = publisher.client.on_connect

    def counting_connect(*args: Any) -> None:
        nonlocal connects
        connects += 1
        on_connect(*args)  # type: ignore[misc]

    publisher.client.on_connect = counting_connect
    real_peek = outbox.peek
    failures = 0

    def peek_fails_twice(limit: int) -> Any:
        nonlocal failures
        if failures < 2 and len(outbox):
            failures += 1
            raise sqlite3.OperationalError("disk I/O error")
        return real_peek(limit)

    supervisor = TaskSupervisor(f"agent-{gateway}", policy=FAST)
    async with asyncio.TaskGroup() as group:
        supervisor.start(group, "publisher", publisher.run)
        await wait_until(lambda: statuses(watcher, gateway) == [(True, "")])
        monkeypatch.setattr(outbox, "peek", peek_fails_twice)
        for n in range(5):
            publisher.enqueue(f"kota/v1/gw/{gateway}/data", f"m{n}".encode())
        await wait_until(lambda: len(delivered(watcher, gateway)) == 5)
        assert failures == 2
        assert supervisor.health()["publisher"].restarts == 2
        # Still the first session, and nobody was told the agent stopped.
        assert connects == 1
        assert statuses(watcher, gateway) == [(True, "")]
        await supervisor.stop()
    await asyncio.to_thread(watcher.wait_for, 7)
    assert statuses(watcher, gateway) == [(True, ""), (False, "agent stopped")]
    assert delivered(watcher, gateway) == [f"m{n}".encode() for n in range(5)]
    assert not publisher.client.is_connected()


async def test_an_exception_in_a_paho_callback_does_not_stop_publishing(
    running_stack: RunningStack,
    mqtt_client: MqttClientFactory,
    outbox: DiskBuffer,
    unique_id: str,
) -> None:
    gateway = f"{unique_id}-gw"
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gateway}/data")
    publisher = make_publisher(running_stack, gateway, outbox)
    on_publish = publisher.client.on_publish
    raised = 0

    def fails_once(*args: Any) -> None:
        nonlocal raised
        if not raised:
            raised += 1
            raise RuntimeError("a bug in a callback")
        on_publish(*args)  # type: ignore[misc]

    publisher.client.on_publish = fails_once
    task = asyncio.create_task(publisher.run())
    try:
        for n in range(3):
            publisher.enqueue(f"kota/v1/gw/{gateway}/data", f"m{n}".encode())
        await wait_until(lambda: len(outbox) == 0 and len(delivered(watcher, gateway)) >= 3, 20)
        assert raised == 1
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# paho's thread dying is the point of this test; pytest reports the thread's exception.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_dead_network_thread_fails_the_publisher_and_a_restart_revives_it(
    running_stack: RunningStack,
    mqtt_client: MqttClientFactory,
    outbox: DiskBuffer,
    unique_id: str,
) -> None:
    gateway = f"{unique_id}-gw"
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gateway}/data")
    publisher = make_publisher(running_stack, gateway, outbox)
    # Whatever else ends paho's thread (here: a callback error with suppression off, as
    # paho 2 does by default) must reach the supervisor, not leave the outbox stuck.
    publisher.client.suppress_exceptions = False
    on_publish = publisher.client.on_publish
    raised = 0

    def fails_once(*args: Any) -> None:
        nonlocal raised
        if not raised:
            raised += 1
            raise RuntimeError("a bug in a callback")
        on_publish(*args)  # type: ignore[misc]

    publisher.client.on_publish = fails_once
    supervisor = TaskSupervisor(f"agent-{gateway}", policy=FAST)
    async with asyncio.TaskGroup() as group:
        supervisor.start(group, "publisher", publisher.run)
        for n in range(3):
            publisher.enqueue(f"kota/v1/gw/{gateway}/data", f"m{n}".encode())
        await wait_until(lambda: len(outbox) == 0 and len(delivered(watcher, gateway)) >= 3, 20)
        health = supervisor.health()["publisher"]
        assert raised == 1
        assert health.restarts >= 1
        assert "network thread has ended" in health.last_error
        await supervisor.stop()
