"""The broker reference: how fast a bare subscriber drains a backlog held for it.

The subscriber does nothing with a message but count it and acknowledge it, so its rate
is what one MQTT connection in Python can take from Mosquitto: the most any single hub
worker could ingest. ``IntakeDrain`` (the reference of ``bench/ingest.py``) runs the hub's
own MQTT intake; ``PahoDrain`` (paho-mqtt, for ``--clients-compare``) shows what the
usual Python client takes.

The backlog is the same one the hub later drains: a persistent session (MQTT v5, clean
start off, session expiry) subscribes, goes away, the fleet publishes, and the
subscriber comes back; the clock runs from its reconnect to its last message.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.bench_stack import BenchError
from drivers.contract import device_topic
from hub.ingest.mqtt_intake import IntakeOptions, MqttIntake

TELEMETRY_FILTER = device_topic("+", "telemetry")


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainResult:
    """How long the subscriber took to receive a backlog."""

    client: str
    messages: int
    seconds: float

    @property
    def mps(self) -> float:
        """Messages per second."""
        return self.messages / max(self.seconds, 1e-9)


class PahoDrain:
    """A bare paho QoS 1 subscriber with a persistent session, driven without threads."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        client_id: str,
        protocol: MQTTProtocolVersion = mqtt.MQTTv5,
    ) -> None:
        self.host, self.port = host, port
        self.protocol = protocol
        version = "v5" if protocol == mqtt.MQTTv5 else "v3.1.1"
        self.name = f"paho-mqtt 2.2, QoS 1, MQTT {version}, loop()"
        self.received = 0
        self._connected = False
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            clean_session=None if protocol == mqtt.MQTTv5 else False,
        )
        self._username, self._password = username, password
        self.client_id = client_id
        self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect

    def _on_message(self, _c: object, _u: object, _msg: object) -> None:
        self.received += 1

    def _on_connect(self, *_args: object) -> None:
        self._connected = True

    def _connect(self, expiry_s: int) -> None:
        self._connected = False
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = expiry_s
            self.client.connect(
                self.host, self.port, keepalive=60, clean_start=False, properties=props
            )
        else:
            self.client.connect(self.host, self.port, keepalive=60)
        deadline = time.monotonic() + 30
        while not self._connected:
            if time.monotonic() > deadline:
                raise BenchError("drain subscriber: no CONNACK")
            self.client.loop(timeout=0.05)

    def open_session(self) -> None:
        """Create the persistent session and subscription, then leave it to be queued."""
        self._connect(expiry_s=3600)
        _rc, mid = self.client.subscribe(TELEMETRY_FILTER, qos=1)
        granted = False

        def on_subscribe(*_args: object) -> None:
            nonlocal granted
            granted = True

        self.client.on_subscribe = on_subscribe
        deadline = time.monotonic() + 30
        while not granted:
            if time.monotonic() > deadline:
                raise BenchError(f"drain subscriber: no SUBACK for message {mid}")
            self.client.loop(timeout=0.05)
        self.client.disconnect()
        self.client.loop(timeout=0.05)

    def _end_session(self) -> None:
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self.client.disconnect(properties=props)
            self.client.loop(timeout=0.05)
            return
        # MQTT 3.1.1 has no expiry: a clean-session connect discards the stored session.
        self.client.disconnect()
        self.client.loop(timeout=0.05)
        discard_session(self.host, self.port, self._username, self._password, self.client_id)

    def drain(self, expected: int, timeout_s: float) -> DrainResult:
        """Reconnect and receive ``expected`` queued messages; then end the session."""
        self.received = 0
        start = time.perf_counter()
        self._connect(expiry_s=3600)
        deadline = time.monotonic() + timeout_s
        while self.received < expected:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"drain subscriber: {self.received} of {expected} messages after "
                    f"{timeout_s:.0f} s"
                )
            self.client.loop(timeout=0.5)
        seconds = time.perf_counter() - start
        # Session expiry 0 on DISCONNECT: the broker forgets the session and stops
        # queueing for it, so later phases do not pay for a subscriber that is gone.
        self._end_session()
        return DrainResult(client=self.name, messages=self.received, seconds=seconds)


class IntakeDrain:
    """A bare subscriber on the hub's own MQTT intake: count, PUBACK in groups, nothing else.

    The reference for ``ratio_broker``: the same connection code the hub runs, with none
    of its work (decode, WAL, fsync), so the ratio is the cost of the hub's own work.
    """

    ACK_EVERY = 256  # well inside the broker's in-flight window (max_inflight_messages)

    def __init__(
        self, *, host: str, port: int, username: str, password: str, client_id: str
    ) -> None:
        self.name = "hub's MQTT intake (hub/ingest/mqtt_intake.py), QoS 1, MQTT 3.1.1"
        self.received = 0
        self._pending: list[int] = []
        self._subscribed = threading.Event()
        self._generation = 0
        self._options = IntakeOptions(
            host=host,
            port=port,
            client_id=client_id,
            username=username,
            password=password,
            topics=[TELEMETRY_FILTER],
        )
        self._intake = self._new_intake()

    def _new_intake(self) -> MqttIntake:
        return MqttIntake(
            self._options,
            self._on_message,
            on_connect=self._on_connect,
            on_subscribed=self._subscribed.set,
        )

    def _on_connect(self, generation: int, _session_present: bool) -> None:
        self._generation = generation
        self._pending = []

    def _on_message(self, _topic: str, _payload: bytes, qos: int, packet_id: int) -> None:
        self.received += 1
        if qos:
            self._pending.append(packet_id)
            if len(self._pending) >= self.ACK_EVERY:
                self._intake.ack(self._generation, self._pending)
                self._pending = []

    def open_session(self) -> None:
        """Create the persistent session and subscription, then leave it to be queued."""
        self._intake.start()
        try:
            if not self._subscribed.wait(30):
                raise BenchError("intake drain: no SUBACK")
        finally:
            self._intake.stop()

    def drain(self, expected: int, timeout_s: float) -> DrainResult:
        """Reconnect and receive ``expected`` queued messages; then end the session."""
        self.received = 0
        self._intake = self._new_intake()
        start = time.perf_counter()
        self._intake.start()
        deadline = time.monotonic() + timeout_s
        try:
            while self.received < expected:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"intake drain: {self.received} of {expected} messages after "
                        f"{timeout_s:.0f} s"
                    )
                time.sleep(0.002)
            seconds = time.perf_counter() - start
            self._intake.ack(self._generation, self._pending)
        finally:
            self._intake.stop()
        end_session(self._options)
        return DrainResult(client=self.name, messages=self.received, seconds=seconds)


def end_session(options: IntakeOptions) -> None:
    """Discard the persistent session of an intake's client id."""
    discard_session(
        options.host, options.port, options.username, options.password, options.client_id
    )


def discard_session(
    host: str, port: int, username: str | None, password: str | None, client_id: str
) -> None:
    """Discard a persistent session: a clean-session connect with its client id."""
    cleaner = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    cleaner.username_pw_set(username, password)
    cleaner.connect(host, port, keepalive=60)
    cleaner.loop(timeout=0.5)
    cleaner.disconnect()
    cleaner.loop(timeout=0.05)
