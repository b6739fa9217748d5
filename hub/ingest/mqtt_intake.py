"""The hub's receiving MQTT connection: QoS 1 in, PUBACKs out in fsync groups.

Why not paho here: the hub acknowledges a message only once it is fsynced, and it must
take tens of thousands of messages per second on one core. Draining the same 150,000
message backlog from Mosquitto on this project's 2-core bench machine (see
``bench/client_compare.py``): paho-mqtt 2.2 took 10,600-11,100 msg/s, gmqtt 0.8 with
acknowledgement after its handler 20,800-25,000 msg/s, this client 100,000 msg/s; with the
contract decoder behind each, the Python clients leave too little of the core for the
hub's own work. The client is deliberately small: it speaks only what a subscriber
needs (CONNECT, SUBSCRIBE, PUBLISH in at QoS 0 and 1, PUBACK, PINGREQ, DISCONNECT,
and QoS 0 PUBLISH out for the dead-letter feed), in MQTT 3.1.1 and 5. The packets it
sends are built in ``mqtt_packets.py``; this module owns the socket and reads the stream.

What it refuses at the packet level (a PUBLISH over ``max_packet_bytes``, a topic that is
not UTF-8, a QoS 2 PUBLISH) it skips without dropping the connection and reports to
``on_refused``, which acknowledges it like any message once it is dead-lettered: dropping
the connection instead made the broker redeliver the same packet for ever. A QoS 2
PUBLISH is acknowledged with PUBREC, and PUBREL answered with PUBCOMP.

Threads: one reader thread owns the socket's receiving side, parses packets and calls
the message handler in order; any thread may send PUBACKs (``ack``) and QoS 0 messages
(``publish``) under a lock. The reader reconnects with capped exponential backoff.
Each connection has a generation number: acknowledgements meant for an earlier
connection are dropped, since the broker redelivers those messages and their packet
ids may be reused on the new connection.

Dead connections: after ``PING_IDLE_S`` without a packet from the broker the reader sends
a PINGREQ, and a PINGREQ unanswered (no packet at all) for ``ping_timeout_s`` drops the
connection; TCP keepalive and TCP_USER_TIMEOUT make the kernel give up on a dead peer
too. Waiting for the keepalive's 1.5 x 30 s alone cost 46 s of ingest for a 30 s cut.

Reconnects back off: the delay goes back to ``reconnect_min_s`` only after a connection
that was useful (a message delivered, or subscribed for ``STABLE_AFTER_S``); a broker that
accepts and then drops the connection is otherwise reconnected to several times a
second for ever. Failures are logged once per cause, then once a minute while they last.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from drivers.contract import hub_probe_topic
from hub.ingest.mqtt_packets import (
    AUTH_FAILURE_CODES,
    CONNACK,
    DISCONNECT,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    UNSUPPORTED_PROTOCOL,
    ack_packet,
    connack_result,
    connack_text,
    connect_packet,
    puback_packets,
    publish_packet,
    shared_group,
    subscribe_packet,
)

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, int, int], None]
"""``(topic, payload, qos, packet_id)``; packet_id is 0 for QoS 0."""

RefusalHandler = Callable[[str, str, str, int, int], None]
"""``(topic, reason, detail, qos, packet_id)`` for a PUBLISH refused at the packet level.

``reason`` is ``payload_too_large``, ``bad_topic`` or ``bad_qos``; the topic is decoded
with undecodable bytes replaced. Acknowledge ``packet_id`` (when ``qos``) with ``ack``
once the refusal is recorded, as for a message.
"""

ProbeFailureHandler = Callable[[str], None]
"""Called with the explanation when the shared subscription delivered nothing."""

READ_CHUNK_BYTES = 256 * 1024
MAX_PACKET_BYTES = 16 * 1024 * 1024  # far above the contract's 64 KiB payload limit
# A connection that lived this long after its SUBACK (or delivered a message) was a good
# one: only then does the reconnect delay go back to its minimum.
STABLE_AFTER_S = 10.0
# While connecting keeps failing for the same cause, say so at most this often.
FAILURE_LOG_INTERVAL_S = 60.0
# Ping after this much silence from the broker (or half the keepalive, if shorter), so
# that a dead connection is noticed within PING_IDLE_S + ping timeout.
PING_IDLE_S = 5.0
PING_TIMEOUT_MAX_S = 10.0

# Retried no faster than ``auth_failure_min_s``: trying again soon cannot help.
SLOW_RETRY_CODES = AUTH_FAILURE_CODES | {UNSUPPORTED_PROTOCOL}


class IntakeError(Exception):
    """The connection broke the protocol or the broker refused it."""


class BrokerRefusedError(IntakeError):
    """CONNACK with a failure reason code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"broker refused the connection: {connack_text(code)}")
        self.code = code


@dataclass(frozen=True, slots=True, kw_only=True)
class IntakeOptions:
    """Where and how to connect and what to subscribe to."""

    host: str
    port: int
    client_id: str
    username: str | None
    password: str | None
    topics: Sequence[str]
    # Set: TLS on the connect path, checking the broker's certificate and that it names
    # ``host``. The reads and writes after the handshake are the same calls as plain TCP.
    tls: ssl.SSLContext | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive_s: int = 30
    session_expiry_s: int = 24 * 3600
    receive_maximum: int = 1000
    # Larger PUBLISHes are skipped (streamed past) and reported to ``on_refused``; MQTT 5
    # advertises it as Maximum Packet Size, so the broker does not even send them.
    max_packet_bytes: int = MAX_PACKET_BYTES
    # With ``$share/`` filters: wait this long for a probe message on the shared
    # subscription before saying it does not deliver (0: no probe).
    shared_probe_s: float = 5.0
    connect_timeout_s: float = 10.0
    reconnect_min_s: float = 0.15
    reconnect_max_s: float = 30.0
    auth_failure_min_s: float = 5.0


@dataclass(slots=True)
class IntakeStats:
    """Counters of the connection, read by the hub's self-metrics."""

    connects: int = 0
    connection_losses: int = 0
    packets_in: int = 0
    acks_sent: int = 0
    acks_dropped: int = 0
    last_error: str = ""
    refusals: dict[int, int] = field(default_factory=dict)
    connect_failures: int = 0
    refused_packets: dict[str, int] = field(default_factory=dict)


def _read_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """``(value, next position)``; raises IntakeError on a malformed integer."""
    value, mult = 0, 1
    for _ in range(4):
        if pos >= len(buf):
            raise IntakeError("truncated variable byte integer")
        byte = buf[pos]
        pos += 1
        value += (byte & 0x7F) * mult
        if not byte & 0x80:
            return value, pos
        mult *= 128
    raise IntakeError("malformed variable byte integer")


def ping_timeout_s(keepalive_s: float) -> float:
    """How long a PINGREQ may stay unanswered before the connection counts as dead."""
    return min(keepalive_s / 2, PING_TIMEOUT_MAX_S)


def _set_dead_peer_options(sock: socket.socket, keepalive_s: float) -> None:
    """TCP keepalive and TCP_USER_TIMEOUT (Linux): the kernel gives up on a dead peer."""
    idle = max(1, int(min(PING_IDLE_S, keepalive_s / 2 or PING_IDLE_S)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None:
        # Sent data unacknowledged this long fails the socket (a cut while sending).
        limit_s = max(2 * ping_timeout_s(keepalive_s or 2 * PING_TIMEOUT_MAX_S), 10.0)
        sock.setsockopt(socket.IPPROTO_TCP, user_timeout, int(limit_s * 1000))


class MqttIntake:
    """A receive-only MQTT client: ``start``, acknowledge with ``ack``, ``stop``."""

    def __init__(
        self,
        options: IntakeOptions,
        on_message: MessageHandler,
        *,
        on_connect: Callable[[int, bool], None] | None = None,
        on_subscribed: Callable[[], None] | None = None,
        on_connection_lost: Callable[[str], None] | None = None,
        on_refused: RefusalHandler | None = None,
        on_probe_failed: ProbeFailureHandler | None = None,
    ) -> None:
        self.options = options
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_subscribed = on_subscribed
        self.on_connection_lost = on_connection_lost
        self.on_refused = on_refused
        self.on_probe_failed = on_probe_failed
        self.stats = IntakeStats()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._generation = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sent = 0.0
        self._subscribe_id = 0
        self._pending = bytearray()
        # Bytes of a refused (oversize) packet still to be read past.
        self._skip = 0
        # Packet ids of this connection that came at QoS 2: acknowledged with PUBREC.
        self._qos2_ids: set[int] = set()
        # What tells a useful connection from one dropped right away (see _run).
        self._subscribed_at = 0.0
        self._control_in = 0
        self._packets_at_connect = 0
        self._failure_cause = ""
        self._failure_logged = 0.0
        self._failures_since_log = 0
        # The shared-subscription probe (only on the first subscription of a start).
        group = shared_group(options.topics) if options.shared_probe_s > 0 else None
        self._probe_topic = hub_probe_topic(options.client_id)
        self._probe_filters = [f"$share/{group}/{self._probe_topic}"] if group else []
        self._probe_wanted = bool(group)
        self._probe_token = b""
        self._probe_deadline = 0.0
        self._handler: MessageHandler = on_message
        self.probe_failure = ""
        """Why the shared subscription was found not to deliver; empty otherwise."""

    # -- any thread ------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Number of the current (or last) connection; 0 before the first CONNACK."""
        return self._generation

    @property
    def connected(self) -> bool:
        """True while a connection is up (CONNACK received)."""
        return self._sock is not None

    def start(self) -> None:
        """Start the reader thread; it connects and keeps reconnecting until ``stop``."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="mqtt-intake", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """DISCONNECT (the session and its queue stay at the broker) and join the reader."""
        self._stopping.set()
        with self._send_lock:
            sock = self._sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.sendall(DISCONNECT_PACKET)
                    # Half-close only: the reader waits for the broker to close, so the
                    # PUBACKs sent before are read. Closing at once makes the kernel send
                    # a reset, and Mosquitto drops what it had not read yet (redeliveries).
                    sock.shutdown(socket.SHUT_WR)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.error("MQTT intake thread did not stop within %.1f s", timeout_s)

    def ack(self, generation: int, packet_ids: Sequence[int]) -> bool:
        """PUBACK these packet ids if still on connection ``generation``; else drop them.

        An id that came at QoS 2 (a refused packet) is answered with PUBREC instead.
        """
        if not packet_ids:
            return True
        with self._send_lock:
            sock = self._sock
            if sock is None or generation != self._generation:
                self.stats.acks_dropped += len(packet_ids)
                return False
            qos2 = self._qos2_ids
            data = self._mixed_acks(packet_ids) if qos2 else puback_packets(packet_ids)
            try:
                sock.sendall(data)
            except OSError as err:
                # The reader sees the broken connection and reconnects; the broker
                # redelivers everything not acknowledged.
                self.stats.acks_dropped += len(packet_ids)
                log.debug("PUBACKs not sent: %s", err)
                return False
            self._last_sent = time.monotonic()
            self.stats.acks_sent += len(packet_ids)
            return True

    def _mixed_acks(self, packet_ids: Sequence[int]) -> bytes:
        """PUBACK or PUBREC per id (under the send lock)."""
        qos2 = self._qos2_ids
        out = bytearray()
        for packet_id in packet_ids:
            if packet_id in qos2:
                qos2.discard(packet_id)  # the id is free again once PUBREL/PUBCOMP pass
                out += ack_packet(PUBREC, packet_id)
            else:
                out += ack_packet(PUBACK, packet_id)
        return bytes(out)

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 0 (best effort); False when not connected."""
        packet = publish_packet(self.options, topic, payload)
        with self._send_lock:
            sock = self._sock
            if sock is None:
                return False
            try:
                sock.sendall(packet)
            except OSError:
                return False
            self._last_sent = time.monotonic()
            return True

    # -- the reader thread -----------------------------------------------------------
    def _run(self) -> None:
        opts = self.options
        delay = opts.reconnect_min_s
        while not self._stopping.is_set():
            sock: socket.socket | None = None
            reason = ""
            cause = ""  # the same for every repeat of one problem (for the log)
            slow = False
            self._subscribed_at = 0.0
            try:
                sock = self._open()
                self._read_loop(sock)
                reason = "closed by the broker"
            except BrokerRefusedError as err:
                reason = cause = str(err)
                self.stats.refusals[err.code] = self.stats.refusals.get(err.code, 0) + 1
                # Retrying a wrong password or protocol quickly only fills the broker's log.
                slow = err.code in SLOW_RETRY_CODES
                if err.code == UNSUPPORTED_PROTOCOL and opts.protocol == "5":
                    cause += (
                        ": the broker does not speak MQTT 5 (it answered as a 3.1.1 broker); "
                        'set ingest.mqtt_protocol = "3.1.1"'
                    )
            except (OSError, IntakeError) as err:
                reason = f"{type(err).__name__}: {err}"
            except Exception as err:
                # A bug here must not end intake silently: log it, reconnect, go on.
                log.exception("MQTT intake error")
                reason = f"{type(err).__name__}: {err}"
            finally:
                was_up = self._close(sock)
            if self._stopping.is_set():
                break
            self.stats.last_error = reason
            now = time.monotonic()
            useful = was_up and self._was_useful(now)
            if was_up:
                self.stats.connection_losses += 1
                if self.on_connection_lost is not None:
                    self.on_connection_lost(reason)
            if useful:
                delay = opts.reconnect_min_s
                self._failure_cause = ""
                log.warning("MQTT connection lost (%s); reconnecting", reason)
            else:
                self.stats.connect_failures += 1
                key = None
                if was_up:
                    key, cause = self._dropped_cause(reason)
                self._log_failure(cause or reason, now, slow, key=key)
            if slow:
                delay = max(delay, opts.auth_failure_min_s)
            self._stopping.wait(delay)
            delay = min(delay * 2, opts.reconnect_max_s)

    def _was_useful(self, now: float) -> bool:
        """Delivered a message, or stayed subscribed for STABLE_AFTER_S."""
        if not self._subscribed_at:
            return False
        if now - self._subscribed_at >= STABLE_AFTER_S:
            return True
        # Every packet in that is not SUBACK, PINGRESP, PUBACK or PUBREL is a PUBLISH.
        return self.stats.packets_in - self._packets_at_connect > self._control_in

    def _dropped_cause(self, reason: str) -> tuple[str, str]:
        """Why a connection the broker had accepted ended at once: (kind, text for the log).

        The kind, not the text, says whether the cause is new: one drop reads "closed by
        the broker", the next "Connection reset by peer", and both are the same cause.
        """
        if not self._subscribed_at:
            return (
                "dropped-before-suback",
                f"the broker accepted the connection, then it ended before the SUBACK ({reason})",
            )
        cause = f"the connection was dropped right after subscribing ({reason})"
        if shared_group(self.options.topics):
            cause += (
                "; the subscription is shared ($share/...): the broker may not support "
                "shared subscriptions (unset ingest.shared_group)"
            )
        return "dropped-after-subscribe", cause

    def _log_failure(
        self, cause: str, now: float, refused: bool, *, key: str | None = None
    ) -> None:
        """First failure and every new cause at WARNING, then once a minute; else DEBUG."""
        opts = self.options
        self._failures_since_log += 1
        level = logging.ERROR if refused else logging.WARNING
        where = f"{opts.host}:{opts.port}"
        if (key or cause) != self._failure_cause:
            self._failure_cause = key or cause
            self._failure_logged = now
            self._failures_since_log = 0
            log.log(level, "MQTT broker %s: %s; retrying with backoff", where, cause)
        elif now - self._failure_logged >= FAILURE_LOG_INTERVAL_S:
            log.log(
                level,
                "MQTT broker %s: still failing (%d more attempt(s)): %s",
                where,
                self._failures_since_log,
                cause,
            )
            self._failure_logged = now
            self._failures_since_log = 0
        else:
            log.debug("MQTT connect failed (%s)", cause)

    def _close(self, sock: socket.socket | None) -> bool:
        with self._send_lock:
            current, self._sock = self._sock, None
        # ``current`` is set even when _open failed after the CONNACK (a callback raised).
        for item in (sock, current):
            if item is not None:
                with contextlib.suppress(OSError):
                    item.close()  # closing twice is harmless
        return current is not None

    def _open(self) -> socket.socket:
        """TCP connect, CONNECT/CONNACK, SUBSCRIBE; returns the socket, now current."""
        opts = self.options
        sock = socket.create_connection((opts.host, opts.port), timeout=opts.connect_timeout_s)
        if opts.tls is not None:
            try:
                sock = opts.tls.wrap_socket(sock, server_hostname=opts.host)
            except ssl.SSLCertVerificationError as err:
                sock.close()
                raise IntakeError(
                    f"TLS: the broker's certificate was refused ({err.verify_message}): "
                    "is mqtt.ca_file the CA that signed it, and does it name mqtt.host?"
                ) from err
            except BaseException:
                sock.close()
                raise
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _set_dead_peer_options(sock, float(opts.keepalive_s))
            sock.sendall(connect_packet(opts))
            header, body, rest = self._read_one(sock, opts.connect_timeout_s)
            if header & 0xF0 != CONNACK or len(body) < 2:
                raise IntakeError(f"expected CONNACK, got packet type {header >> 4}")
            # A 3.1.1 return code to a v5 CONNECT (aedes sends 0x01) is a refusal too.
            session_present, code = connack_result(body, opts.protocol)
            if code:
                raise BrokerRefusedError(code)
            self._subscribe_id = self._subscribe_id % 0xFFFF + 1
            with self._send_lock:
                self._generation += 1
                generation = self._generation
                self._sock = sock
                self._qos2_ids = set()
                self._skip = 0
                # A probe cut short by a lost connection starts again at this SUBACK.
                self._probe_deadline = 0.0
                self._handler = self.on_message
                sock.sendall(subscribe_packet(opts, self._subscribe_id, extra=self._probe_filters))
                self._last_sent = time.monotonic()
        except BaseException:
            sock.close()
            raise
        self.stats.connects += 1
        self._packets_at_connect = self.stats.packets_in
        self._control_in = 0
        log.info(
            "connected to the broker %s:%d as %s (session present: %s)",
            opts.host,
            opts.port,
            opts.client_id,
            session_present,
        )
        if self.on_connect is not None:
            # Before any message of this connection is handed over.
            self.on_connect(generation, session_present)
        self._pending = bytearray(rest)
        return sock

    def _read_one(self, sock: socket.socket, timeout_s: float) -> tuple[int, bytes, bytes]:
        """One whole packet (during the handshake): header, body, bytes after it."""
        buf = bytearray()
        deadline = time.monotonic() + timeout_s
        while True:
            if len(buf) >= 2:
                try:
                    length, start = _read_varint(buf, 1)
                except IntakeError:
                    if len(buf) >= 5:
                        raise
                else:
                    if len(buf) >= start + length:
                        end = start + length
                        return buf[0], bytes(buf[start:end]), bytes(buf[end:])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise IntakeError(f"no answer from the broker within {timeout_s:g} s")
            sock.settimeout(remaining)
            data = sock.recv(4096)
            if not data:
                raise IntakeError("connection closed during the handshake")
            buf += data

    def _read_loop(self, sock: socket.socket) -> None:
        opts = self.options
        keepalive = float(opts.keepalive_s)
        ping_idle = min(PING_IDLE_S, keepalive / 2)
        ping_timeout = ping_timeout_s(keepalive)
        # Wake often enough to ping in time and to notice ``stop``.
        tick = min(1.0, keepalive / 4) if keepalive else 1.0
        sock.settimeout(tick)
        buf = self._pending
        last_in = time.monotonic()
        ping_sent = 0.0  # when the PINGREQ not yet answered by any packet went out
        v5 = opts.protocol == "5"
        while True:
            if self._stopping.is_set():
                self._wait_for_close(sock)
                return
            if buf:
                # The handler is looked up per read, not per message: the probe swaps it.
                consumed = self._dispatch(buf, self._handler, v5)
                if consumed:
                    del buf[:consumed]
            try:
                data = sock.recv(READ_CHUNK_BYTES)
            except TimeoutError:
                data = None
            now = time.monotonic()
            if self._probe_deadline and now >= self._probe_deadline:
                self._probe_failed()
            if data is None:
                if keepalive:
                    if ping_sent and now - ping_sent >= ping_timeout:
                        raise IntakeError(f"no answer to PINGREQ within {ping_timeout:g} s")
                    if now - last_in > 1.5 * keepalive:
                        raise IntakeError(f"no packet from the broker for {1.5 * keepalive:g} s")
                    # Ping when the broker has been quiet for a while (an idle broker is
                    # normal; an unanswered ping is not), or when we have sent nothing for
                    # half the keepalive: a client that only sends would hear nothing back.
                    if not ping_sent and (
                        now - last_in >= ping_idle or now - self._last_sent >= keepalive / 2
                    ):
                        self._send(sock, PINGREQ_PACKET)
                        ping_sent = now
                continue
            if not data:
                return  # orderly close by the broker
            last_in = now
            ping_sent = 0.0
            if self._skip:
                data = self._skip_input(data)
            buf += data
            if keepalive and now - self._last_sent >= keepalive / 2:
                self._send(sock, PINGREQ_PACKET)
                ping_sent = now

    def _skip_input(self, data: bytes) -> bytes:
        """Drop the part of ``data`` that belongs to a refused packet; return the rest."""
        taken = min(self._skip, len(data))
        self._skip -= taken
        return data[taken:]

    def _wait_for_close(self, sock: socket.socket, timeout_s: float = 2.0) -> None:
        """After our DISCONNECT: discard input until the broker closes (bounded)."""
        deadline = time.monotonic() + timeout_s
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            try:
                if not sock.recv(READ_CHUNK_BYTES):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def _send(self, sock: socket.socket, packet: bytes) -> None:
        with self._send_lock:
            if self._sock is sock:
                sock.sendall(packet)
                self._last_sent = time.monotonic()

    def _send_current(self, packet: bytes) -> None:
        """Send on the current connection, if any (from the reader's parser)."""
        with self._send_lock:
            sock = self._sock
            if sock is not None:
                sock.sendall(packet)
                self._last_sent = time.monotonic()

    def _dispatch(self, buf: bytearray, handler: MessageHandler, v5: bool) -> int:
        """Handle every whole packet in ``buf``; return how many bytes were used."""
        pos, size = 0, len(buf)
        stats = self.stats
        max_bytes = self.options.max_packet_bytes
        while size - pos >= 2:
            header = buf[pos]
            # The remaining length, inline: this loop runs once per message.
            i, length, mult = pos + 1, 0, 1
            while True:
                if i >= size:
                    return pos
                byte = buf[i]
                i += 1
                length += (byte & 0x7F) * mult
                if not byte & 0x80:
                    break
                mult *= 128
                if mult > 128**3:
                    raise IntakeError("malformed remaining length")
            end = i + length
            if length > max_bytes:
                # Not buffered: report it from its first bytes and read past the rest.
                if not self._refuse(buf, header, i, end, "payload_too_large", length):
                    return pos  # its topic and packet id are not all here yet
                stats.packets_in += 1
                if end > size:
                    self._skip = end - size
                    return size
                pos = end
                continue
            if end > size:
                return pos
            kind = header & 0xF0
            stats.packets_in += 1
            if kind == PUBLISH:
                topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
                try:
                    topic = buf[i + 2 : topic_end].decode("utf-8")
                except UnicodeDecodeError:
                    self._refuse(buf, header, i, end, "bad_topic", length)
                    pos = end
                    continue
                qos = (header >> 1) & 0x03
                packet_id = 0
                if qos:
                    if qos != 1:
                        if qos == 3:
                            raise IntakeError("PUBLISH with QoS 3 (malformed)")
                        self._refuse(buf, header, i, end, "bad_qos", length)
                        pos = end
                        continue
                    packet_id = (buf[topic_end] << 8) | buf[topic_end + 1]
                    topic_end += 2
                if v5:
                    props, topic_end = _read_varint(buf, topic_end)
                    topic_end += props
                try:
                    handler(topic, bytes(buf[topic_end:end]), qos, packet_id)
                except Exception:
                    # Not acknowledged: the broker redelivers it on the next connection.
                    log.exception("message handler failed on %s", topic)
            else:
                self._control_packet(kind, header, buf, i, end, length, v5)
            pos = end
        return pos

    def _control_packet(
        self, kind: int, header: int, buf: bytearray, i: int, end: int, length: int, v5: bool
    ) -> None:
        """Every packet but PUBLISH (rare: kept out of the message loop)."""
        self._control_in += 1
        if kind == SUBACK:
            self._on_suback(bytes(buf[i:end]), v5)
        elif kind == PUBREL and length >= 2:
            # The second half of a refused QoS 2 delivery (its PUBREC was the ack).
            self._send_current(ack_packet(PUBCOMP, (buf[i] << 8) | buf[i + 1]))
        elif kind == DISCONNECT:
            code = buf[i] if v5 and length else 0
            raise IntakeError(f"broker sent DISCONNECT (reason 0x{code:02x})")
        elif kind not in (PINGRESP, PUBACK):
            raise IntakeError(f"unexpected packet type {header >> 4}")

    def _refuse(
        self, buf: bytearray, header: int, i: int, end: int, reason: str, length: int
    ) -> bool:
        """Report a PUBLISH refused at the packet level; False if its header is not in."""
        if header & 0xF0 != PUBLISH:
            raise IntakeError(f"packet of {length} bytes refused (type {header >> 4})")
        qos = (header >> 1) & 0x03
        if qos == 3:
            raise IntakeError("PUBLISH with QoS 3 (malformed)")
        size = len(buf)
        if i + 2 > size:
            return False
        topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
        id_end = topic_end + (2 if qos else 0)
        if id_end > min(size, end):
            if end <= size:
                raise IntakeError("PUBLISH shorter than its topic and packet id")
            return False
        topic = buf[i + 2 : topic_end].decode("utf-8", "replace")
        packet_id = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
        if reason == "payload_too_large":
            detail = f"PUBLISH of {length} bytes, over the hub's {self.options.max_packet_bytes}"
        elif reason == "bad_topic":
            detail = "PUBLISH topic is not UTF-8"
        else:
            detail = f"QoS {qos} PUBLISH on a QoS 1 subscription"
        counts = self.stats.refused_packets
        counts[reason] = counts.get(reason, 0) + 1
        if qos == 2:
            with self._send_lock:
                self._qos2_ids.add(packet_id)
        if self.on_refused is None:
            log.warning("refused %s on %r: %s", reason, topic, detail)
            if qos:
                self.ack(self._generation, [packet_id])
            return True
        try:
            self.on_refused(topic, reason, detail, qos, packet_id)
        except Exception:
            # Not acknowledged: the broker redelivers it on the next connection.
            log.exception("refusal handler failed on %r", topic)
        return True

    def _on_suback(self, body: bytes, v5: bool) -> None:
        pos = 2
        if v5:
            props, pos = _read_varint(body, pos)
            pos += props
        codes = body[pos:]
        filters = [*self.options.topics, *self._probe_filters]
        refused = [
            f"{topic} (0x{code:02x})"
            for topic, code in zip(filters, codes, strict=False)
            if code >= 0x80
        ]
        if refused or len(codes) != len(filters):
            log.error("subscriptions refused: %s", ", ".join(refused) or "count mismatch")
            return
        self._subscribed_at = time.monotonic()
        if self._probe_wanted:
            self._start_probe()
            return
        if self.on_subscribed is not None:
            self.on_subscribed()

    # -- the shared-subscription probe ---------------------------------------------------
    def _start_probe(self) -> None:
        """Publish one message to our own shared probe topic; ``_probe_seen`` waits for it."""
        self._probe_token = f"probe-{time.time_ns()}".encode()
        self._probe_deadline = time.monotonic() + self.options.shared_probe_s
        self._handler = self._probe_seen
        self._send_current(publish_packet(self.options, self._probe_topic, self._probe_token))

    def _probe_seen(self, topic: str, payload: bytes, qos: int, packet_id: int) -> None:
        """The message handler while the probe is out: catches the probe, passes the rest."""
        if topic != self._probe_topic:
            self.on_message(topic, payload, qos, packet_id)
            return
        if qos:
            self.ack(self._generation, [packet_id])  # we publish it at QoS 0; just in case
        if payload != self._probe_token or not self._probe_deadline:
            return  # a probe of an earlier connection
        self._end_probe()
        log.info("the shared subscription delivers (probe came back)")
        if self.on_subscribed is not None:
            self.on_subscribed()

    def _probe_failed(self) -> None:
        opts = self.options
        self._end_probe()
        self.probe_failure = (
            f"the broker {opts.host}:{opts.port} granted the $share subscription but "
            f"delivered nothing within {opts.shared_probe_s:g} s: it does not support "
            "shared subscriptions; unset ingest.shared_group"
        )
        log.error("%s", self.probe_failure)
        if self.on_probe_failed is not None:
            self.on_probe_failed(self.probe_failure)

    def _end_probe(self) -> None:
        self._probe_wanted = False
        self._probe_deadline = 0.0
        self._handler = self.on_message
