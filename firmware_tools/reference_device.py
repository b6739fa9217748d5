"""A reference OTA device in Python: what a device integrator's firmware does, end to end.

``DeviceOta`` is the protocol logic with no network: it takes a message (topic kind and
payload) and returns the status messages to publish, so every input can be tested without
a broker and no input can crash it. ``DeviceSwarm`` runs many devices over MQTT in one
thread (paho's external-loop callbacks over one ``selectors`` loop), each logged in with its
own registry identity; the tests, the benchmark and the demo's simulator use it.

The device keeps what it received across a disconnect (a real device writes it to flash),
so after a reconnect it accepts the same transfer again naming the chunk to resume from.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from firmware_tools.errors import FirmwareError
from firmware_tools.ota_protocol import (
    CHUNK,
    CONTROL,
    OFFER,
    STATUS,
    Offer,
    OtaProtocolError,
    Status,
    ota_topic,
    parse_chunk,
    parse_control,
    parse_offer,
)
from firmware_tools.signing import verify

log = logging.getLogger(__name__)
# A decline policy: a reason word to decline the offer, or None to accept it.
DeclinePolicy = Callable[[Offer], str | None]


@dataclass(slots=True)
class _Transfer:
    offer: Offer
    received: bytearray
    next_chunk: int = 0
    gap_reported: int = -1


@dataclass(slots=True, kw_only=True)
class DeviceOta:
    """One device's OTA logic: accept or decline, receive, verify, install, report."""

    device_id: str
    device_type: str
    model: str | None
    version: str
    trusted_keys: Mapping[str, Ed25519PublicKey]
    decline: DeclinePolicy | None = None
    previous_version: str | None = None
    transfer: _Transfer | None = None
    # What to say once back from a reboot (installed or rolled_back).
    after_reboot: Status | None = None
    reboot_wanted: bool = False
    chunks_received: int = 0
    errors: list[str] = field(default_factory=list)

    def on_connected(self) -> list[Status]:
        """What to publish on every (re)connect: a resume point, or the result of a reboot."""
        if self.after_reboot is not None:
            report, self.after_reboot = self.after_reboot, None
            return [report]
        if self.transfer is not None:
            t = self.transfer
            return [Status(state="accepted", transfer=t.offer.transfer, next_chunk=t.next_chunk)]
        return []

    def handle(self, kind: str, payload: bytes) -> list[Status]:
        """Answers to one message; a bad message is answered with an ``error`` and its reason."""
        try:
            if kind == OFFER:
                return self._offer(parse_offer(payload))
            if kind == CHUNK:
                return self._chunk(payload)
            if kind == CONTROL:
                control = parse_control(payload)
                if control.action == "abort":
                    return self._abort(control.transfer)
                return self._rollback()
            raise OtaProtocolError("unknown_topic", f"no OTA message called {kind[:40]!r}")
        except OtaProtocolError as err:
            self.errors.append(err.reason)
            transfer = self.transfer.offer.transfer if self.transfer is not None else None
            return [Status(state="error", transfer=transfer, reason=err.reason)]

    def _offer(self, offer: Offer) -> list[Status]:
        manifest, transfer = offer.manifest, offer.transfer
        if self.transfer is not None and self.transfer.offer.transfer == transfer:
            # The hub offered again (it lost our answer, or it restarted): resume.
            return [
                Status(state="accepted", transfer=transfer, next_chunk=self.transfer.next_chunk)
            ]
        reason = self._refusal(offer)
        if reason is not None:
            return [Status(state="declined", transfer=transfer, reason=reason)]
        keep = self.transfer is not None and self.transfer.offer.manifest.sha256 == manifest.sha256
        if keep and self.transfer is not None:
            # Same image under a new transfer id: what we hold still counts.
            self.transfer.offer = offer
        else:
            self.transfer = _Transfer(offer=offer, received=bytearray())
        return [Status(state="accepted", transfer=transfer, next_chunk=self.transfer.next_chunk)]

    def _refusal(self, offer: Offer) -> str | None:
        """Why this device will not take the offer, or None."""
        manifest = offer.manifest
        if not manifest.targets(self.device_type, self.model):
            return "wrong_target"
        key = self.trusted_keys.get(manifest.key_id)
        if key is None:
            return "unknown_key"
        try:
            signature = manifest.signature_bytes()
        except FirmwareError:
            return "bad_signature"
        if not verify(key, signature, manifest.signed_bytes()):
            return "bad_signature"
        if manifest.version == self.version:
            return "already_installed"
        return self.decline(offer) if self.decline is not None else None

    def _chunk(self, payload: bytes) -> list[Status]:
        chunk = parse_chunk(payload)
        t = self.transfer
        if t is None or chunk.transfer != t.offer.transfer:
            raise OtaProtocolError(
                "unknown_transfer", "chunk of a transfer this device has not accepted"
            )
        if chunk.index < t.next_chunk:
            return []  # a duplicate after a resume: already written
        if chunk.index > t.next_chunk:
            if t.gap_reported == t.next_chunk:
                return []
            t.gap_reported = t.next_chunk
            return [Status(state="receiving", transfer=t.offer.transfer, next_chunk=t.next_chunk)]
        offer = t.offer
        expected = min(offer.chunk_size, offer.manifest.size - chunk.index * offer.chunk_size)
        if len(chunk.data) != expected:
            raise OtaProtocolError("bad_length", f"chunk {chunk.index} must carry {expected} bytes")
        t.received += chunk.data
        t.next_chunk += 1
        self.chunks_received += 1
        if t.next_chunk < offer.chunks:
            return [Status(state="receiving", transfer=offer.transfer, next_chunk=t.next_chunk)]
        return self._install(t)

    def _install(self, t: _Transfer) -> list[Status]:
        """The whole image is here: its SHA-256 must be the signed one, else nothing installs."""
        self.transfer = None
        manifest = t.offer.manifest
        if hashlib.sha256(t.received).hexdigest() != manifest.sha256:
            return [Status(state="failed", transfer=t.offer.transfer, reason="image_sha256")]
        self.previous_version, self.version = self.version, manifest.version
        self.after_reboot = Status(
            state="installed", transfer=t.offer.transfer, version=manifest.version
        )
        self.reboot_wanted = True
        return [Status(state="rebooting", transfer=t.offer.transfer, version=manifest.version)]

    def _abort(self, transfer: str | None) -> list[Status]:
        t = self.transfer
        if t is None or (transfer is not None and transfer != t.offer.transfer):
            return []
        self.transfer = None
        return [Status(state="failed", transfer=t.offer.transfer, reason="aborted")]

    def _rollback(self) -> list[Status]:
        if self.previous_version is None:
            return [Status(state="error", reason="nothing_to_roll_back")]
        self.version, self.previous_version = self.previous_version, None
        self.after_reboot = Status(state="rolled_back", version=self.version)
        self.reboot_wanted = True
        return [Status(state="rebooting", version=self.version)]


# -- over MQTT -------------------------------------------------------------------------------------
@dataclass(slots=True, kw_only=True)
class DeviceLogin:
    """A device's broker identity, as the registry issued it."""

    username: str
    password: str


@dataclass(slots=True, kw_only=True)
class _Member:
    ota: DeviceOta
    login: DeviceLogin
    client: mqtt.Client
    connected: bool = False
    # Test hook: disconnect once after this many chunks, come back after ``drop_for_s``.
    drop_after_chunks: int | None = None
    drop_for_s: float = 0.5
    reboot_s: float = 0.2
    connects: int = 0
    unacked: list[mqtt.MQTTMessageInfo] = field(default_factory=list)
    away: bool = False  # a reboot or a drop is under way


class DeviceSwarm:
    """Many reference devices on one broker, driven by one thread's selector loop."""

    def __init__(self, host: str, port: int, *, keepalive_s: int = 60) -> None:
        self.host, self.port, self.keepalive_s = host, port, keepalive_s
        self.members: dict[str, _Member] = {}
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    # -- set-up ----------------------------------------------------------------------------
    def add(
        self,
        ota: DeviceOta,
        login: DeviceLogin,
        *,
        drop_after_chunks: int | None = None,
        drop_for_s: float = 0.5,
        reboot_s: float = 0.2,
    ) -> None:
        """Add a device; it connects when the swarm starts (or at once if running)."""
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=login.username,
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(login.username, login.password)
        member = _Member(
            ota=ota,
            login=login,
            client=client,
            drop_after_chunks=drop_after_chunks,
            drop_for_s=drop_for_s,
            reboot_s=reboot_s,
        )
        client.user_data_set(member)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        self.members[ota.device_id] = member
        if self._thread is not None:
            self.call_soon(lambda: self._connect(member))

    def start(self) -> None:
        """Connect every device and run the loop in a thread of its own."""
        self._thread = threading.Thread(target=self._run, name="ota-swarm", daemon=True)
        for member in list(self.members.values()):
            self.call_soon(lambda m=member: self._connect(m))  # type: ignore[misc]
        self._thread.start()

    def stop(self) -> None:
        """Disconnect every device and end the loop."""
        if self._thread is None:
            return
        done = threading.Event()

        def finish() -> None:
            for member in self.members.values():
                if member.connected:
                    member.client.disconnect()
            self.call_later(0.2, done.set)

        self.call_soon(finish)
        done.wait(5)
        self._stop.set()
        self._wake()
        self._thread.join(10)
        self._thread = None
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def wait_connected(
        self, timeout_s: float = 30.0, device_ids: Iterable[str] | None = None
    ) -> bool:
        """True once every (named) device is connected."""
        wanted = list(device_ids) if device_ids is not None else list(self.members)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.members[d].connected for d in wanted):
                return True
            time.sleep(0.05)
        return False

    # -- timers ------------------------------------------------------------------------------
    def call_soon(self, func: Callable[[], None]) -> None:
        """Run ``func`` in the loop's thread."""
        self.call_later(0.0, func)

    def call_later(self, delay_s: float, func: Callable[[], None]) -> None:
        """Run ``func`` in the loop's thread after ``delay_s``."""
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._order), func))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- the loop ----------------------------------------------------------------------------
    def _run(self) -> None:
        last_misc = 0.0
        while not self._stop.is_set():
            timeout = 0.2
            with self._lock:
                if self._timers:
                    timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
            for key, events in self._selector.select(timeout):
                client = key.data
                if client is None:
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                    continue
                if events & selectors.EVENT_READ:
                    client.loop_read()
                if events & selectors.EVENT_WRITE:
                    client.loop_write()
            now = time.monotonic()
            while True:
                with self._lock:
                    if not self._timers or self._timers[0][0] > now:
                        break
                    _at, _n, func = heapq.heappop(self._timers)
                try:
                    func()
                except Exception:  # one device's failure must not stop the others
                    log.exception("OTA swarm timer failed")
            if now - last_misc > 1.0:
                last_misc = now
                for member in self.members.values():
                    member.client.loop_misc()

    def _connect(self, member: _Member) -> None:
        member.away = False
        try:
            if member.connects == 0:
                member.client.connect(self.host, self.port, keepalive=self.keepalive_s)
            else:
                member.client.reconnect()
        except OSError as err:
            log.warning("device %s cannot connect: %s", member.ota.device_id, err)
            self.call_later(1.0, lambda: self._connect(member))
        member.connects += 1

    def _socket_open(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _socket_close(self, _c: mqtt.Client, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _register_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)

    def _unregister_write(self, client: mqtt.Client, _u: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sock, selectors.EVENT_READ, client)

    # -- MQTT callbacks ------------------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, member: _Member, _f: Any, reason: Any, _p: Any
    ) -> None:
        if reason.is_failure:
            log.warning("device %s refused by the broker: %s", member.ota.device_id, reason)
            return
        device_id = member.ota.device_id
        # Three topics, not ota/#, so the device never hears its own status.
        client.subscribe([(ota_topic(device_id, kind), 1) for kind in (OFFER, CHUNK, CONTROL)])
        member.connected = True
        self._publish(member, member.ota.on_connected())

    def _on_disconnect(
        self, _c: mqtt.Client, member: _Member, _f: Any, reason: Any, _p: Any
    ) -> None:
        member.connected = False

    def _on_message(self, _c: mqtt.Client, member: _Member, msg: mqtt.MQTTMessage) -> None:
        if member.away:
            return  # rebooting or cut off: it hears nothing until it is back
        kind = msg.topic.rsplit("/", 1)[-1]
        ota = member.ota
        self._publish(member, ota.handle(kind, bytes(msg.payload)))
        if ota.reboot_wanted:
            ota.reboot_wanted = False
            self._go_away(member, member.reboot_s)
        elif (
            member.drop_after_chunks is not None
            and ota.transfer is not None
            and ota.chunks_received >= member.drop_after_chunks
        ):
            member.drop_after_chunks = None
            self._go_away(member, member.drop_for_s)

    def _go_away(self, member: _Member, for_s: float, *, waited_s: float = 0.0) -> None:
        """Disconnect (a reboot, or a dropped link) and come back after ``for_s``.

        A device flushes what it said first (up to 5 s): a status still waiting for an
        in-flight slot would otherwise go out after the reconnect, behind newer ones.
        """
        member.away = True
        member.unacked = [info for info in member.unacked if not info.is_published()]
        if member.unacked and waited_s < 5.0 and member.connected:
            self.call_later(0.02, lambda: self._go_away(member, for_s, waited_s=waited_s + 0.02))
            return
        member.client.disconnect()
        self.call_later(for_s, lambda: self._connect(member))

    def _publish(self, member: _Member, statuses: list[Status]) -> None:
        topic = ota_topic(member.ota.device_id, STATUS)
        for status in statuses:
            member.unacked.append(member.client.publish(topic, status.encode(), qos=1))
