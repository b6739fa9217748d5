"""The intake on a second real broker: RabbitMQ 3.10's MQTT plugin (3.1.1 only).

What the 100-city design needs of any broker: delivery in order at QoS 1, a persistent
session that keeps what came while the hub was away, redelivery of what was not
acknowledged, and keepalive. And the shared-subscription probe: RabbitMQ grants a
``$share/...`` SUBACK and delivers nothing on it, so a hub with ``ingest.shared_group``
must refuse to start there, saying why, while on Mosquitto the probe passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.ingest import IngestService
from hub.ingest.ingest_service import IngestError
from hub.ingest.mqtt_intake import IntakeOptions, MqttIntake
from tests.ingest.conftest import HubFactory
from tests.ingest.rabbitmq_broker import RabbitMq, running_rabbitmq

WAIT_S = 10.0


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMq]:
    """One RabbitMQ for this module's tests."""
    with running_rabbitmq(tmp_path_factory.mktemp("rabbitmq")) as broker:
        yield broker


class Seen:
    """Messages an intake handed over, to wait on."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, int, int]] = []
        self.subscribed = threading.Event()
        self.changed = threading.Condition()

    def on_message(self, _topic: str, payload: bytes, qos: int, packet_id: int) -> None:
        """Record (not acknowledged)."""
        with self.changed:
            self.messages.append((payload, qos, packet_id))
            self.changed.notify_all()

    def wait_for(self, payload: bytes) -> list[bytes]:
        """Wait for ``payload``; return every payload so far."""
        with self.changed:
            if not self.changed.wait_for(
                lambda: any(m[0] == payload for m in self.messages), timeout=WAIT_S
            ):
                raise AssertionError(f"{payload!r} did not arrive: {self.messages}")
            return [m[0] for m in self.messages]


def publish_all(broker: RabbitMq, topic: str, bodies: list[bytes]) -> None:
    """Publish at QoS 1 with paho (3.1.1) and wait for each PUBACK."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(broker.username, broker.password)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        for body in bodies:
            info = client.publish(topic, body, qos=1)
            info.wait_for_publish(timeout=WAIT_S)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_rabbitmq_delivers_keeps_the_session_redelivers_and_keeps_alive(
    rabbitmq: RabbitMq, unique_id: str
) -> None:
    root = f"kota/test/{unique_id}"
    options = IntakeOptions(
        host=rabbitmq.host,
        port=rabbitmq.port,
        client_id=f"{unique_id}-rabbit",
        username=rabbitmq.username,
        password=rabbitmq.password,
        topics=[f"{root}/#"],
        protocol="3.1.1",
        keepalive_s=2,
    )

    def start() -> tuple[MqttIntake, Seen]:
        seen = Seen()
        intake = MqttIntake(options, seen.on_message, on_subscribed=seen.subscribed.set)
        intake.start()
        assert seen.subscribed.wait(WAIT_S), "no SUBACK from RabbitMQ"
        return intake, seen

    intake, seen = start()
    try:
        publish_all(rabbitmq, f"{root}/a", [b"m1", b"m2"])
        assert seen.wait_for(b"m2") == [b"m1", b"m2"]
        assert [qos for _, qos, _ in seen.messages] == [1, 1]
        assert intake.ack(intake.generation, [seen.messages[0][2]])  # m1 only

        # Keepalive: 4 s of silence at a 2 s keepalive; pings keep the connection.
        time.sleep(4.0)
        assert intake.connected
        assert intake.stats.connection_losses == 0, intake.stats.last_error
        assert intake.stats.connects == 1
        intake.stop()

        publish_all(rabbitmq, f"{root}/a", [b"m3"])  # while the intake is away
        intake, seen = start()
        got = seen.wait_for(b"m3")
        # m2 was not acknowledged: it comes again; m1 was, and does not.
        assert sorted(got) == [b"m2", b"m3"]
        assert intake.ack(intake.generation, [m[2] for m in seen.messages])
    finally:
        intake.stop()


def test_a_hub_with_a_shared_group_refuses_to_start_on_rabbitmq(
    rabbitmq: RabbitMq, hubs: HubFactory
) -> None:
    hubs.devices()
    settings = hubs.settings("shared", shared_group="workers", mqtt_protocol="3.1.1")
    mqtt_cfg = settings.mqtt.model_copy(
        update={"host": rabbitmq.host, "port": rabbitmq.port, "username": rabbitmq.username}
    )
    service = IngestService(settings.model_copy(update={"mqtt": mqtt_cfg}), rabbitmq.password)
    started = time.monotonic()
    with pytest.raises(IngestError, match="delivered nothing") as refused:
        service.start()
    message = str(refused.value)
    assert f"{rabbitmq.host}:{rabbitmq.port}" in message
    assert "does not support shared subscriptions" in message
    assert "unset ingest.shared_group" in message
    assert time.monotonic() - started < 20  # the probe's bound, not the 30 s ready timeout


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_the_shared_subscription_probe_passes_on_mosquitto(
    hubs: HubFactory, unique_id: str, protocol: str
) -> None:
    service = hubs.start("probe", shared_group=f"g{unique_id}", mqtt_protocol=protocol)
    intake = service._intake
    assert intake is not None
    assert intake.probe_failure == ""
    assert intake.connected
