"""A dead connection is noticed within the ping timeout, not 1.5 x keepalive.

Between the intake and the real Mosquitto sits a TCP proxy that can cut the link
without closing anything (``cutting_proxy``). Before, a cut left the intake waiting for
1.5 x keepalive (45 s at the hub's 30 s) of silence; now it pings after 5 s without a
packet and drops a connection whose PINGREQ goes unanswered for min(keepalive/2, 10 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from hub.ingest.mqtt_intake import PING_IDLE_S, IntakeOptions, MqttIntake, ping_timeout_s
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import forget_session
from tests.ingest.cutting_proxy import CuttingProxy

KEEPALIVE_S = 30  # the hub's default (mqtt.keepalive_s)


class AckingRecorder:
    """Acknowledges each message at once and records its payload and connection events."""

    def __init__(self) -> None:
        self.intake: MqttIntake | None = None
        self.payloads: list[bytes] = []
        self.losses: list[float] = []
        self.connects: list[float] = []
        self.changed = threading.Condition()

    def on_message(self, _topic: str, payload: bytes, _qos: int, packet_id: int) -> None:
        """Record and acknowledge."""
        assert self.intake is not None
        self.intake.ack(self.intake.generation, [packet_id])
        with self.changed:
            self.payloads.append(payload)
            self.changed.notify_all()

    def on_connect(self, _generation: int, _present: bool) -> None:
        """Record when a connection came up."""
        with self.changed:
            self.connects.append(time.monotonic())
            self.changed.notify_all()

    def on_lost(self, _reason: str) -> None:
        """Record when a connection was found dead."""
        with self.changed:
            self.losses.append(time.monotonic())
            self.changed.notify_all()

    def wait(self, check: object, what: str, timeout_s: float) -> None:
        """Wait until ``check()`` holds."""
        with self.changed:
            if not self.changed.wait_for(check, timeout=timeout_s):  # type: ignore[arg-type]
                raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def proxy(running_stack: RunningStack) -> Iterator[CuttingProxy]:
    """A cuttable link to the ingest broker."""
    with CuttingProxy(running_stack.mqtt_host, running_stack.mqtt_port) as link:
        yield link


def proxied_intake(
    stack: RunningStack, proxy: CuttingProxy, client_id: str, topic_root: str
) -> tuple[MqttIntake, AckingRecorder]:
    """An intake through the proxy, with the hub's keepalive and connect timeout."""
    seen = AckingRecorder()
    intake = MqttIntake(
        IntakeOptions(
            host="127.0.0.1",
            port=proxy.port,
            client_id=client_id,
            username=stack.settings.mqtt.username,
            password=stack.mqtt_password,
            topics=[f"{topic_root}/#"],
            keepalive_s=KEEPALIVE_S,
            connect_timeout_s=10.0,
        ),
        seen.on_message,
        on_connect=seen.on_connect,
        on_connection_lost=seen.on_lost,
    )
    seen.intake = intake
    return intake, seen


def test_a_cut_link_is_dropped_within_the_ping_timeout_and_nothing_is_lost(
    running_stack: RunningStack,
    proxy: CuttingProxy,
    mqtt_client: MqttClientFactory,
    unique_id: str,
) -> None:
    root = f"kota/test/{unique_id}"
    client_id = f"{unique_id}-cut"
    intake, seen = proxied_intake(running_stack, proxy, client_id, root)
    publisher = mqtt_client()  # straight to the broker, not through the proxy
    intake.start()
    try:
        seen.wait(lambda: len(seen.connects) == 1, "the first connection", 10)
        time.sleep(0.3)  # the SUBACK
        mark = proxy.bytes_up
        publisher.publish(f"{root}/x", b"before")
        seen.wait(lambda: b"before" in seen.payloads, "'before'", 10)
        # Its PUBACK (4 bytes) must be past the proxy before the cut, or the broker
        # rightly sends 'before' again on the new connection (at least once).
        seen.wait(lambda: proxy.bytes_up >= mark + 4, "the PUBACK of 'before'", 10)

        proxy.cut()
        cut_at = time.monotonic()
        during = [f"during-{i}".encode() for i in range(3)]
        for body in during:
            publisher.publish(f"{root}/x", body)  # the broker sends them into the cut
        bound = PING_IDLE_S + ping_timeout_s(KEEPALIVE_S) + 3.0  # 18 s; 45 s before
        seen.wait(lambda: bool(seen.losses), "the cut to be noticed", bound + 5)
        noticed_s = seen.losses[0] - cut_at
        assert noticed_s < bound, f"noticed after {noticed_s:.1f} s"
        assert noticed_s < 1.5 * KEEPALIVE_S

        proxy.restore()
        seen.wait(lambda: len(seen.connects) == 2, "the reconnection", 15)
        # QoS 1 and the persistent session: what went into the cut comes again.
        seen.wait(lambda: all(b in seen.payloads for b in during), "the messages of the cut", 10)
        publisher.publish(f"{root}/x", b"after")
        seen.wait(lambda: b"after" in seen.payloads, "'after'", 10)
        assert seen.payloads.count(b"before") == 1
    finally:
        intake.stop()
        forget_session(running_stack, client_id)
