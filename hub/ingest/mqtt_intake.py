"""The hub's receiving MQTT connection: QoS 1 in, PUBACKs out in fsync groups.

Why not paho here: the hub acknowledges a message only once it is fsynced, and it must
take tens of thousands of messages per second on one core. Draining the same 150,000
message backlog from Mosquitto on this project's 2-core bench machine (see
``bench/client_compare.py``): paho-mqtt 2.2 took 10,600-11,100 msg/s, gmqtt 0.8 with
acknowledgement after its handler 20,800-25,000 msg/s, this client 100,000 msg/s; with the
contract decoder behind each, the Python clients leave too little of the core for the
hub's own work. The client is deliberately small: it speaks only what a subscriber
needs (CONNECT, SUBSCRIBE, PUBLISH in at QoS 0 and 1, PUBACK, PINGREQ, DISCONNECT,
and QoS 0 PUBLISH out for the dead-letter feed), in MQTT 3.1.1 and 5.

Threads: one reader thread owns the socket's receiving side, parses packets and calls
the message handler in order; any thread may send PUBACKs (``ack``) and QoS 0 messages
(``publish``) under a lock. The reader reconnects with capped exponential backoff.
Each connection has a generation number: acknowledgements meant for an earlier
connection are dropped, since the broker redelivers those messages and their packet
ids may be reused on the new connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, int, int], None]
"""``(topic, payload, qos, packet_id)``; packet_id is 0 for QoS 0."""

READ_CHUNK_BYTES = 256 * 1024
MAX_PACKET_BYTES = 16 * 1024 * 1024  # far above the contract's 64 KiB payload limit

# Packet types (high nibble of the fixed header).
CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0
# MQTT 5 property identifiers used in CONNECT.
PROP_SESSION_EXPIRY, PROP_RECEIVE_MAXIMUM = 0x11, 0x21
# CONNACK reason codes, v5 numbering; 3.1.1 return codes are mapped onto them.
AUTH_FAILURE_CODES = frozenset({0x86, 0x87})
_V311_CONNACK = {1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
_CONNACK_TEXT = {
    0x80: "unspecified error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x8A: "banned",
}
_PUBACK = struct.Struct("!BBH")
_U16 = struct.Struct("!H")


class IntakeError(Exception):
    """The connection broke the protocol or the broker refused it."""


class BrokerRefusedError(IntakeError):
    """CONNACK with a failure reason code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"broker refused the connection: {_CONNACK_TEXT.get(code, hex(code))}")
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
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    keepalive_s: int = 30
    session_expiry_s: int = 24 * 3600
    receive_maximum: int = 1000
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


def varint_bytes(value: int) -> bytes:
    """An MQTT variable byte integer (the remaining length of a packet)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packet(header: int, body: bytes) -> bytes:
    return bytes([header]) + varint_bytes(len(body)) + body


def mqtt_string(value: str) -> bytes:
    """An MQTT UTF-8 string: two bytes of length, then the bytes."""
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65,535 bytes")
    return _U16.pack(len(raw)) + raw


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


def connect_packet(options: IntakeOptions) -> bytes:
    """CONNECT for a persistent session (clean start off), with user name and password."""
    v5 = options.protocol == "5"
    flags = 0x00  # clean session / clean start off: the broker keeps our queue
    if options.username is not None:
        flags |= 0x80
        if options.password is not None:
            flags |= 0x40
    body = mqtt_string("MQTT") + bytes([5 if v5 else 4, flags]) + _U16.pack(options.keepalive_s)
    if v5:
        props = bytes([PROP_SESSION_EXPIRY]) + struct.pack("!I", options.session_expiry_s)
        props += bytes([PROP_RECEIVE_MAXIMUM]) + _U16.pack(options.receive_maximum)
        body += varint_bytes(len(props)) + props
    body += mqtt_string(options.client_id)
    if options.username is not None:
        body += mqtt_string(options.username)
        if options.password is not None:
            body += mqtt_string(options.password)
    return _packet(CONNECT, body)


def subscribe_packet(options: IntakeOptions, packet_id: int, qos: int = 1) -> bytes:
    """SUBSCRIBE to every topic filter at ``qos``."""
    body = _U16.pack(packet_id)
    if options.protocol == "5":
        body += b"\x00"  # no properties
    for topic in options.topics:
        body += mqtt_string(topic) + bytes([qos])
    return _packet(SUBSCRIBE, body)


def publish_packet(options: IntakeOptions, topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH, not retained."""
    body = mqtt_string(topic) + (b"\x00" if options.protocol == "5" else b"") + payload
    return _packet(PUBLISH, body)


def puback_packets(packet_ids: Sequence[int]) -> bytes:
    """PUBACKs for many packet ids as one buffer (same 4 bytes in 3.1.1 and 5)."""
    pack = _PUBACK.pack
    return b"".join([pack(PUBACK, 2, packet_id) for packet_id in packet_ids])


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
    ) -> None:
        self.options = options
        self.on_message = on_message
        self.on_connect = on_connect
        self.on_subscribed = on_subscribed
        self.on_connection_lost = on_connection_lost
        self.stats = IntakeStats()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._generation = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sent = 0.0
        self._subscribe_id = 0
        self._pending = bytearray()

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
                    sock.sendall(_packet(DISCONNECT, b""))
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
        """PUBACK these packet ids if still on connection ``generation``; else drop them."""
        if not packet_ids:
            return True
        with self._send_lock:
            sock = self._sock
            if sock is None or generation != self._generation:
                self.stats.acks_dropped += len(packet_ids)
                return False
            try:
                sock.sendall(puback_packets(packet_ids))
            except OSError as err:
                # The reader sees the broken connection and reconnects; the broker
                # redelivers everything not acknowledged.
                self.stats.acks_dropped += len(packet_ids)
                log.debug("PUBACKs not sent: %s", err)
                return False
            self._last_sent = time.monotonic()
            self.stats.acks_sent += len(packet_ids)
            return True

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
            try:
                sock = self._open()
                delay = opts.reconnect_min_s
                self._read_loop(sock)
                reason = "closed by the broker"
            except BrokerRefusedError as err:
                reason = str(err)
                self.stats.refusals[err.code] = self.stats.refusals.get(err.code, 0) + 1
                if err.code in AUTH_FAILURE_CODES:
                    # Retrying a wrong password quickly only fills the broker's log.
                    delay = max(delay, opts.auth_failure_min_s)
                log.error("%s (%s:%d)", reason, opts.host, opts.port)
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
            if was_up:
                self.stats.connection_losses += 1
                log.warning("MQTT connection lost (%s); reconnecting", reason)
                if self.on_connection_lost is not None:
                    self.on_connection_lost(reason)
            else:
                log.debug("MQTT connect failed (%s); retrying in %.2f s", reason, delay)
            self._stopping.wait(delay)
            delay = min(delay * 2, opts.reconnect_max_s)

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
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(connect_packet(opts))
            header, body, rest = self._read_one(sock, opts.connect_timeout_s)
            if header & 0xF0 != CONNACK or len(body) < 2:
                raise IntakeError(f"expected CONNACK, got packet type {header >> 4}")
            session_present = bool(body[0] & 0x01)
            code = body[1] if opts.protocol == "5" else _V311_CONNACK.get(body[1], body[1])
            if code >= 0x80 or (opts.protocol != "5" and body[1] != 0):
                raise BrokerRefusedError(code)
            self._subscribe_id = self._subscribe_id % 0xFFFF + 1
            with self._send_lock:
                self._generation += 1
                generation = self._generation
                self._sock = sock
                sock.sendall(subscribe_packet(opts, self._subscribe_id))
                self._last_sent = time.monotonic()
        except BaseException:
            sock.close()
            raise
        self.stats.connects += 1
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
        # Wake often enough to ping in time and to notice ``stop``.
        tick = min(1.0, keepalive / 4) if keepalive else 1.0
        sock.settimeout(tick)
        buf = self._pending
        last_in = time.monotonic()
        handler = self.on_message
        v5 = opts.protocol == "5"
        while True:
            if self._stopping.is_set():
                self._wait_for_close(sock)
                return
            if buf:
                consumed = self._dispatch(buf, handler, v5)
                if consumed:
                    del buf[:consumed]
            try:
                data = sock.recv(READ_CHUNK_BYTES)
            except TimeoutError:
                data = None
            now = time.monotonic()
            if data is None:
                if keepalive:
                    if now - last_in > 1.5 * keepalive:
                        raise IntakeError(f"no packet from the broker for {1.5 * keepalive:g} s")
                    # Ping when either side has been quiet for half the keepalive: a
                    # client that only sends would otherwise hear nothing back.
                    if now - self._last_sent >= keepalive / 2 or now - last_in >= keepalive / 2:
                        self._send(sock, bytes([PINGREQ, 0]))
                continue
            if not data:
                return  # orderly close by the broker
            last_in = now
            buf += data
            if keepalive and now - self._last_sent >= keepalive / 2:
                self._send(sock, bytes([PINGREQ, 0]))

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

    def _dispatch(self, buf: bytearray, handler: MessageHandler, v5: bool) -> int:
        """Handle every whole packet in ``buf``; return how many bytes were used."""
        pos, size = 0, len(buf)
        stats = self.stats
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
            if length > MAX_PACKET_BYTES:
                raise IntakeError(f"packet of {length} bytes refused")
            end = i + length
            if end > size:
                return pos
            kind = header & 0xF0
            stats.packets_in += 1
            if kind == PUBLISH:
                topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
                try:
                    topic = buf[i + 2 : topic_end].decode("utf-8")
                except UnicodeDecodeError:
                    raise IntakeError("PUBLISH topic is not UTF-8") from None
                qos = (header >> 1) & 0x03
                packet_id = 0
                if qos:
                    if qos != 1:
                        raise IntakeError("QoS 2 PUBLISH on a QoS 1 subscription")
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
            elif kind == SUBACK:
                self._on_suback(bytes(buf[i:end]), v5)
            elif kind == DISCONNECT:
                code = buf[i] if v5 and length else 0
                raise IntakeError(f"broker sent DISCONNECT (reason 0x{code:02x})")
            elif kind not in (PINGRESP, PUBACK):
                raise IntakeError(f"unexpected packet type {header >> 4}")
            pos = end
        return pos

    def _on_suback(self, body: bytes, v5: bool) -> None:
        pos = 2
        if v5:
            props, pos = _read_varint(body, pos)
            pos += props
        codes = body[pos:]
        refused = [
            f"{topic} (0x{code:02x})"
            for topic, code in zip(self.options.topics, codes, strict=False)
            if code >= 0x80
        ]
        if refused or len(codes) != len(self.options.topics):
            log.error("subscriptions refused: %s", ", ".join(refused) or "count mismatch")
            return
        if self.on_subscribed is not None:
            self.on_subscribed()
