"""The hub's own MQTT client (hub/ingest/mqtt_intake.py) against the real Mosquitto.

Broker tests run on the ingest package's Mosquitto (dynamic security, persistence on),
except the broker restart, which uses a private plain ``mosquitto`` so that restarting it
cannot disturb other tests. Each test subscribes its intake to a topic filter of its own
and removes the intake's persistent session afterwards. The packet builders and the
parser (``_dispatch``) are also checked without a broker, byte for byte against the
MQTT 3.1.1 and 5 specifications.

Two tests pin bugs of the current client and fail until it is fixed (their docstrings
say why): ``test_acknowledgements_sent_before_stop_count_for_the_next_connection`` and
``test_keepalive_holds_while_the_intake_only_publishes``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.ingest.mqtt_intake import (
    MAX_PACKET_BYTES,
    READ_CHUNK_BYTES,
    IntakeError,
    IntakeOptions,
    MqttIntake,
)
from hub.ingest.mqtt_packets import (
    connect_packet,
    puback_packets,
    publish_packet,
    subscribe_packet,
)
from tests.conftest import MqttClientFactory, MqttTestClient, RunningStack, free_port
from tests.ingest.conftest import forget_session

Protocol = Literal["3.1.1", "5"]
PROTOCOLS: list[Protocol] = ["3.1.1", "5"]
WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the intake handed it over."""

    topic: str
    payload: bytes
    qos: int
    packet_id: int


class Recorder:
    """Collects an intake's messages and connection events for a test to wait on."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.messages: list[Received] = []
        self.connects: list[tuple[int, bool]] = []
        self.subscribed = 0
        self.losses: list[str] = []
        self.fail_on = fail_on
        self._changed = threading.Condition()

    def on_message(self, topic: str, payload: bytes, qos: int, packet_id: int) -> None:
        """Record a message; raise for the payload ``fail_on`` (a broken handler)."""
        with self._changed:
            self.messages.append(Received(topic, payload, qos, packet_id))
            self._changed.notify_all()
        if payload == self.fail_on:
            raise ValueError("handler failure on purpose")

    def on_connect(self, generation: int, session_present: bool) -> None:
        """Record a CONNACK."""
        with self._changed:
            self.connects.append((generation, session_present))
            self._changed.notify_all()

    def on_subscribed(self) -> None:
        """Record a SUBACK that granted every filter."""
        with self._changed:
            self.subscribed += 1
            self._changed.notify_all()

    def on_connection_lost(self, reason: str) -> None:
        """Record a lost connection."""
        with self._changed:
            self.losses.append(reason)
            self._changed.notify_all()

    def wait(self, check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
        """Wait until ``check`` holds (checked under the recorder's lock)."""
        with self._changed:
            if not self._changed.wait_for(check, timeout=timeout_s):
                raise AssertionError(f"timed out waiting for {what}")

    def wait_messages(self, count: int) -> list[Received]:
        """Wait until ``count`` messages arrived; return a copy of them all."""
        self.wait(lambda: len(self.messages) >= count, f"{count} message(s)")
        with self._changed:
            return list(self.messages)

    def wait_payload(self, payload: bytes) -> list[Received]:
        """Wait until a message with ``payload`` arrived; return a copy of them all."""
        self.wait(lambda: any(m.payload == payload for m in self.messages), repr(payload))
        with self._changed:
            return list(self.messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._changed:
            self.messages.clear()

    def discard(self, payload: bytes) -> None:
        """Forget the messages with ``payload`` (a barrier)."""
        with self._changed:
            self.messages[:] = [m for m in self.messages if m.payload != payload]


def payloads(messages: list[Received]) -> list[bytes]:
    """The payloads, in the order received."""
    return [m.payload for m in messages]


def make_intake(options: IntakeOptions, recorder: Recorder) -> MqttIntake:
    """An intake wired to every callback of ``recorder`` (not started)."""
    return MqttIntake(
        options,
        recorder.on_message,
        on_connect=recorder.on_connect,
        on_subscribed=recorder.on_subscribed,
        on_connection_lost=recorder.on_connection_lost,
    )


def start_and_wait(intake: MqttIntake, recorder: Recorder) -> None:
    """Start (or restart) an intake and wait until its new subscription is granted."""
    expected = recorder.subscribed + 1
    intake.start()
    recorder.wait(lambda: recorder.subscribed >= expected, "SUBACK")


def restart(intake: MqttIntake, seen: Recorder) -> None:
    """Stop the intake and start it again on its session, with the record cleared."""
    intake.stop()
    seen.clear()
    start_and_wait(intake, seen)


def assert_nothing_left(
    seen: Recorder, publisher: MqttTestClient, topic: str, marker: bytes
) -> None:
    """A new message arrives alone: the session held nothing more for the intake."""
    publisher.publish(topic, marker)
    assert payloads(seen.wait_payload(marker)) == [marker]


def settle(intake: MqttIntake, seen: Recorder, topic_root: str) -> None:
    """Wait until the broker has read everything the intake sent so far.

    The broker handles a client's packets in order, so once the intake's own QoS 0
    message comes back, every PUBACK sent before it has been taken. ``stop()`` itself
    waits for the broker to close the connection (see
    ``test_acknowledgements_sent_before_stop_count_for_the_next_connection``); the
    barrier keeps the session tests independent of that.
    """
    token = f"barrier-{secrets.token_hex(4)}".encode()
    assert intake.publish(f"{topic_root}/barrier", token)
    seen.wait_payload(token)
    seen.discard(token)


class IntakeFactory:
    """Intakes on the ingest broker with this test's client ids and topic filter."""

    def __init__(self, stack: RunningStack, unique_id: str) -> None:
        self.stack = stack
        self.unique_id = unique_id
        self.topic_root = f"kota/test/{unique_id}"
        self.made: list[MqttIntake] = []

    def options(self, protocol: Protocol, name: str = "intake", **extra: Any) -> IntakeOptions:
        """Options for client ``<unique_id>-<name>`` subscribed to ``<topic_root>/#``."""
        fields: dict[str, Any] = {
            "host": self.stack.mqtt_host,
            "port": self.stack.mqtt_port,
            "client_id": f"{self.unique_id}-{name}",
            "username": self.stack.settings.mqtt.username,
            "password": self.stack.mqtt_password,
            "topics": [f"{self.topic_root}/#"],
            "protocol": protocol,
            "connect_timeout_s": 5.0,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 1.0,
        }
        fields.update(extra)
        return IntakeOptions(**fields)

    def make(
        self, protocol: Protocol, name: str = "intake", **extra: Any
    ) -> tuple[MqttIntake, Recorder]:
        """An intake and its recorder, not started; stopped by the fixture."""
        recorder = Recorder()
        intake = make_intake(self.options(protocol, name, **extra), recorder)
        self.made.append(intake)
        return intake, recorder

    def start(
        self, protocol: Protocol, name: str = "intake", **extra: Any
    ) -> tuple[MqttIntake, Recorder]:
        """An intake, started and subscribed."""
        intake, recorder = self.make(protocol, name, **extra)
        start_and_wait(intake, recorder)
        return intake, recorder

    def close(self) -> None:
        """Stop every intake and remove its session from the broker."""
        for intake in self.made:
            intake.stop()
        for client_id in {intake.options.client_id for intake in self.made}:
            forget_session(self.stack, client_id)


@pytest.fixture
def intakes(running_stack: RunningStack, unique_id: str) -> Iterator[IntakeFactory]:
    """Factory of intakes on the ingest broker; stops them and forgets their sessions."""
    factory = IntakeFactory(running_stack, unique_id)
    try:
        yield factory
    finally:
        factory.close()


class PrivateBroker:
    """A plain anonymous ``mosquitto`` (no persistence) on a free port, restartable."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start mosquitto and wait until it accepts connections."""
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish one QoS 1 message as an anonymous client and wait for its PUBACK."""
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", self.port, keepalive=10)
        client.loop_start()
        try:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(timeout=WAIT_S)
            assert info.is_published(), "no PUBACK from the private broker"
        finally:
            client.disconnect()
            client.loop_stop()


def private_options(broker: PrivateBroker, protocol: Protocol, client_id: str) -> IntakeOptions:
    """Options for an anonymous intake on a private broker, subscribed to ``t/#``."""
    return IntakeOptions(
        host="127.0.0.1",
        port=broker.port,
        client_id=client_id,
        username=None,
        password=None,
        topics=["t/#"],
        protocol=protocol,
        connect_timeout_s=5.0,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
    )


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A private broker of this test, stopped afterwards."""
    broker = PrivateBroker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# -- 1. messages in ----------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_messages_arrive_in_order_with_topic_payload_qos_and_packet_id(
    intakes: IntakeFactory, mqtt_client: MqttClientFactory, protocol: Protocol
) -> None:
    intake, seen = intakes.start(protocol)
    assert seen.connects == [(1, False)]  # a fresh client id: no session yet
    publisher = mqtt_client()
    sent = [
        (f"{intakes.topic_root}/dev{i % 3}/telemetry", f"m{i:02d}".encode(), 1 if i % 3 else 0)
        for i in range(30)
    ]
    for topic, body, qos in sent:
        publisher.client.publish(topic, body, qos=qos)
    got = seen.wait_messages(len(sent))
    assert [(m.topic, m.payload, m.qos) for m in got] == sent
    qos1_ids = [m.packet_id for m in got if m.qos == 1]
    assert all(0 < pid <= 0xFFFF for pid in qos1_ids)
    # Nothing acknowledged yet, so every in-flight id is distinct.
    assert len(set(qos1_ids)) == len(qos1_ids)
    assert all(m.packet_id == 0 for m in got if m.qos == 0)
    assert intake.stats.packets_in >= len(sent) + 1  # the SUBACK, then every PUBLISH


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_payload_larger_than_one_read_arrives_intact(
    private_broker: PrivateBroker, protocol: Protocol
) -> None:
    # The private broker: the project's Mosquitto refuses packets over 256 KiB
    # (max_packet_size), and a packet of more than one read is the point here.
    seen = Recorder()
    intake = make_intake(private_options(private_broker, protocol, "big"), seen)
    start_and_wait(intake, seen)
    big = os.urandom(READ_CHUNK_BYTES + 44_321)  # several reads of the socket
    try:
        for topic, body in (("t/before", b"before"), ("t/big", big), ("t/after", b"after")):
            private_broker.publish(topic, body)
        got = seen.wait_messages(3)
    finally:
        intake.stop()
    assert [m.topic for m in got] == ["t/before", "t/big", "t/after"]
    assert got[1].payload == big
    assert got[1].qos == 1
    assert payloads(got)[2] == b"after"


# -- 2. persistent session -----------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_session_keeps_unacknowledged_and_offline_messages_across_stop_and_start(
    intakes: IntakeFactory, mqtt_client: MqttClientFactory, protocol: Protocol
) -> None:
    intake, seen = intakes.start(protocol)
    publisher = mqtt_client()
    topic = f"{intakes.topic_root}/session"
    for i in range(6):
        publisher.publish(topic, f"first-{i}")
    first = seen.wait_messages(6)
    assert payloads(first) == [f"first-{i}".encode() for i in range(6)]
    assert intake.ack(intake.generation, [m.packet_id for m in first[:3]]) is True
    assert intake.stats.acks_sent == 3
    settle(intake, seen, intakes.topic_root)

    intake.stop()
    assert not intake.connected
    for i in range(3):
        publisher.publish(topic, f"offline-{i}")  # the broker queues these for the session
    seen.clear()

    start_and_wait(intake, seen)
    assert seen.connects == [(1, False), (2, True)]  # the session was kept
    publisher.publish(topic, b"marker")
    got = seen.wait_payload(b"marker")
    # The acknowledged three are gone; the others come back, in order, then the queue.
    assert payloads(got) == [
        b"first-3",
        b"first-4",
        b"first-5",
        b"offline-0",
        b"offline-1",
        b"offline-2",
        b"marker",
    ]
    assert intake.ack(intake.generation, [m.packet_id for m in got]) is True
    settle(intake, seen, intakes.topic_root)

    restart(intake, seen)
    assert_nothing_left(seen, publisher, topic, b"marker-2")
    assert intake.stats.connection_losses == 0  # stop() is not a loss


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_receive_maximum_bounds_unacknowledged_messages(
    intakes: IntakeFactory, mqtt_client: MqttClientFactory, protocol: Protocol
) -> None:
    # 3.1.1 has no Receive Maximum: the broker's max_inflight_messages (1000) applies.
    receive_maximum = 1000 if protocol == "3.1.1" else 4
    intake, seen = intakes.start(protocol, receive_maximum=receive_maximum)
    publisher = mqtt_client()
    topic = f"{intakes.topic_root}/window"
    for i in range(10):
        publisher.publish(topic, f"w{i}")
    if protocol == "3.1.1":
        assert len(seen.wait_messages(10)) == 10
        return
    window = seen.wait_messages(4)
    # Every message is at the broker (PUBACKed to the publisher). A QoS 0 message is
    # not held back by the window: once the intake's own comes back, the broker has
    # had every chance to (wrongly) send more than four.
    settle(intake, seen, intakes.topic_root)
    window = seen.wait_messages(4)
    assert payloads(window) == [f"w{i}".encode() for i in range(4)]
    assert intake.ack(intake.generation, [m.packet_id for m in window])
    # Mosquitto 2.0.11 then sends up to Receive Maximum more per PUBACK (paho with
    # manual acks sees the same), so only the first window is exact.
    assert payloads(seen.wait_messages(10)) == [f"w{i}".encode() for i in range(10)]


# -- 3. acknowledgements of an earlier connection ------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ack_for_an_earlier_connection_is_dropped_and_messages_come_again(
    intakes: IntakeFactory, mqtt_client: MqttClientFactory, protocol: Protocol
) -> None:
    intake, seen = intakes.start(protocol)
    publisher = mqtt_client()
    topic = f"{intakes.topic_root}/gen"
    expected = [f"g{i}".encode() for i in range(3)]
    for body in expected:
        publisher.publish(topic, body)
    first = seen.wait_messages(3)
    old = intake.generation
    assert old == 1

    intake.stop()
    assert intake.ack(old, [m.packet_id for m in first]) is False  # not connected
    seen.clear()
    start_and_wait(intake, seen)
    assert intake.generation == old + 1
    again = seen.wait_messages(3)
    assert payloads(again) == expected
    # Acks meant for connection 1, sent while connection 2 is up: dropped, not sent.
    # (The broker resends with the same ids, so sending them would acknowledge these.)
    assert intake.ack(old, [m.packet_id for m in first]) is False
    assert intake.ack(old, [m.packet_id for m in again]) is False
    assert intake.stats.acks_sent == 0
    assert intake.stats.acks_dropped == 9
    assert intake.ack(old, []) is True  # nothing to send is never a failure
    # Had they been sent, the broker would have taken them by now.
    settle(intake, seen, intakes.topic_root)

    restart(intake, seen)
    third = seen.wait_messages(3)
    assert payloads(third) == expected  # none of them was acknowledged
    assert intake.ack(intake.generation, [m.packet_id for m in third]) is True
    settle(intake, seen, intakes.topic_root)

    restart(intake, seen)
    assert_nothing_left(seen, publisher, topic, b"marker")


# -- 4. refused connection ------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_password_is_refused_retried_slowly_and_stops_cleanly(
    intakes: IntakeFactory, protocol: Protocol
) -> None:
    intake, seen = intakes.make(protocol, password="not-the-password", auth_failure_min_s=5.0)
    before = set(threading.enumerate())
    intake.start()
    readers = [t for t in threading.enumerate() if t not in before and t.name == "mqtt-intake"]
    assert len(readers) == 1

    deadline = time.monotonic() + WAIT_S
    while not intake.stats.refusals and time.monotonic() < deadline:
        time.sleep(0.02)
    assert intake.stats.refusals, "no CONNACK refusal recorded"
    assert set(intake.stats.refusals) <= {0x86, 0x87}
    assert "broker refused the connection" in intake.stats.last_error
    # With reconnect_min_s=0.05 a plain retry would have come several times by now;
    # after an auth refusal the intake waits auth_failure_min_s (5 s).
    time.sleep(0.8)
    assert sum(intake.stats.refusals.values()) == 1
    assert not intake.connected
    assert intake.generation == 0
    assert intake.stats.connects == 0
    assert intake.stats.connection_losses == 0
    assert seen.connects == []
    assert seen.subscribed == 0
    assert seen.losses == []

    intake.stop()
    assert not readers[0].is_alive()
    assert not intake.connected


# -- 5. broker restart ------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reconnects_by_itself_after_a_broker_restart(
    private_broker: PrivateBroker, unique_id: str, protocol: Protocol
) -> None:
    topic = f"kota/test/{unique_id}/restart"
    seen = Recorder()
    intake = make_intake(
        IntakeOptions(
            host="127.0.0.1",
            port=private_broker.port,
            client_id=f"{unique_id}-restart",
            username=None,
            password=None,
            topics=[f"kota/test/{unique_id}/#"],
            protocol=protocol,
            connect_timeout_s=5.0,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
        ),
        seen,
    )
    try:
        start_and_wait(intake, seen)
        private_broker.publish(topic, b"before")
        before = seen.wait_messages(1)
        assert payloads(before) == [b"before"]

        private_broker.stop()
        seen.wait(lambda: len(seen.losses) == 1, "connection loss")
        assert not intake.connected
        private_broker.start()
        seen.wait(lambda: seen.subscribed >= 2, "SUBACK after the restart")

        assert intake.connected
        assert intake.generation == 2
        assert [generation for generation, _ in seen.connects] == [1, 2]
        assert intake.stats.connects == 2
        assert intake.stats.connection_losses == 1
        assert intake.ack(1, [before[0].packet_id]) is False  # the old connection's
        private_broker.publish(topic, b"after")
        after = seen.wait_payload(b"after")
        assert payloads(after) == [b"before", b"after"]
        assert intake.ack(2, [after[1].packet_id]) is True
    finally:
        intake.stop()
    assert not intake.connected


# -- 6. keepalive ------------------------------------------------------------------------------
def test_keepalive_pings_keep_an_idle_connection_up(intakes: IntakeFactory) -> None:
    # Both protocols at once: the test is 6 s of silence, not worth paying twice.
    idle = [intakes.start(protocol, f"idle{protocol}", keepalive_s=2) for protocol in PROTOCOLS]
    packets_before = [intake.stats.packets_in for intake, _ in idle]
    # Mosquitto drops a client silent for 1.5 x keepalive (3 s); this is twice that.
    time.sleep(6.0)
    for (intake, seen), packets in zip(idle, packets_before, strict=True):
        assert intake.connected, intake.options.protocol
        assert intake.stats.connection_losses == 0, intake.stats.last_error
        assert intake.stats.connects == 1
        assert seen.losses == []
        # Only PINGRESPs can have come in: at least one per 2 s of silence.
        assert intake.stats.packets_in - packets >= 3


def test_keepalive_holds_while_the_intake_only_publishes(intakes: IntakeFactory) -> None:
    """Sending QoS 0 messages must not starve the keepalive of PINGREQs.

    FAILS with the current reader: it pings only when it has sent nothing for half the
    keepalive, but it also drops the connection when the broker has been silent for
    1.5 x keepalive. Publishing (the dead-letter feed) while nothing comes in keeps the
    first from happening and so makes the second happen to a healthy connection.
    """
    busy = [intakes.start(protocol, f"busy{protocol}", keepalive_s=2) for protocol in PROTOCOLS]
    out_topic = f"kota/test/{intakes.unique_id}-out/deadletter"  # nobody subscribes
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        for intake, _ in busy:
            intake.publish(out_topic, b"{}")
        time.sleep(0.25)
    for intake, seen in busy:
        assert intake.stats.connection_losses == 0, intake.stats.last_error
        assert seen.losses == []
        assert intake.stats.connects == 1


# -- 7. QoS 0 out -----------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_publish_reaches_another_subscriber(
    intakes: IntakeFactory, mqtt_client: MqttClientFactory, protocol: Protocol
) -> None:
    intake, seen = intakes.make(protocol)
    out_topic = f"kota/test/{intakes.unique_id}-out/deadletter"  # outside the intake's filter
    assert intake.publish(out_topic, b"too early") is False  # not connected
    start_and_wait(intake, seen)
    subscriber = mqtt_client()
    subscriber.subscribe(out_topic, qos=1)
    long_payload = os.urandom(70_000)  # a three-byte remaining length
    assert intake.publish(out_topic, b'{"reason": "unknown device"}') is True
    assert intake.publish(out_topic, long_payload) is True
    got = subscriber.wait_for(2)
    assert [m.payload for m in got] == [b'{"reason": "unknown device"}', long_payload]
    assert [m.topic for m in got] == [out_topic, out_topic]
    assert [m.qos for m in got] == [0, 0]
    assert not any(m.retain for m in got)
    assert seen.messages == []
    intake.stop()
    assert intake.publish(out_topic, b"too late") is False


# -- 8. packet builders and parser, no broker --------------------------------------------------
def offline_options(protocol: Protocol, **extra: Any) -> IntakeOptions:
    """Options for the byte-layout tests (nothing connects)."""
    fields: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 1,
        "client_id": "c1",
        "username": "u",
        "password": "p",
        "topics": ["a/b", "c/#"],
        "protocol": protocol,
    }
    fields.update(extra)
    return IntakeOptions(**fields)


def test_connect_packet_v311_bytes() -> None:
    packet = connect_packet(offline_options("3.1.1", keepalive_s=30))
    assert packet == (
        b"\x10\x14"  # CONNECT, remaining length 20
        b"\x00\x04MQTT\x04"  # protocol name, level 4
        b"\xc0"  # user name + password, clean session off
        b"\x00\x1e"  # keepalive 30 s
        b"\x00\x02c1"
        b"\x00\x01u"
        b"\x00\x01p"
    )


def test_connect_packet_v5_bytes() -> None:
    packet = connect_packet(
        offline_options("5", keepalive_s=60, session_expiry_s=86_400, receive_maximum=1000)
    )
    assert packet == (
        b"\x10\x22"  # CONNECT, remaining length 34
        b"\x00\x04MQTT\x05"  # protocol name, level 5
        b"\xc0"  # user name + password, clean start off
        b"\x00\x3c"  # keepalive 60 s
        b"\x0d"  # properties: 13 bytes
        b"\x11\x00\x01\x51\x80"  # session expiry interval 86,400 s
        b"\x21\x03\xe8"  # receive maximum 1000
        b"\x27\x01\x00\x00\x00"  # maximum packet size 16 MiB (MAX_PACKET_BYTES)
        b"\x00\x02c1"
        b"\x00\x01u"
        b"\x00\x01p"
    )


def test_connect_packet_flags_follow_the_credentials() -> None:
    anonymous = connect_packet(offline_options("3.1.1", username=None, password=None))
    assert anonymous == b"\x10\x0e\x00\x04MQTT\x04\x00\x00\x1e\x00\x02c1"
    user_only = connect_packet(offline_options("3.1.1", password=None))
    assert user_only == b"\x10\x11\x00\x04MQTT\x04\x80\x00\x1e\x00\x02c1\x00\x01u"


def test_subscribe_packet_bytes() -> None:
    # Fixed header 0x82: SUBSCRIBE with the reserved bits 0010 the spec requires.
    assert subscribe_packet(offline_options("3.1.1"), 10) == (
        b"\x82\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/#\x01"
    )
    assert subscribe_packet(offline_options("5"), 0x1234) == (
        b"\x82\x0f\x12\x34\x00\x00\x03a/b\x01\x00\x03c/#\x01"
    )
    assert subscribe_packet(offline_options("3.1.1", topics=["x"]), 1, qos=0) == (
        b"\x82\x06\x00\x01\x00\x01x\x00"
    )


def test_publish_packet_bytes() -> None:
    assert publish_packet(offline_options("3.1.1"), "t/x", b"hi") == b"\x30\x07\x00\x03t/xhi"
    assert publish_packet(offline_options("5"), "t/x", b"hi") == b"\x30\x08\x00\x03t/x\x00hi"
    # 5 + 200 = 205 bytes: remaining length 0xCD 0x01 (205 = 77 + 1 x 128).
    long = publish_packet(offline_options("3.1.1"), "t/x", b"z" * 200)
    assert long[:3] == b"\x30\xcd\x01"
    assert len(long) == 3 + 205
    with pytest.raises(ValueError):
        publish_packet(offline_options("3.1.1"), "t" * 70_000, b"")


def test_puback_packets_bytes() -> None:
    assert puback_packets([1, 0x1234, 0xFFFF]) == (
        b"\x40\x02\x00\x01\x40\x02\x12\x34\x40\x02\xff\xff"
    )
    assert puback_packets([]) == b""


def v311_publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    """A PUBLISH as a 3.1.1 broker sends it, built by hand."""
    body = len(topic).to_bytes(2, "big") + topic.encode()
    if qos:
        body += packet_id.to_bytes(2, "big")
    body += payload
    return bytes([0x30 | qos << 1]) + encode_length(len(body)) + body


def v5_publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    """A PUBLISH as an MQTT 5 broker sends it, with a payload-format property."""
    body = len(topic).to_bytes(2, "big") + topic.encode()
    if qos:
        body += packet_id.to_bytes(2, "big")
    body += b"\x02\x01\x01" + payload  # properties: 2 bytes, payload format indicator 1
    return bytes([0x30 | qos << 1]) + encode_length(len(body)) + body


def encode_length(value: int) -> bytes:
    """The MQTT variable byte integer, written out independently of the module's."""
    out = b""
    while True:
        digit, value = value % 128, value // 128
        out += bytes([digit | 0x80 if value else digit])
        if not value:
            return out


class Calls:
    """A message handler that records its calls; raises for payload ``fail_on``."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.calls: list[tuple[str, bytes, int, int]] = []
        self.fail_on = fail_on

    def __call__(self, topic: str, payload: bytes, qos: int, packet_id: int) -> None:
        self.calls.append((topic, payload, qos, packet_id))
        if payload == self.fail_on:
            raise RuntimeError("broken handler")


def offline_intake(protocol: Protocol, **callbacks: Any) -> MqttIntake:
    """An intake that is never started, for feeding ``_dispatch`` bytes."""
    return MqttIntake(offline_options(protocol), lambda *_: None, **callbacks)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dispatch_hands_over_whole_packets_and_keeps_a_split_one(protocol: Protocol) -> None:
    build = v5_publish if protocol == "5" else v311_publish
    first = build("a/b", b"one", qos=1, packet_id=7)
    second = build("a/c", b"two")
    third = build("a/d", b"x" * 300, qos=1, packet_id=0xBEEF)  # two-byte remaining length
    intake = offline_intake(protocol)
    handler = Calls()
    v5 = protocol == "5"
    whole = first + second
    # Cut inside the third packet's body, inside its remaining length, after its header.
    for cut in (len(third) // 2, 2, 1):
        handler.calls.clear()
        assert intake._dispatch(bytearray(whole + third[:cut]), handler, v5) == len(whole)
        assert handler.calls == [("a/b", b"one", 1, 7), ("a/c", b"two", 0, 0)]
    handler.calls.clear()
    assert intake._dispatch(bytearray(third), handler, v5) == len(third)
    assert handler.calls == [("a/d", b"x" * 300, 1, 0xBEEF)]
    assert intake._dispatch(bytearray(b"\x30"), handler, v5) == 0
    assert intake._dispatch(bytearray(), handler, v5) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dispatch_skips_pingresp_and_puback_and_reports_suback(protocol: Protocol) -> None:
    subscribed: list[bool] = []
    intake = offline_intake(protocol, on_subscribed=lambda: subscribed.append(True))
    v5 = protocol == "5"
    props = b"\x00" if v5 else b""
    suback = b"\x90" + encode_length(2 + len(props) + 2) + b"\x00\x01" + props + b"\x01\x01"
    refused = b"\x90" + encode_length(2 + len(props) + 2) + b"\x00\x02" + props + b"\x01\x80"
    handler = Calls()
    buf = suback + b"\xd0\x00" + b"\x40\x02\x00\x05" + refused
    assert intake._dispatch(bytearray(buf), handler, v5) == len(buf)
    assert subscribed == [True]  # the refused filter's SUBACK does not count
    assert handler.calls == []
    assert intake.stats.packets_in == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x30\xff\xff\xff\xff\x01", "malformed remaining length"),
        (b"\x90" + encode_length(MAX_PACKET_BYTES + 1), "refused"),  # a huge SUBACK
        (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
        (b"\xe0\x00", "DISCONNECT"),
        (b"\x20\x02\x00\x00", "unexpected packet type 2"),  # a second CONNACK
    ],
)
def test_dispatch_rejects_protocol_violations(data: bytes, message: str) -> None:
    handler = Calls()
    with pytest.raises(IntakeError, match=message):
        offline_intake("3.1.1")._dispatch(bytearray(data), handler, False)
    assert handler.calls == []


def test_dispatch_reports_the_reason_of_a_v5_disconnect() -> None:
    with pytest.raises(IntakeError, match="0x8b"):
        offline_intake("5")._dispatch(bytearray(b"\xe0\x01\x8b"), Calls(), True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dispatch_goes_on_after_a_handler_raises(protocol: Protocol) -> None:
    build = v5_publish if protocol == "5" else v311_publish
    packets = [build("a/b", f"p{i}".encode(), qos=1, packet_id=i + 1) for i in range(4)]
    buf = b"".join(packets)
    handler = Calls(fail_on=b"p1")
    intake = offline_intake(protocol)
    assert intake._dispatch(bytearray(buf), handler, protocol == "5") == len(buf)
    assert [call[1] for call in handler.calls] == [b"p0", b"p1", b"p2", b"p3"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_handler_failure_on_a_live_connection_does_not_stop_the_intake(
    intakes: IntakeFactory, mqtt_client: MqttClientFactory, protocol: Protocol
) -> None:
    seen = Recorder(fail_on=b"bad")
    intake = make_intake(intakes.options(protocol), seen)
    intakes.made.append(intake)
    start_and_wait(intake, seen)
    publisher = mqtt_client()
    for body in (b"good-1", b"bad", b"good-2"):
        publisher.publish(f"{intakes.topic_root}/h", body)
    assert payloads(seen.wait_messages(3)) == [b"good-1", b"bad", b"good-2"]
    assert intake.connected
    assert intake.stats.connection_losses == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_failing_connect_callback_costs_one_connection_not_the_intake(
    intakes: IntakeFactory, mqtt_client: MqttClientFactory, protocol: Protocol
) -> None:
    seen = Recorder()
    failures: list[int] = []

    def on_connect(generation: int, session_present: bool) -> None:
        if not failures:
            failures.append(generation)
            raise RuntimeError("connect callback failure on purpose")
        seen.on_connect(generation, session_present)

    intake = MqttIntake(
        intakes.options(protocol),
        seen.on_message,
        on_connect=on_connect,
        on_subscribed=seen.on_subscribed,
    )
    intakes.made.append(intake)
    start_and_wait(intake, seen)
    assert failures == [1]
    assert [generation for generation, _ in seen.connects] == [2]
    mqtt_client().publish(f"{intakes.topic_root}/after", b"after")
    assert payloads(seen.wait_messages(1)) == [b"after"]
    assert "connect callback failure" in intake.stats.last_error


# -- stop() and the broker's view of the acknowledgements -------------------------------------
def read_packet(sock: socket.socket, deadline: float) -> tuple[int, bytes]:
    """One whole MQTT packet from a raw socket: ``(first byte, body)``."""

    def read_exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise AssertionError("the broker closed the connection")
            data += chunk
        return data

    header = read_exactly(1)[0]
    length, mult = 0, 1
    while True:
        byte = read_exactly(1)[0]
        length += (byte & 0x7F) * mult
        mult *= 128
        if not byte & 0x80:
            break
    return header, read_exactly(length)


def resent_to_next_connection(options: IntakeOptions) -> int:
    """Connect as ``options.client_id`` on a raw socket; count the PUBLISHes resent."""
    with socket.create_connection((options.host, options.port), 5) as nxt:
        nxt.sendall(connect_packet(options))
        deadline = time.monotonic() + WAIT_S
        header, body = read_packet(nxt, deadline)
        assert header == 0x20, f"expected CONNACK, got {header:#x}"
        assert body[1] == 0, f"connection refused: {body!r}"
        # The broker resends in-flight messages right after CONNACK; the PINGRESP
        # marks the end of what it sent before reading our PINGREQ.
        nxt.sendall(b"\xc0\x00")
        resent = 0
        while True:
            header, body = read_packet(nxt, deadline)
            if header & 0xF0 == 0xD0:
                break
            if header & 0xF0 == 0x30:
                resent += 1
                id_at = 2 + int.from_bytes(body[:2], "big")
                nxt.sendall(puback_packets([int.from_bytes(body[id_at : id_at + 2], "big")]))
        nxt.sendall(b"\xe0\x00")
    return resent


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_acknowledgements_sent_before_stop_count_for_the_next_connection(
    intakes: IntakeFactory, mqtt_client: MqttClientFactory, protocol: Protocol
) -> None:
    """A restarted worker (same client id) must not get acknowledged messages again.

    FAILS with the current ``stop()``: it sends DISCONNECT and closes the socket at once,
    without waiting for the broker to read what came before it. Mosquitto reads one
    packet per client per loop turn, so a CONNECT with the same client id that arrives
    meanwhile takes the session over, the old connection is dropped unread, and its
    PUBACKs are lost: the broker sends those messages again. (A message routed to the
    old socket after ``stop()`` has the same effect: the closed socket answers with a
    reset, which discards the unread PUBACKs too.)

    The race depends on timing, so a few rounds are tried, each with a full window of
    acknowledgements. The next connection is a raw socket that connects right after
    ``stop()`` returns, like a worker restarted at once. (The other stop-and-start tests
    in this file wait with ``settle`` before ``stop()`` to stay clear of this race.)
    """
    publisher = mqtt_client()
    count = 1000  # the intake's Receive Maximum and the broker's max_inflight_messages
    for attempt in range(4):
        intake, seen = intakes.start(protocol, f"quick{attempt}")
        topic = f"{intakes.topic_root}/quick/{attempt}"
        for i in range(count):
            publisher.client.publish(topic, f"r{i}", qos=1)
        got = seen.wait_messages(count)
        assert intake.ack(intake.generation, [m.packet_id for m in got]) is True
        intake.stop()
        resent = resent_to_next_connection(intake.options)
        assert resent == 0, f"{resent} of {count} acknowledged messages were sent again"
