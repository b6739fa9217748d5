"""A cheap publisher for a simulated fleet: many MQTT connections, few CPU cycles.

A 2-core machine must run the broker, InfluxDB, the hub and the publisher at once, so
the publisher spends as little as it can per message:

* payloads are prebuilt bytes (``drivers.contract``'s builder, before the clock starts);
* the backlog and live phases (``publish_worker``) write prebuilt MQTT PUBLISH packets
  straight to non-blocking sockets (``RawConnections``, about 20x cheaper per message
  than paho, so the fleet can offer 10,000 msg/s on a machine it shares with the hub);
* the fault scenarios keep paho (``FleetConnections``): they need its reconnects and
  its resending of unacknowledged messages over a broker restart;
* QoS 1 with a large in-flight window: the broker's PUBACKs never throttle the sender;
* several processes (``multiprocessing``, spawn) share the load for the big runs.

MQTT 3.1.1 is used on the publishing side, as most field devices speak it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from bench.bench_stack import TELEMETRY_TOPIC, BenchError, device_id
from drivers.contract import telemetry_payload as telemetry_message
from hub.ingest.mqtt_packets import mqtt_string, varint_bytes

# paho message ids are 16 bit: keep fewer than that unacknowledged per connection.
MAX_PENDING_PER_CLIENT = 30_000
RECONNECT_EVERY_S = 0.5
_QUEUED = (
    MQTTErrorCode.MQTT_ERR_SUCCESS,
    MQTTErrorCode.MQTT_ERR_NO_CONN,
    MQTTErrorCode.MQTT_ERR_CONN_LOST,
)


def _gauge_metrics(index: int, seq: int) -> dict[str, float | int]:
    """The metrics of one reading of simulated gauge ``index`` (bench_seq tells them apart)."""
    return {
        "level_m": ((index * 7 + seq) % 300) / 100.0,
        "rain_mm": round((seq % 5) * 0.2, 1),
        "battery_v": 3.71,
        "bench_seq": seq,
    }


def telemetry_payload(index: int, seq: int, ts_ms: int) -> bytes:
    """The contract's telemetry JSON for one reading of simulated gauge ``index``."""
    return telemetry_message(_gauge_metrics(index, seq), ts_ms=ts_ms, seq=seq)


def telemetry_fields(index: int, seq: int) -> str:
    """The same reading as InfluxDB line-protocol fields (for the ceiling reference).

    Every metric is a ``number`` in the fleet's type (bench_stack.FLEET_METRICS), so the
    hub writes each as a float, as here.
    """
    metrics = _gauge_metrics(index, seq)
    return ",".join(f"{name}={float(metrics[name])!r}" for name in sorted(metrics))


class _AckCounter:
    """What both publishers share: counts of sent and acknowledged messages."""

    sent: int
    acked: int

    def pump(self, wait_s: float = 0.0) -> None:
        """Move bytes both ways once; sleep ``wait_s`` after."""
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Messages sent but not yet acknowledged by the broker."""
        return self.sent - self.acked

    def wait_acked(self, timeout_s: float) -> bool:
        """Pump until every message is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.pending > 0:
            if time.monotonic() > deadline:
                return False
            self.pump(0.002)
        return True


class FleetConnections(_AckCounter):
    """Several paho clients driven by one thread; counts sent and acknowledged messages.

    ``on_ack(token)`` is called for every PUBACK with the token given to ``publish``.
    A connection that drops is reconnected from ``pump``; paho keeps unacknowledged
    QoS 1 messages and sends them again after the reconnect.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        client_ids: Sequence[str],
        on_ack: Callable[[int], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.sent = 0
        self.acked = 0
        self.reconnects = 0
        self._on_ack = on_ack
        self._tokens: list[dict[int, int]] = [{} for _ in client_ids]
        self._connected = [False for _ in client_ids]
        self._last_attempt = [0.0 for _ in client_ids]
        self.clients: list[mqtt.Client] = []
        for index, client_id in enumerate(client_ids):
            client = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=True,
            )
            client.username_pw_set(username, password)
            client.max_inflight_messages_set(0)  # 0 = no limit; MAX_PENDING bounds it
            client.on_publish = partial(self._published, index)
            client.on_connect = partial(self._connect_result, index)
            client.on_disconnect = partial(self._disconnected, index)
            self.clients.append(client)

    def _published(self, index: int, _c: object, _u: object, mid: int, *_rest: object) -> None:
        token = self._tokens[index].pop(mid, -1)
        self.acked += 1
        if self._on_ack is not None and token >= 0:
            self._on_ack(token)

    def _connect_result(
        self, index: int, _c: object, _u: object, _f: object, reason: Any, *_rest: object
    ) -> None:
        self._connected[index] = not reason.is_failure

    def _disconnected(self, index: int, *_args: object) -> None:
        self._connected[index] = False

    def connect(self, timeout_s: float = 30.0) -> None:
        """Open every connection and wait for each CONNACK."""
        for client in self.clients:
            client.connect(self.host, self.port, keepalive=60)
        deadline = time.monotonic() + timeout_s
        while not all(self._connected):
            if time.monotonic() > deadline:
                raise BenchError(f"publisher: only {sum(self._connected)} connections accepted")
            self.pump(0.01)

    def publish(self, index: int, topic: str, payload: bytes, token: int = -1) -> None:
        """Queue one QoS 1 message on connection ``index`` (sent now if connected)."""
        tokens = self._tokens[index]
        while len(tokens) >= MAX_PENDING_PER_CLIENT:
            self.pump(0.001)
        info = self.clients[index].publish(topic, payload, qos=1)
        # While the connection is down paho keeps the message and sends it after the
        # reconnect (the session state is reset to "publish" then): not an error here.
        if info.rc not in _QUEUED:
            raise BenchError(f"publish on connection {index} failed: {info.rc}")
        tokens[info.mid] = token
        self.sent += 1

    def pump(self, wait_s: float = 0.0) -> None:
        """Read PUBACKs, write what is queued, keep alive, reconnect what dropped."""
        now = time.monotonic()
        for index, client in enumerate(self.clients):
            rc = client.loop(timeout=0.0)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                continue
            if now - self._last_attempt[index] < RECONNECT_EVERY_S:
                continue
            self._last_attempt[index] = now
            with contextlib.suppress(OSError):
                client.reconnect()
                self.reconnects += 1
        if wait_s > 0:
            time.sleep(wait_s)

    def close(self) -> None:
        """Disconnect every client."""
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop(timeout=0.0)


class RawConnections(_AckCounter):
    """Publishers on plain sockets: prebuilt QoS 1 PUBLISH packets, PUBACKs counted.

    A load generator, not a client: MQTT 3.1.1, clean session, no keepalive, no
    reconnect (a dropped connection fails the run), packet ids cycled per connection
    with fewer than ``MAX_PENDING_PER_CLIENT`` unacknowledged.
    """

    def __init__(
        self, *, host: str, port: int, username: str, password: str, client_ids: Sequence[str]
    ) -> None:
        self.host, self.port = host, port
        self._username, self._password = username, password
        self.client_ids = list(client_ids)
        self.sent = 0
        self.acked = 0
        self._socks: list[socket.socket] = []
        self._out: list[list[bytes]] = [[] for _ in client_ids]
        self._inbuf = [bytearray() for _ in client_ids]
        self._next_id = [0 for _ in client_ids]
        self._pending = [0 for _ in client_ids]

    def connect(self, timeout_s: float = 30.0) -> None:
        """Open every connection and wait for each CONNACK."""
        for client_id in self.client_ids:
            body = mqtt_string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 0)
            body += mqtt_string(client_id) + mqtt_string(self._username)
            body += mqtt_string(self._password)
            sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(bytes([0x10]) + varint_bytes(len(body)) + body)
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    raise BenchError(f"publisher {client_id}: connection closed before CONNACK")
                answer += chunk
            if answer[0] != 0x20 or answer[3] != 0:
                raise BenchError(f"publisher {client_id}: CONNACK refused ({answer[3]})")
            sock.setblocking(False)
            self._socks.append(sock)

    @staticmethod
    def packet_parts(topic: str, payload: bytes) -> tuple[bytes, bytes]:
        """(fixed header + topic, payload) of a QoS 1 PUBLISH; the packet id goes between."""
        topic_bytes = mqtt_string(topic)
        size = len(topic_bytes) + 2 + len(payload)
        return bytes([0x32]) + varint_bytes(size) + topic_bytes, payload

    def publish(self, index: int, head: bytes, payload: bytes) -> None:
        """Queue one prebuilt QoS 1 PUBLISH on connection ``index``."""
        while self._pending[index] >= MAX_PENDING_PER_CLIENT:
            self.pump(0.001)
        packet_id = self._next_id[index] % 0xFFFF + 1
        self._next_id[index] = packet_id
        self._out[index].append(head + packet_id.to_bytes(2, "big") + payload)
        self._pending[index] += 1
        self.sent += 1

    def pump(self, wait_s: float = 0.0) -> None:
        """Write what is queued, count the PUBACKs that came back."""
        for index, sock in enumerate(self._socks):
            out = self._out[index]
            if out:
                data = b"".join(out)
                out.clear()
                sock.setblocking(True)  # a full send buffer waits instead of failing
                sock.sendall(data)
                sock.setblocking(False)
            try:
                chunk = sock.recv(262144)
            except BlockingIOError:
                continue
            if not chunk:
                raise BenchError(f"publisher {self.client_ids[index]}: broker closed")
            buf = self._inbuf[index]
            buf += chunk
            whole = len(buf) - len(buf) % 4  # only PUBACKs come back: 4 bytes each
            acks = whole // 4
            if any(buf[i] != 0x40 for i in range(0, whole, 4)):
                raise BenchError(f"publisher {self.client_ids[index]}: unexpected packet")
            del buf[:whole]
            self._pending[index] -= acks
            self.acked += acks
        if wait_s > 0:
            time.sleep(wait_s)

    def close(self) -> None:
        """DISCONNECT and close every socket."""
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.setblocking(True)
                sock.sendall(b"\xe0\x00")
                sock.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """What one publishing process sends: devices [first, last), ``rounds`` each."""

    worker: int
    host: str
    port: int
    username: str
    password: str
    first_device: int
    last_device: int
    rounds: int
    ts_base_ms: int
    clients: int
    rate_per_s: float  # 0 = as fast as possible
    client_prefix: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerResult:
    """What one publishing process did."""

    worker: int
    sent: int
    acked: int
    started: float
    finished: float
    acked_at: float


def _plan(spec: WorkerSpec) -> list[tuple[int, bytes, bytes]]:
    """(connection, PUBLISH head, payload) for every message, round by round."""
    topics = [
        TELEMETRY_TOPIC.format(device_id=device_id(d))
        for d in range(spec.first_device, spec.last_device)
    ]
    out = []
    for seq in range(spec.rounds):
        ts = spec.ts_base_ms + seq
        for offset, topic in enumerate(topics):
            index = spec.first_device + offset
            payload = telemetry_payload(index, seq, ts)
            head, body = RawConnections.packet_parts(topic, payload)
            out.append((offset % spec.clients, head, body))
    return out


def publish_worker(spec: WorkerSpec, go: Any, ready: Any, results: Any) -> None:
    """Process body: build the plan, connect, wait for ``go``, publish, wait for PUBACKs."""
    plan = _plan(spec)
    conns = RawConnections(
        host=spec.host,
        port=spec.port,
        username=spec.username,
        password=spec.password,
        client_ids=[f"{spec.client_prefix}-{spec.worker}-{c}" for c in range(spec.clients)],
    )
    conns.connect()
    ready.put(spec.worker)
    while not go.wait(0.05):
        conns.pump()
    started = time.monotonic()
    chunk = 50
    for start in range(0, len(plan), chunk):
        for index, head, payload in plan[start : start + chunk]:
            conns.publish(index, head, payload)
        conns.pump()
        if spec.rate_per_s > 0:
            ahead = started + (start + chunk) / spec.rate_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    finished = time.monotonic()
    if not conns.wait_acked(120.0):
        raise BenchError(f"worker {spec.worker}: {conns.pending} messages never acknowledged")
    acked_at = time.monotonic()
    results.put(
        WorkerResult(
            worker=spec.worker,
            sent=conns.sent,
            acked=conns.acked,
            started=started,
            finished=finished,
            acked_at=acked_at,
        )
    )
    conns.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetRun:
    """The outcome of one publishing run over all processes."""

    sent: int
    acked: int
    started: float
    finished: float
    acked_at: float

    @property
    def offered_mps(self) -> float:
        """Messages per second the publishers managed to send."""
        return self.sent / max(self.finished - self.started, 1e-9)


class Fleet:
    """Publishing processes for devices [0, devices), ready to be told to go."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        devices: int,
        rounds: int,
        ts_base_ms: int,
        processes: int,
        clients_per_process: int,
        rate_per_s: float,
        client_prefix: str = "bench-pub",
    ) -> None:
        ctx = mp.get_context("spawn")
        self._go = ctx.Event()
        self._ready: Any = ctx.Queue()
        self._results: Any = ctx.Queue()
        self._procs = []
        bounds = [devices * p // processes for p in range(processes + 1)]
        for worker in range(processes):
            spec = WorkerSpec(
                worker=worker,
                host=host,
                port=port,
                username=username,
                password=password,
                first_device=bounds[worker],
                last_device=bounds[worker + 1],
                rounds=rounds,
                ts_base_ms=ts_base_ms,
                clients=clients_per_process,
                rate_per_s=rate_per_s / processes,
                client_prefix=client_prefix,
            )
            proc = ctx.Process(
                target=publish_worker,
                args=(spec, self._go, self._ready, self._results),
                name=f"bench-publisher-{worker}",
                daemon=True,
            )
            self._procs.append(proc)

    def prepare(self, timeout_s: float = 120.0) -> None:
        """Start the processes; return once each has built its payloads and connected."""
        for proc in self._procs:
            proc.start()
        for _ in self._procs:
            try:
                self._ready.get(timeout=timeout_s)
            except queue.Empty:
                self.terminate()
                raise BenchError("a publishing process did not get ready") from None

    def go(self) -> float:
        """Start publishing everywhere at once; return the monotonic start time."""
        self._go.set()
        return time.monotonic()

    def wait(self, timeout_s: float) -> FleetRun:
        """Wait until every process has published and seen every PUBACK."""
        results: list[WorkerResult] = []
        deadline = time.monotonic() + timeout_s
        while len(results) < len(self._procs):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.terminate()
                raise BenchError("publishing processes did not finish in time")
            try:
                results.append(self._results.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                dead = [p for p in self._procs if p.exitcode not in (None, 0)]
                if dead:
                    self.terminate()
                    raise BenchError(f"publishing process {dead[0].name} failed") from None
        for proc in self._procs:
            proc.join(10)
        return FleetRun(
            sent=sum(r.sent for r in results),
            acked=sum(r.acked for r in results),
            started=min(r.started for r in results),
            finished=max(r.finished for r in results),
            acked_at=max(r.acked_at for r in results),
        )

    def terminate(self) -> None:
        """Stop every publishing process (only ours, by handle)."""
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
