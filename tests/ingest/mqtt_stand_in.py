"""A raw-socket MQTT broker stand-in, for what the real Mosquitto will not do.

Mosquitto refuses a topic that is not UTF-8, never sends QoS 2 on a QoS 1 subscription,
refuses packets over its max_packet_size, and speaks MQTT 5 properly. The hub must still
cope with brokers that do these things, so the tests that need them talk to this
stand-in: a listening socket on loopback that answers CONNECT and SUBSCRIBE as a test
scripts it, sends the packets a test gives it, and records every packet the client sends
(CONNECT, PUBACK, PUBREC, PUBCOMP...). It is a stand-in, not a broker: no routing, no
sessions.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CONNACK_V311_OK = b"\x20\x02\x00\x00"
CONNACK_V5_OK = b"\x20\x03\x00\x00\x00"


def encode_length(value: int) -> bytes:
    """The MQTT variable byte integer."""
    out = b""
    while True:
        digit, value = value % 128, value // 128
        out += bytes([digit | 0x80 if value else digit])
        if not value:
            return out


def publish_bytes(
    topic: bytes, payload: bytes, *, qos: int = 1, packet_id: int = 1, v5: bool = False
) -> bytes:
    """A PUBLISH as a broker sends it, with the topic as raw bytes (may be bad UTF-8)."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += packet_id.to_bytes(2, "big")
    if v5:
        body += b"\x00"
    body += payload
    return bytes([0x30 | qos << 1]) + encode_length(len(body)) + body


@dataclass
class Session:
    """One client connection the stand-in accepted."""

    sock: socket.socket
    packets: list[tuple[int, bytes]] = field(default_factory=list)
    closed: bool = False

    def send(self, data: bytes) -> None:
        """Send bytes to the client (ignored once it is gone)."""
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def acks(self, kind: int) -> list[int]:
        """Packet ids of the client's packets of type ``kind`` (0x40 PUBACK, 0x50 PUBREC...)."""
        return [
            int.from_bytes(body[:2], "big")
            for header, body in self.packets
            if header & 0xF0 == kind
        ]


# What the stand-in does on CONNECT and on SUBSCRIBE: return the bytes to answer with,
# or None to close the connection.
Answer = Callable[["Session", bytes], bytes | None]


def v311_connack(_session: Session, _connect: bytes) -> bytes | None:
    """Accept as a 3.1.1 broker."""
    return CONNACK_V311_OK


def grant_all(_session: Session, subscribe: bytes) -> bytes | None:
    """SUBACK granting QoS 1 to every filter of a 3.1.1 SUBSCRIBE."""
    count, pos = 0, 2
    while pos < len(subscribe):
        pos += 2 + int.from_bytes(subscribe[pos : pos + 2], "big") + 1
        count += 1
    body = subscribe[:2] + b"\x01" * count
    return b"\x90" + encode_length(len(body)) + body


class MqttStandIn:
    """Listens on a free loopback port; ``sessions`` holds every accepted connection."""

    def __init__(
        self,
        *,
        on_connect: Answer = v311_connack,
        on_subscribe: Answer = grant_all,
    ) -> None:
        self.on_connect = on_connect
        self.on_subscribe = on_subscribe
        self.sessions: list[Session] = []
        self.connect_times: list[float] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        """Stop listening and close every connection."""
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        for session in self.sessions:
            with contextlib.suppress(OSError):
                session.sock.close()

    def __enter__(self) -> MqttStandIn:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def wait(self, check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
        """Wait until ``check`` holds."""
        with self._changed:
            if not self._changed.wait_for(check, timeout=timeout_s):
                raise AssertionError(f"stand-in broker: timed out waiting for {what}")

    def wait_subscribed(self, timeout_s: float = 10.0) -> Session:
        """The newest session, once it has subscribed."""
        self.wait(
            lambda: (
                bool(self.sessions) and any(h & 0xF0 == 0x80 for h, _ in self.sessions[-1].packets)
            ),
            "a SUBSCRIBE",
            timeout_s,
        )
        return self.sessions[-1]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            session = Session(sock)
            with self._changed:
                self.sessions.append(session)
                self.connect_times.append(time.monotonic())
                self._changed.notify_all()
            thread = threading.Thread(target=self._serve, args=(session,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, session: Session) -> None:
        sock = session.sock
        sock.settimeout(0.2)
        buf = b""
        try:
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                buf += data
                while (parsed := self._one_packet(buf)) is not None:
                    header, body, buf = parsed
                    with self._changed:
                        session.packets.append((header, body))
                        self._changed.notify_all()
                    if not self._answer(session, header, body):
                        return
        except OSError:
            return
        finally:
            session.closed = True
            with contextlib.suppress(OSError):
                sock.close()
            with self._changed:
                self._changed.notify_all()

    def _answer(self, session: Session, header: int, body: bytes) -> bool:
        kind = header & 0xF0
        reply: bytes | None = b""
        if kind == 0x10:
            reply = self.on_connect(session, body)
        elif kind == 0x80:
            reply = self.on_subscribe(session, body)
        elif kind == 0xC0:
            reply = b"\xd0\x00"
        elif kind == 0xE0:
            return False
        if reply is None:
            return False
        if reply:
            session.send(reply)
        return True

    @staticmethod
    def _one_packet(buf: bytes) -> tuple[int, bytes, bytes] | None:
        if len(buf) < 2:
            return None
        length, mult, pos = 0, 1, 1
        while True:
            if pos >= len(buf):
                return None
            byte = buf[pos]
            pos += 1
            length += (byte & 0x7F) * mult
            mult *= 128
            if not byte & 0x80:
                break
        if len(buf) < pos + length:
            return None
        return buf[0], buf[pos : pos + length], buf[pos + length :]
