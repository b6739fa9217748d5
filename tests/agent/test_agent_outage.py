"""Broker outage: the agent buffers on disk and sends in order when the broker returns.

This test runs a Mosquitto of its own (persistence on, anonymous) so it can stop and
restart the broker without disturbing the session's shared one.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.settings import Settings
from tests.agent.conftest import agent_settings, flood_record, running_agent, wait_until
from tests.conftest import free_port
from tests.drivers.conftest import StationFactory


class OwnBroker:
    """A Mosquitto process on a free port that the test may stop and start again."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        (folder / "data").mkdir()
        self.conf.write_text(
            # user: mosquitto started as root would drop to "mosquitto" and could not save.
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
            f"persistence true\npersistence_location {folder / 'data'}/\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("own mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: mosquitto saves its sessions on the way out
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    broker = OwnBroker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class PersistentSubscriber:
    """A QoS 1 subscriber whose session outlives a broker restart."""

    def __init__(self, port: int, topic: str, client_id: str) -> None:
        self.payloads: list[dict[str, object]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.topic = topic
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_connect(
        self, _c: mqtt.Client, _u: object, flags: object, _r: object, _p: object
    ) -> None:
        # Subscribe on every connect: the broker restart may or may not keep the session.
        self.client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.payloads.append(json.loads(msg.payload))

    def seqs(self) -> list[int]:
        with self._lock:
            return [int(p["seq"]) for p in self.payloads]  # type: ignore[call-overload]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_buffers_on_disk_during_outage_and_sends_in_order(
    test_settings: Settings,
    own_broker: OwnBroker,
    modbus_station: StationFactory,
    unique_id: str,
    tmp_path: Path,
) -> None:
    gw = f"gw-{unique_id}"
    station = await modbus_station()
    station.set_registers(1, 3, [1])
    station.set_int16(1, 4, 25)
    settings = agent_settings(test_settings, buffer_dir=tmp_path / "outbox").model_copy(
        update={"mqtt": test_settings.mqtt.model_copy(update={"port": own_broker.port})}
    )
    subscriber = PersistentSubscriber(
        own_broker.port, f"kota/v1/gw/{gw}/dev/+/telemetry", f"{unique_id}-sub"
    )
    record = flood_record(f"{unique_id}-g", gw, station.port, poll_interval_s=0.1)
    try:
        async with running_agent(settings, gw, [record]) as agent:
            await wait_until(lambda: len(subscriber.seqs()) >= 3)
            await asyncio.to_thread(own_broker.stop)
            await wait_until(lambda: len(agent.outbox) >= 8)
            assert not agent.publisher.connected
            await asyncio.to_thread(own_broker.start)
            await wait_until(lambda: len(agent.outbox) == 0, timeout_s=40)
            last_seq = agent.stats.readings
            await wait_until(lambda: max(subscriber.seqs()) >= last_seq - 1, timeout_s=10)
    finally:
        subscriber.close()
    seqs = subscriber.seqs()
    # At least once: a message in flight when the broker went away may come again (paho
    # re-sends its unacknowledged ones, the outbox re-sends its unacknowledged batch).
    # Order is about first arrivals: in order, and every seq from first to last arrived.
    first_arrivals = list(dict.fromkeys(seqs))
    assert first_arrivals == sorted(first_arrivals)
    assert first_arrivals == list(range(first_arrivals[0], first_arrivals[-1] + 1))
    assert len(seqs) - len(first_arrivals) <= 20  # repeats are few: one batch at most
    assert agent.outbox.dropped == 0
