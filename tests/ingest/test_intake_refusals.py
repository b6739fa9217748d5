"""Packets the hub refuses (oversize, non-UTF-8 topic, QoS 2) never cost a reconnect.

Before, the intake raised on each of them and dropped the connection; the broker
redelivered the same packet to the new connection, for ever. Now each is skipped (an
oversize one streamed past, never buffered whole), dead-lettered in the WAL and
acknowledged once, on the same connection, and the next message is delivered.

The hub-level cases talk to a raw-socket broker stand-in (``mqtt_stand_in``): Mosquitto
refuses non-UTF-8 topics and packets over its max_packet_size and never sends QoS 2 on a
QoS 1 subscription, so only a stand-in can send them. The oversize case on the real
Mosquitto uses an intake whose own limit is below the broker's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from hub.ingest import IngestService
from hub.ingest.mqtt_intake import MAX_PACKET_BYTES, IntakeOptions, MqttIntake
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, forget_session, level_points, payload
from tests.ingest.conftest import wait_until as wait_for
from tests.ingest.mqtt_stand_in import MqttStandIn, encode_length, publish_bytes

WAIT_S = 15.0


@pytest.fixture
def stand_in() -> Iterator[MqttStandIn]:
    """A broker stand-in of this test."""
    with MqttStandIn() as broker:
        yield broker


def hub_on(stand_in: MqttStandIn, hubs: HubFactory) -> IngestService:
    """A hub connected to the stand-in instead of the real broker."""
    if not hubs.devices_path.exists():
        hubs.devices()
    settings = hubs.settings("hub")
    mqtt = settings.mqtt.model_copy(update={"host": "127.0.0.1", "port": stand_in.port})
    service = IngestService(settings.model_copy(update={"mqtt": mqtt}), "unused")
    service.start()
    hubs.hubs.append(service)
    return service


def deadletters(stack: RunningStack, database: str, reason: str) -> list[dict[str, object]]:
    """The deadletter points of ``reason``."""
    return stack.influx.rows(
        f"SELECT * FROM deadletter WHERE reason = '{reason}'",
        database=database,
    )


def oversize_publish(topic: bytes, packet_id: int) -> tuple[bytes, int]:
    """The header of a QoS 1 PUBLISH over the intake's limit, and its payload length."""
    payload_len = MAX_PACKET_BYTES + 1000
    body_len = 2 + len(topic) + 2 + payload_len
    head = b"\x32" + encode_length(body_len) + len(topic).to_bytes(2, "big") + topic
    return head + packet_id.to_bytes(2, "big"), payload_len


@pytest.mark.parametrize("reason", ["payload_too_large", "bad_topic", "bad_qos"])
def test_a_refused_packet_is_dead_lettered_acked_once_and_the_connection_stays(
    stand_in: MqttStandIn,
    hubs: HubFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    reason: str,
) -> None:
    gauge = f"{unique_id}-g"
    hubs.devices(device(gauge))
    service = hub_on(stand_in, hubs)
    session = stand_in.wait_subscribed()
    topic = f"kota/v1/dev/{gauge}/telemetry".encode()
    if reason == "payload_too_large":
        head, payload_len = oversize_publish(topic, 7)
        session.send(head)
        chunk = b"z" * (1 << 20)
        sent = 0
        while sent < payload_len:  # streamed: the intake must not wait for all of it
            part = chunk[: min(len(chunk), payload_len - sent)]
            session.send(part)
            sent += len(part)
    elif reason == "bad_topic":
        session.send(publish_bytes(b"kota/v1/dev/\xff\xfe/telemetry", b"{}", packet_id=7))
    else:
        session.send(publish_bytes(topic, payload({"level_m": 1.0}).encode(), qos=2, packet_id=7))
    # The next message, right behind it on the same connection.
    session.send(publish_bytes(topic, payload({"level_m": 2.0}).encode(), packet_id=8))

    ack_kind = 0x50 if reason == "bad_qos" else 0x40  # PUBREC for QoS 2
    stand_in.wait(lambda: 7 in session.acks(ack_kind) and 8 in session.acks(0x40), "the acks")
    if reason == "bad_qos":
        session.send(b"\x62\x02\x00\x07")  # PUBREL
        stand_in.wait(lambda: session.acks(0x70) == [7], "PUBCOMP")
    wait_for(lambda: level_points(running_stack, influx_db) == 1, WAIT_S, "the next message")
    wait_for(lambda: bool(deadletters(running_stack, influx_db, reason)), WAIT_S, "deadletter")

    assert session.acks(ack_kind).count(7) == 1
    assert session.acks(0x40).count(8) == 1
    assert len(stand_in.sessions) == 1  # never reconnected
    assert not session.closed
    assert service.stats.mqtt_connects == 1
    assert service.stats.deadletters[reason] == 1
    [point] = deadletters(running_stack, influx_db, reason)
    assert "kota/v1/dev/" in str(point["topic"])
    if reason == "bad_topic":
        assert "\ufffd" in str(point["topic"])  # the bytes shown replaced, not lost


def test_a_refusal_is_acked_only_after_its_dead_letter_is_in_the_wal(
    stand_in: MqttStandIn, hubs: HubFactory
) -> None:
    service = hub_on(stand_in, hubs)
    session = stand_in.wait_subscribed()
    assert service.wal is not None
    appended: list[bytes] = []
    acked_at: list[int] = []
    real_append = service.wal.append

    def append(payload: bytes) -> None:
        appended.append(payload)
        real_append(payload)

    service.wal.append = append  # type: ignore[method-assign]
    real_ack = service._intake.ack  # type: ignore[union-attr]

    def ack(generation: int, packet_ids: list[int]) -> bool:
        acked_at.append(len(appended))
        return real_ack(generation, packet_ids)

    service._intake.ack = ack  # type: ignore[union-attr, method-assign]
    session.send(publish_bytes(b"kota/v1/dev/\xc3\x28/status", b"{}", packet_id=3))
    stand_in.wait(lambda: session.acks(0x40) == [3], "PUBACK")
    assert acked_at
    assert acked_at[0] >= 1
    assert any(b"reason=bad_topic" in body for body in appended[: acked_at[0]])


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_oversize_message_through_mosquitto_is_refused_once_and_ingest_goes_on(
    running_stack: RunningStack, mqtt_client: MqttClientFactory, unique_id: str, protocol: str
) -> None:
    """On the real broker, with an intake limit (4 KiB) below the broker's (256 KiB).

    3.1.1: the intake reads past the 20 KiB packet, reports it and acknowledges it; a
    restart on the same session finds nothing left. MQTT 5: the intake advertised Maximum
    Packet Size, so Mosquitto does not send it at all (it drops it, as the spec says).
    """
    root = f"kota/test/{unique_id}"
    refused: list[tuple[str, str, int, int]] = []
    messages: list[bytes] = []
    changed = threading.Condition()
    holder: list[MqttIntake] = []

    def on_refused(topic: str, reason: str, _detail: str, qos: int, packet_id: int) -> None:
        with changed:
            refused.append((topic, reason, qos, packet_id))
            changed.notify_all()
        holder[0].ack(holder[0].generation, [packet_id])

    def on_message(_topic: str, body: bytes, _qos: int, packet_id: int) -> None:
        with changed:
            messages.append(body)
            changed.notify_all()
        holder[0].ack(holder[0].generation, [packet_id])

    subscribed = threading.Event()
    options = IntakeOptions(
        host=running_stack.mqtt_host,
        port=running_stack.mqtt_port,
        client_id=f"{unique_id}-small",
        username=running_stack.settings.mqtt.username,
        password=running_stack.mqtt_password,
        topics=[f"{root}/#"],
        protocol="5" if protocol == "5" else "3.1.1",
        max_packet_bytes=4096,
    )

    def start() -> MqttIntake:
        subscribed.clear()
        intake = MqttIntake(
            options, on_message, on_refused=on_refused, on_subscribed=subscribed.set
        )
        holder[:] = [intake]
        intake.start()
        assert subscribed.wait(WAIT_S)
        return intake

    intake = start()
    try:
        publisher = mqtt_client()
        publisher.publish(f"{root}/big", b"x" * 20_000)
        publisher.publish(f"{root}/next", b"next")
        with changed:
            assert changed.wait_for(lambda: b"next" in messages, WAIT_S)
        assert intake.stats.connects == 1
        assert intake.stats.connection_losses == 0
        if protocol == "5":
            assert refused == []
        else:
            assert [(t, r, q) for t, r, q, _ in refused] == [
                (f"{root}/big", "payload_too_large", 1)
            ]
        intake.stop()
        messages.clear()
        intake = start()  # the same session: nothing unacknowledged is left
        publisher.publish(f"{root}/marker", b"marker")
        with changed:
            assert changed.wait_for(lambda: b"marker" in messages, WAIT_S)
        assert messages == [b"marker"]
        assert len(refused) == (0 if protocol == "5" else 1)
    finally:
        intake.stop()
        forget_session(running_stack, options.client_id)
