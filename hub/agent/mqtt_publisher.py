"""Publishes the agent's outbox to Mosquitto with QoS 1, in order, under its gateway identity.

paho runs its network loop in its own thread and reconnects by itself (capped backoff);
this side drains the on-disk outbox whenever the broker is connected and removes a batch
only once the broker acknowledged all of it (at-least-once: a batch cut short by a
disconnect is sent again).

The agent supervises ``run``: when it fails (an outbox read error), it is started again
on the same live session, so the retained status does not flap; only cancellation (the
agent stopping) says "offline, agent stopped" and disconnects. paho's thread ends if a
callback raises, so callbacks' exceptions are logged and suppressed, and a drain loop
that finds the thread gone raises ``PublisherThreadError`` for the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from drivers import contract
from hub.agent.disk_buffer import DiskBuffer

log = logging.getLogger(__name__)
BATCH = 200
ACK_TIMEOUT_S = 10.0


# The contract's topics, under the names the agent has always used.
gateway_topic = contract.gateway_device_topic
agent_status_topic = contract.gateway_status_topic


def status_payload(status: str, reason: str = "") -> bytes:
    """A contract status message stamped now: ``{"ts": <epoch ms>, "online": bool, ...}``."""
    if status not in ("online", "offline"):
        raise ValueError(f"status must be 'online' or 'offline', not {status!r}")
    return contract.status_payload(status == "online", reason, ts_ms=time.time_ns() // 1_000_000)


class PublisherThreadError(Exception):
    """paho's network thread ended while the publisher was running (a restart starts it)."""


class MqttPublisher:
    """The outbox's sender: one paho client, one gateway identity."""

    def __init__(
        self,
        *,
        gateway_id: str,
        host: str,
        port: int,
        username: str,
        password: str | None,
        outbox: DiskBuffer,
        keepalive_s: int = 30,
        connect_timeout_s: float = 10.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.outbox = outbox
        self.host, self.port, self.keepalive_s = host, port, keepalive_s
        self.published = 0
        self.connect_failures = 0
        # Set by the first run(), cleared by _shutdown: later runs (supervisor restarts)
        # keep the session paho holds instead of reconnecting and re-announcing.
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = asyncio.Event()
        self._acked = asyncio.Event()
        self._wake = asyncio.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            # The registry pins a gateway identity's client id to its username, the
            # gateway id: any other id is refused ("Not authorized").
            client_id=gateway_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        if tls is not None:
            # Verifies the broker's certificate against the context's CA and its name
            # against ``host``.
            self.client.tls_set_context(tls)
        # In paho 2 an exception in a callback ends the network thread, and with it every
        # reconnect: log it (paho's logger) and keep the thread instead.
        self.client.suppress_exceptions = True
        self.client.enable_logger(log)
        self.client.will_set(
            agent_status_topic(gateway_id),
            status_payload("offline", "agent connection lost"),
            qos=1,
            retain=True,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.connect_timeout = connect_timeout_s
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    # paho's thread ------------------------------------------------------------------
    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: Properties | None
    ) -> None:
        if reason.is_failure:
            self.connect_failures += 1
            log.error("broker refused agent %s: %s", self.gateway_id, reason)
            return
        self.client.publish(
            agent_status_topic(self.gateway_id), status_payload("online"), qos=1, retain=True
        )
        self._call(self._connected.set)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: Properties | None
    ) -> None:
        self._call(self._connected.clear)
        self._call(self._acked.set)

    def _on_publish(
        self, _c: mqtt.Client, _u: object, _mid: int, _r: ReasonCode, _p: Properties | None
    ) -> None:
        self._call(self._acked.set)

    def _call(self, func: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(func)

    # the agent's loop --------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the broker session is up."""
        return self._connected.is_set()

    def enqueue(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queue a message on disk and wake the sender."""
        dropped = self.outbox.append(topic, payload, retain=retain)
        if dropped:
            log.warning(
                "agent %s outbox full (%d): dropped %d oldest message(s), %d in all",
                self.gateway_id,
                self.outbox.max_messages,
                dropped,
                self.outbox.dropped,
            )
        self._wake.set()

    def _network_thread(self) -> threading.Thread | None:
        # paho keeps loop_start's thread here; it has no public accessor.
        thread = getattr(self.client, "_thread", None)
        return thread if isinstance(thread, threading.Thread) else None

    def _check_network_thread(self) -> None:
        thread = self._network_thread()
        if thread is None or not thread.is_alive():
            raise PublisherThreadError(
                f"agent {self.gateway_id}: paho's network thread has ended; restarting it"
            )

    async def _wait_connected(self) -> None:
        """Wait for the session, noticing within a second when paho's thread is gone."""
        while not self._connected.is_set():
            self._check_network_thread()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._connected.wait()

    async def run(self) -> None:
        """Connect (paho reconnects by itself) and drain the outbox until cancelled.

        A failure (raised to the supervisor) leaves the session up; only cancellation
        says offline and disconnects.
        """
        self._loop = asyncio.get_running_loop()
        if not self._started:
            self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
            self.client.loop_start()
            self._started = True
        else:
            thread = self._network_thread()
            if thread is None or not thread.is_alive():
                # The thread died (see PublisherThreadError): join it, start a new one
                # on the same client and session state.
                await asyncio.to_thread(self.client.loop_stop)
                self.client.loop_start()
        try:
            while True:
                await self._wait_connected()
                self._check_network_thread()
                batch = self.outbox.peek(BATCH)
                if not batch:
                    self._wake.clear()
                    if len(self.outbox) == 0:
                        await self._wake.wait()
                    continue
                if await self._send(batch):
                    self.outbox.remove_through(batch[-1].id)
                    self.published += len(batch)
        except asyncio.CancelledError:
            await self._shutdown()
            raise

    async def _send(self, batch: list[Any]) -> bool:
        infos = []
        for message in batch:
            info = self.client.publish(message.topic, message.payload, qos=1, retain=message.retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            infos.append(info)
        deadline = asyncio.get_running_loop().time() + ACK_TIMEOUT_S
        while not all(info.is_published() for info in infos):
            if not self.connected:
                return False
            self._check_network_thread()
            self._acked.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._acked.wait()
            except TimeoutError:
                pass
        return True

    async def stop(self) -> None:
        """Say offline on purpose and disconnect, when ``run`` is not running to be cancelled."""
        if self._started:
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Say offline on purpose (retained), then disconnect and stop paho's thread."""
        self._started = False
        if self.client.is_connected():
            info = self.client.publish(
                agent_status_topic(self.gateway_id),
                status_payload("offline", "agent stopped"),
                qos=1,
                retain=True,
            )
            with contextlib.suppress(RuntimeError, ValueError):
                await asyncio.to_thread(info.wait_for_publish, 2.0)
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)
        self._loop = None
