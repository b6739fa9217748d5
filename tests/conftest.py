"""Shared fixtures: one real Mosquitto and one real InfluxDB for the whole test session.

Both are started by the project's own ``LocalStack`` on free loopback ports under a
temporary state folder, so the tests exercise the same start-up path as
``kotahub stack up``. Each test gets unique device ids / topics (``unique_id``) and,
when it asks for one, a database of its own (``influx_db``).
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import pytest_asyncio
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from hub.influxql import InfluxQL
from hub.local_stack import LocalStack, mqtt_password
from hub.settings import Settings, load_settings

# Ports come from a range of this process's own, below the kernel's ephemeral range:
# a test that stops a server and starts it again on its port (an outage) must not find
# that port taken meanwhile by another pytest-xdist worker's new server, or by an
# outgoing connection. A port is handed out once per process.
_PORT_RANGE_START, _PORT_RANGE_END = 12000, 32000
_ports_given: set[int] = set()


def _worker_port_range() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker) if worker.isdigit() else 0
    span = (_PORT_RANGE_END - _PORT_RANGE_START) // max(workers, 1)
    start = _PORT_RANGE_START + (index % max(workers, 1)) * span
    return range(start, start + span)


def free_port() -> int:
    """A TCP port that nothing listens on right now, never handed out before in this run."""
    ports = _worker_port_range()
    for _attempt in range(1000):
        port = random.choice(ports)
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def make_settings(state_dir: Path, **extra: object) -> Settings:
    """Settings for a stack under state_dir on fresh free ports."""
    return load_settings(
        None,
        state_dir=state_dir,
        # The TLS listener gets a free port too: port + 1 may be anyone's.
        mqtt={"port": free_port(), "tls_port": free_port()},
        influx={"url": f"http://127.0.0.1:{free_port()}"},
        # The fixtures' admin watches every topic (a new install's reads none: "control").
        stack={"influx_rpc_port": free_port(), "start_timeout_s": 60, "admin_acl": "full"},
        **extra,
    )


@dataclass
class RunningStack:
    """The session's Mosquitto and InfluxDB, and how to reach them."""

    stack: LocalStack
    settings: Settings
    mqtt_password: str
    influx: InfluxQL = field(init=False)

    def __post_init__(self) -> None:
        self.influx = InfluxQL(self.settings.influx.url)

    @property
    def mqtt_host(self) -> str:
        """Broker host."""
        return self.settings.mqtt.host

    @property
    def mqtt_port(self) -> int:
        """Broker port."""
        return self.settings.mqtt.port


@contextmanager
def own_stack(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[RunningStack]:
    """Start a Mosquitto + InfluxDB of their own under a temp folder; stop them after."""
    state_dir = tmp_path_factory.mktemp(name) / ".kotahub"
    settings = make_settings(state_dir)
    stack = LocalStack(settings)
    stack.up()
    running = RunningStack(stack=stack, settings=settings, mqtt_password=mqtt_password(settings))
    try:
        yield running
    finally:
        running.influx.close()
        stack.down()


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """Start the real Mosquitto + InfluxDB once per session; stop them afterwards."""
    with own_stack(tmp_path_factory, "stack") as stack:
        yield stack


@pytest.fixture
def unique_id() -> str:
    """A short id unique to this test, for device ids, client ids and topics."""
    return f"t{secrets.token_hex(5)}"


@pytest.fixture
def influx_db(running_stack: RunningStack, unique_id: str) -> Iterator[str]:
    """A database of this test's own, dropped afterwards."""
    name = f"test_{unique_id}"
    running_stack.influx.query(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        running_stack.influx.query(f'DROP DATABASE "{name}"')


@pytest.fixture
def test_settings(running_stack: RunningStack, influx_db: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session stack, with this test's database and state folder."""
    base = running_stack.settings
    return load_settings(
        None,
        state_dir=tmp_path / "state",
        mqtt={
            "host": base.mqtt.host,
            "port": base.mqtt.port,
            "password": running_stack.mqtt_password,
        },
        influx={"url": base.influx.url, "database": influx_db, "retention_policy": "autogen"},
    )


class MqttTestClient:
    """A blocking paho client for tests: connect, subscribe, publish, collect messages."""

    def __init__(self, host: str, port: int, username: str, password: str, client_id: str):
        self.messages: list[mqtt.MQTTMessage] = []
        self._arrived = threading.Condition()
        self._connected = threading.Event()
        self.connect_reason: str | None = None
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.host, self.port = host, port
        self._keep: str | None = None

    def keep_only(self, text: str) -> None:
        """Collect only messages whose topic or payload contains ``text``.

        Tests share one broker and run in parallel: a watcher of a shared topic (the
        dead-letter topic) would otherwise collect other tests' messages too.
        """
        self._keep = text

    def _on_connect(
        self,
        _c: mqtt.Client,
        _u: object,
        _f: object,
        reason: object,
        _p: Properties | None,
    ) -> None:
        self.connect_reason = str(reason)
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if self._keep is not None and not (
            self._keep in msg.topic or self._keep.encode() in msg.payload
        ):
            return
        with self._arrived:
            self.messages.append(msg)
            self._arrived.notify_all()

    def connect(self, timeout_s: float = 10.0) -> str:
        """Connect and return the broker's reason string ('Success' when accepted)."""
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(timeout_s):
            raise TimeoutError("no CONNACK")
        return self.connect_reason or ""

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribe and wait for the SUBACK."""
        done = threading.Event()
        granted: list[ReasonCode] = []

        def on_subscribe(
            _c: mqtt.Client, _u: object, _m: int, codes: list[ReasonCode], _p: Properties
        ) -> None:
            granted.extend(codes)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(topic, qos=qos)
        if not done.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")
        refused = [code for code in granted if code.is_failure]
        if refused:
            raise PermissionError(f"subscription to {topic} refused: {refused}")

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        """Publish and wait until the broker acknowledged it (PUBACK for QoS 1)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=10)

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[mqtt.MQTTMessage]:
        """Wait until at least ``count`` messages arrived; return them all."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout=timeout_s)
            return list(self.messages)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


MqttClientFactory = Callable[..., MqttTestClient]


@pytest.fixture
def mqtt_client(running_stack: RunningStack, unique_id: str) -> Iterator[MqttClientFactory]:
    """Factory of connected test clients; defaults to the project's admin identity."""
    made: list[MqttTestClient] = []

    def factory(
        username: str | None = None,
        password: str | None = None,
        *,
        client_id: str | None = None,
        connect: bool = True,
    ) -> MqttTestClient:
        client = MqttTestClient(
            running_stack.mqtt_host,
            running_stack.mqtt_port,
            username or running_stack.settings.mqtt.username,
            password if password is not None else running_stack.mqtt_password,
            client_id or f"{unique_id}-{len(made)}",
        )
        made.append(client)
        if connect:
            client.connect()
        return client

    yield factory
    for client in made:
        client.close()


# -- asyncio hygiene -------------------------------------------------------------------
@pytest_asyncio.fixture
async def asyncio_task_guard() -> AsyncIterator[None]:
    """Fail a test that leaves an asyncio task running (the aiomqtt habit)."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    for task in leaked:
        task.cancel()
    if leaked:
        names = ", ".join(sorted(t.get_name() + f" ({t.get_coro()!r})" for t in leaked))
        pytest.fail(f"test left {len(leaked)} asyncio task(s) running: {names}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Attach the task guard to every asyncio test."""
    for item in items:
        if item.get_closest_marker("asyncio") is not None:
            item.fixturenames.insert(0, "asyncio_task_guard")  # type: ignore[attr-defined]
