"""The agent's first status messages are not lost when the broker is not reachable yet.

A status is queued in the on-disk outbox and sent only on a live session, so the first
device status an agent reports while it is still connecting (or while the broker is down
at start-up) reaches the broker once the connection is up. The broker is the real
Mosquitto; a TCP relay in front of it refuses connections until the test opens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from hub.agent.disk_buffer import DiskBuffer
from hub.agent.mqtt_publisher import (
    MqttPublisher,
    agent_status_topic,
    gateway_topic,
    status_payload,
)
from tests.agent.conftest import wait_until
from tests.conftest import MqttClientFactory, RunningStack, free_port


class Relay:
    """A TCP relay to the broker that hangs up on every client until ``open`` is set."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.open = False
        self.refused = 0
        self.port = free_port()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Refuse while closed, else copy both ways."""
        if not self.open:
            self.refused += 1
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))


@pytest_asyncio.fixture
async def relay(running_stack: RunningStack) -> AsyncIterator[Relay]:
    """The relay, listening on a port of its own."""
    relay = Relay(running_stack.mqtt_host, running_stack.mqtt_port)
    server = await asyncio.start_server(relay.handle, "127.0.0.1", relay.port)
    try:
        yield relay
    finally:
        server.close()


async def test_a_status_queued_before_the_broker_is_reachable_arrives_once_it_is(
    running_stack: RunningStack,
    mqtt_client: MqttClientFactory,
    relay: Relay,
    tmp_path: Path,
    unique_id: str,
) -> None:
    gateway, device = f"{unique_id}-gw", f"{unique_id}-dev"
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gateway}/#")
    outbox = DiskBuffer(tmp_path / "outbox.sqlite3", max_messages=100)
    publisher = MqttPublisher(
        gateway_id=gateway,
        host="127.0.0.1",
        port=relay.port,
        username=running_stack.settings.mqtt.username,
        password=running_stack.mqtt_password,
        outbox=outbox,
    )
    topic = gateway_topic(gateway, device, "status")
    # The agent's first poll reports before any session exists.
    publisher.enqueue(topic, status_payload("offline", "no answer"), retain=True)
    task = asyncio.create_task(publisher.run())
    try:
        await wait_until(lambda: relay.refused >= 1)  # paho tried, and the broker was not there
        assert not publisher.connected
        publisher.enqueue(topic, status_payload("online"), retain=True)
        relay.open = True
        await wait_until(lambda: len(outbox) == 0, timeout_s=20)
        await asyncio.to_thread(watcher.wait_for, 3)
        device_statuses = [
            json.loads(m.payload)["online"] for m in watcher.messages if m.topic == topic
        ]
        assert device_statuses == [False, True]  # both, in order, neither lost
        assert any(m.topic == agent_status_topic(gateway) for m in watcher.messages)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        outbox.close()
