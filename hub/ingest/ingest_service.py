"""The ingest runtime: MQTT -> decode -> write-ahead log (fsync) -> ack -> InfluxDB.

Threads, each owned and joined by ``IngestService.stop``:

* ``mqtt-intake`` (``hub.ingest.mqtt_intake``) reads the broker and runs ``_on_message``:
  decode, validate, enrich, queue the lines and the packet id for the next fsync group;
* ``ingest-flusher`` appends each group to the WAL, fsyncs once, then sends the PUBACKs:
  a message is acknowledged only when it is on disk;
* ``ingest-writer`` drains the WAL to InfluxDB in batches and deletes written segments;
* ``ingest-housekeeping`` refreshes the device list (1 s), detects silent devices, writes
  the ``hub`` measurement and warns when the WAL fills up;
* ``ingest-metrics`` serves ``/metrics``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from device_registry.directory import (
    DeviceDirectory,
    DirectoryError,
    FileDeviceDirectory,
    SnapshotDirectory,
)
from drivers.contract import SUBSCRIPTION_FILTERS as CONTRACT_TOPICS
from drivers.framework import DriverFamily, discover_families
from hub.influxql import InfluxQL, InfluxQueryError
from hub.ingest.area_totals import AreaTotals
from hub.ingest.busy_meter import BusyMeter
from hub.ingest.contract_decoder import (
    DEADLETTER_TOPIC,
    Accepted,
    ContractDecoder,
    Reason,
    Rejected,
)
from hub.ingest.deadletter_log import DeadletterLog
from hub.ingest.device_status import DeviceStatusTracker, StatusChange, parse_status_line
from hub.ingest.influx_writer import InfluxLineWriter, RefusedLine, WriterStoppedError
from hub.ingest.line_protocol import line_measurement, line_tag, series_batches
from hub.ingest.mqtt_intake import IntakeOptions, MqttIntake
from hub.ingest.self_metrics import HubMeasurement, IngestStats, MetricsServer
from hub.ingest.thread_supervisor import SupervisedThread
from hub.ingest.wal_consumers import INFLUX_CURSOR, WalConsumer, WalCursors, run_consumer
from hub.ingest.write_ahead_log import WalPosition, WriteAheadLog
from hub.settings import Settings

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600
RECEIVE_MAXIMUM = 1000
# Wait this long after the first message of a group before the fsync, to gather more.
GROUP_DELAY_S = 0.004
GROUP_MAX_MESSAGES = 2000
READ_CHUNK_BYTES = 256 * 1024  # WAL bytes the writer reads at a time
# Reconnect quickly: while the hub is away from a restarted broker, a shared
# subscription receives nothing. Doubling up to the cap; an auth failure waits longer,
# since retrying a wrong password quickly only fills the broker's log.
RECONNECT_MIN_DELAY_S = 0.15
RECONNECT_MAX_DELAY_S = 30.0
AUTH_FAILURE_MIN_DELAY_S = 5.0
HUB_MEASUREMENTS = (b"deadletter", b"hub", b"device_status", b"fleet_online", b"area_totals")
# While the WAL cannot be written (disk full), the flusher retries its group this often.
WAL_RETRY_S = 1.0
INTAKE_BUSY_WINDOW_S = 1.0
# A loop whose heartbeat is older than this is stuck (each wakes at least once a second,
# the writer at least once per retry or ping; an fsync should never take this long).
STUCK_AFTER_S = 30.0


class WalBatch(NamedTuple):
    """What the writer took from the WAL for one InfluxDB request."""

    chunks: list[bytes]  # WAL records as they are: lines joined by newlines
    lines: int  # lines in them
    end: WalPosition  # the WAL position after them
    behind: bool  # filled without waiting: the WAL is ahead of InfluxDB


class IngestError(Exception):
    """The ingest service cannot start."""


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def subscription_topics(shared_group: str | None) -> list[str]:
    """The contract topics, behind ``$share/<group>/`` when a group is set."""
    prefix = f"$share/{shared_group}/" if shared_group else ""
    return [prefix + topic for topic in CONTRACT_TOPICS]


def encode_lines(lines: Sequence[str]) -> bytes:
    """Lines as one UTF-8 WAL record; never raises on their content."""
    text = "\n".join(lines)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Only a hub bug gets here (the decoder refuses lone surrogates): keep the group,
        # the odd character visibly escaped, rather than lose it or stop the flusher.
        log.error("a WAL record held text UTF-8 cannot encode; it is stored escaped")
        return text.encode("utf-8", "backslashreplace")


def area_families() -> list[DriverFamily]:
    """The driver families, for ``area_totals``; none when they cannot be read."""
    try:
        return list(discover_families().values())
    except Exception as err:  # a driver that fails to import must not stop the hub
        log.error("area_totals: driver families could not be read (%s); none totalled", err)
        return []


def wal_directory(settings: Settings) -> Path:
    """``ingest.wal_dir`` or ``<state_dir>/wal/<client_id>``."""
    ingest = settings.ingest
    return ingest.wal_dir or settings.state_dir / "wal" / ingest.client_id


class IngestService:
    """One hub ingest worker; ``start`` then ``stop`` (or ``run_until_signal``)."""

    def __init__(
        self,
        settings: Settings,
        mqtt_password: str,
        *,
        directory: DeviceDirectory | None = None,
        segment_bytes: int | None = None,
    ) -> None:
        self.settings = settings
        cfg = settings.ingest
        self.client_id = cfg.client_id
        if directory is None:
            directory = (
                FileDeviceDirectory(cfg.devices_file) if cfg.devices_file else SnapshotDirectory()
            )
        self.directory = directory
        self.decoder = ContractDecoder(
            directory,
            max_age_s=cfg.max_age_s,
            max_clock_skew_s=cfg.max_clock_skew_s,
            unknown_metrics=cfg.unknown_metrics,
        )
        self.status = DeviceStatusTracker(offline_factor=cfg.offline_factor)
        self.area_totals = AreaTotals(area_families(), offline_factor=cfg.offline_factor)
        self.stats = IngestStats()
        self.hub_measurement = HubMeasurement(cfg.client_id)
        self.deadletter_log = DeadletterLog()
        self.wal_dir = wal_directory(settings)
        self._segment_bytes = segment_bytes
        self._password = mqtt_password
        self.wal: WriteAheadLog | None = None
        self.metrics_server: MetricsServer | None = None
        self._stop_intake = threading.Event()
        self._stop_flusher = threading.Event()
        self._stop_writer = threading.Event()
        self._stop_house = threading.Event()
        self._stop_consumers = threading.Event()
        self._ready = threading.Event()
        # Readers of the WAL besides the InfluxDB writer (the alert engine): each has
        # its own position in self.cursors and its own thread (wal_consumers.py).
        self._consumers: list[WalConsumer] = []
        self.cursors: WalCursors | None = None
        # The intake takes the bare lock once per message (a C-level context manager);
        # the flusher waits on a condition over the same lock.
        self._group_lock = threading.Lock()
        self._group_ready = threading.Condition(self._group_lock)
        self._group_lines: list[str] = []
        self._group_acks: list[int] = []
        self._generation = 0
        self._threads: list[SupervisedThread] = []
        self._intake: MqttIntake | None = None
        self._committed: WalPosition | None = None
        self._wal_warned = False
        self._writer_failing = False
        self._catching_up = False  # the writer drains a backlog: consumers yield
        # The intake's handler busy most of the time: the hub drains a broker backlog.
        # One-second windows: over quarter seconds a steady 10,000 msg/s on a busy machine
        # crossed INTAKE_BUSY_SHARE often enough to hold the alert engine back for minutes.
        self.intake_busy = BusyMeter(window_s=INTAKE_BUSY_WINDOW_S)
        self._deadletter_lock = threading.Lock()
        self._deadletter_ms = 0
        self._dir_error: str | None = None
        self._recovered_end: WalPosition | None = None
        self._started = False
        # Cleared while the WAL refuses writes (disk full): intake pauses, /readyz says so.
        self._wal_ok = threading.Event()
        self._wal_ok.set()
        self._wal_error = ""
        self._wal_blocked_since = 0.0
        self._handler_errors = 0
        self._last_handler_log = 0.0

    # -- life cycle --------------------------------------------------------------
    def add_consumer(self, consumer: WalConsumer) -> None:
        """Hand every reading and status change to ``consumer`` too; call before ``start``."""
        if self._started:
            raise IngestError(f"consumer {consumer.name} added after the hub started")
        self._consumers.append(consumer)

    def start(self, ready_timeout_s: float = 30.0) -> None:
        """Open the WAL, start the threads, connect and subscribe; log 'ingest ready'."""
        cfg = self.settings.ingest
        for noisy in ("httpx", "httpcore"):
            # httpx logs every request at INFO: one line per batch written to InfluxDB.
            logging.getLogger(noisy).setLevel(logging.WARNING)
        kwargs = {"segment_bytes": self._segment_bytes} if self._segment_bytes else {}
        self.wal = WriteAheadLog(self.wal_dir, max_bytes=cfg.wal_max_bytes, **kwargs)
        if self.wal.recovered_records:
            log.warning(
                "replaying %d WAL record(s) from %s", self.wal.recovered_records, self.wal_dir
            )
        # Records written before this start: device_status points among them are newer
        # than what InfluxDB holds, so the writer hands them to the status tracker.
        self._recovered_end = self.wal.durable if self.wal.recovered_records else None
        if cfg.restore_status:
            self._restore_status()
        wal = self.wal
        # Every position is registered before the writer can release a segment.
        self.cursors = cursors = WalCursors(wal, hold_fill=cfg.wal_warn_fill)
        cursors.register(INFLUX_CURSOR, wal.first_position(), essential=True)
        for consumer in self._consumers:
            start = consumer.start_position(wal.first_position(), wal.durable)
            cursors.register(consumer.name, start)
        self._started = True
        self._spawn("ingest-flusher", self._flusher_loop, self._stop_flusher)
        self._spawn("ingest-writer", self._writer_loop, self._stop_writer)
        for consumer in self._consumers:
            self._spawn_consumer(consumer)
        self._spawn("ingest-housekeeping", self._housekeeping_loop, self._stop_house)
        if cfg.metrics_port:
            self.metrics_server = MetricsServer(
                cfg.metrics_host,
                cfg.metrics_port,
                self.render,
                probes={"/healthz": self.liveness, "/readyz": self.readiness},
            )
            self.metrics_server.start()
        mqtt_cfg = self.settings.mqtt
        # The hub's own identity and, when mqtt.tls is set, the TLS listener.
        from hub.local_stack import hub_login, mqtt_endpoint

        host, port, tls = mqtt_endpoint(self.settings)
        username, password = hub_login(self.settings, self._password)
        self._intake = MqttIntake(
            IntakeOptions(
                host=host,
                port=port,
                tls=tls,
                client_id=self.client_id,
                username=username,
                password=password,
                topics=subscription_topics(cfg.shared_group),
                protocol=cfg.mqtt_protocol,
                keepalive_s=mqtt_cfg.keepalive_s,
                # 3.1.1 has neither: the broker's persistent_client_expiration bounds the
                # session, its max_inflight_messages plays the part of Receive Maximum.
                session_expiry_s=SESSION_EXPIRY_S,
                receive_maximum=RECEIVE_MAXIMUM,
                connect_timeout_s=mqtt_cfg.connect_timeout_s,
                reconnect_min_s=RECONNECT_MIN_DELAY_S,
                reconnect_max_s=RECONNECT_MAX_DELAY_S,
                auth_failure_min_s=AUTH_FAILURE_MIN_DELAY_S,
            ),
            self._on_message,
            on_connect=self._on_connect,
            on_subscribed=self._ready.set,
            on_refused=self._on_refused,
            # A shared subscription that delivers nothing ends the wait for readiness.
            on_probe_failed=lambda _why: self._ready.set(),
        )
        self._intake.start()
        if not self._ready.wait(ready_timeout_s):
            self.stop()
            raise IngestError(
                f"not subscribed to {mqtt_cfg.host}:{mqtt_cfg.port} within {ready_timeout_s} s"
            )
        if self._intake.probe_failure:
            # Running on would ingest nothing, silently: refuse to start, saying why.
            probe_failure = self._intake.probe_failure
            self.stop()
            raise IngestError(probe_failure)
        port = self.metrics_server.port if self.metrics_server else 0
        print(
            f"ingest ready: client_id={self.client_id} wal={self.wal_dir} metrics_port={port}",
            file=sys.stderr,
            flush=True,
        )

    def _spawn_consumer(self, consumer: WalConsumer) -> None:
        name = f"ingest-consumer-{consumer.name}"
        assert self.wal is not None
        assert self.cursors is not None
        wal, cursors = self.wal, self.cursors

        def loop() -> None:
            run_consumer(
                wal,
                cursors,
                consumer,
                self._stop_consumers,
                lambda: self._beat(name),
                # Behind InfluxDB's writer draining a backlog, consumers take a back seat.
                pressure=lambda: self._catching_up,
                ingest_lag=lambda: wal.bytes_after(cursors.position(INFLUX_CURSOR)),
                intake_busy=self.intake_busy.share,
            )

        self._spawn(name, loop, self._stop_consumers)

    def _consumers_behind(self) -> bool:
        cursors, wal = self.cursors, self.wal
        if cursors is None or wal is None or not self._consumers:
            return False
        durable = wal.durable
        alive = {t.name for t in self._threads if t.is_alive()}
        return any(
            cursors.position(c.name) < durable
            for c in self._consumers
            if f"ingest-consumer-{c.name}" in alive
        )

    def _spawn(self, name: str, target: Callable[[], None], stop: threading.Event) -> None:
        thread = SupervisedThread(name, target, stop=stop)
        self._threads.append(thread)
        thread.start()

    def _beat(self, name: str) -> None:
        for thread in self._threads:
            if thread.name == name:
                thread.beat()

    def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Stop intake, fsync and ack what came in, drain to InfluxDB briefly, close the WAL."""
        if not self._started:
            return
        self._started = False
        self._stop_intake.set()
        self._stop_house.set()
        self._stop_flusher.set()
        with self._group_ready:
            self._group_ready.notify_all()
        self._join("ingest-flusher")
        if self._intake is not None:
            self._intake.stop()
        self._join("ingest-housekeeping")
        self._flush_group()  # lines the housekeeping thread queued at the very end
        deadline = time.monotonic() + drain_timeout_s
        assert self.wal is not None
        while time.monotonic() < deadline and self._committed != self.wal.durable:
            if not self._writer_alive() or self._writer_failing:
                break  # InfluxDB is down: the WAL keeps the rest for the next start
            time.sleep(0.02)
        while time.monotonic() < deadline and self._consumers_behind():
            time.sleep(0.02)  # what a consumer has not read stays for the next start
        self._stop_writer.set()
        self._join("ingest-writer")
        self._stop_consumers.set()
        for consumer in self._consumers:
            self._join(f"ingest-consumer-{consumer.name}")
        self._flush_group()  # dead-letters of points InfluxDB refused in the last batch
        self.deadletter_log.summarise(force=True)
        if self.metrics_server is not None:
            self.metrics_server.stop()
        # All of it in InfluxDB and with every consumer: nothing to replay at the next
        # start (and no warning).
        # (The InfluxDB writer's position is one of the cursors.)
        self.wal.close(written=self.cursors.lowest() if self.cursors else self._committed)
        log.info("ingest stopped")

    def _writer_alive(self) -> bool:
        return any(t.name == "ingest-writer" and t.is_alive() for t in self._threads)

    def _join(self, name: str) -> None:
        for thread in self._threads:
            if thread.name == name:
                thread.join(timeout=30)
                if thread.is_alive():
                    log.error("thread %s did not stop", name)

    def run_until_signal(self) -> None:
        """Start, run until SIGTERM or SIGINT, then stop cleanly."""
        stop = threading.Event()

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- MQTT ----------------------------------------------------------------------
    def _on_connect(self, generation: int, _session_present: bool) -> None:
        with self._group_lock:
            # Acks of the previous connection must not be sent on this one: the broker
            # redelivers those messages and their ids may now mean something else.
            self._generation = generation
            self._group_acks = []
        self.stats.mqtt_connects += 1

    def _on_message(self, topic: str, payload: bytes, qos: int, packet_id: int) -> None:
        if self._stop_intake.is_set():
            return  # not acked: the broker redelivers it to the next session
        started = time.perf_counter()
        try:
            self._handle(topic, payload, qos, packet_id)
        except Exception as err:
            # A hub bug on one message: dead-letter it (with its payload) and ack it, so
            # the broker does not hold it in flight, or redeliver it into the same bug.
            self._handler_failed(topic, payload, qos, packet_id, err)
        finally:
            self.intake_busy.add(time.perf_counter() - started)

    def _on_refused(self, topic: str, reason: str, detail: str, qos: int, packet_id: int) -> None:
        """A PUBLISH the intake refused at the packet level: dead-letter it, then ack it."""
        if self._stop_intake.is_set():
            return  # not acked: the broker redelivers it to the next session
        # Not kept: too large, or refused before it was read.
        rejected = self.decoder.rejection(Reason(reason), detail, topic, b"", now_ms())
        self._queue_refusal(rejected, qos, packet_id)

    def _queue_refusal(self, rejected: Rejected, qos: int, packet_id: int) -> None:
        """Queue a refused message's dead-letter line and its ack in one fsync group."""
        line = self._deadletter(rejected)
        with self._group_lock:
            # As for any message: the refusal is in the WAL before the broker forgets it.
            wake = not self._group_lines and not self._group_acks
            self._group_lines.append(line)
            if qos:
                self._group_acks.append(packet_id)
            if wake:
                self._group_ready.notify()

    def _handler_failed(
        self, topic: str, payload: bytes, qos: int, packet_id: int, err: Exception
    ) -> None:
        self._handler_errors += 1
        now = time.monotonic()
        if self._handler_errors == 1 or now - self._last_handler_log >= 60:
            log.error(
                "message handler failed on %s (%d so far); dead-lettered as hub_error",
                topic,
                self._handler_errors,
                exc_info=err,
            )
            self._last_handler_log = now
        detail = f"hub error {type(err).__name__}: {err}"[:256]
        rejected = self.decoder.rejection(Reason.HUB_ERROR, detail, topic, payload, now_ms())
        self._queue_refusal(rejected, qos, packet_id)

    def _handle(self, topic: str, payload: bytes, qos: int, packet_id: int) -> None:
        received = time.time_ns() // 1_000_000
        stats = self.stats
        stats.messages_in += 1
        result = self.decoder.decode(topic, payload, received)
        lines: tuple[str, ...] | list[str]
        if type(result) is Rejected:
            lines = (self._deadletter(result),)
        else:
            assert type(result) is Accepted
            stats.messages_accepted += 1
            lines = result.lines
            if result.kind != "status":
                # Readings, inline (once per message): seq gaps, and the device is online.
                if result.seq is not None:
                    stats.record_seq(result.device.device_id, result.seq)
                change = self.status.seen(result.device, received)
                if result.metrics:
                    self.area_totals.record(result.device, result.metrics, received)
            else:
                change = self._reported(result, received)
            if change is not None:
                stats.status_changes += 1
                lines = [*lines, change.line()]
        wal = self.wal
        if wal is not None and wal.total_bytes >= wal.max_bytes:
            self._wait_for_wal_room()
        if not self._wal_ok.is_set():
            self._wait_for_wal_writable()
        with self._group_lock:
            # Only the first message of a group wakes the flusher (it gathers the rest).
            wake = not self._group_lines and not self._group_acks
            self._group_lines.extend(lines)
            if qos:
                self._group_acks.append(packet_id)
            if wake:
                self._group_ready.notify()

    def _reported(self, result: Accepted, received: int) -> StatusChange | None:
        """A status message: the device's own word (or its Last Will)."""
        if result.online is None:
            return None  # a retained status being cleared
        return self.status.reported(
            result.device, result.online, result.status_reason, result.time_ms, received
        )

    def _deadletter(self, rejected: Rejected) -> str:
        """Count, log and publish a rejection; return its ``deadletter`` line."""
        self.stats.deadletters[rejected.reason.value] += 1
        self.deadletter_log.rejected(rejected)
        intake = self._intake
        if intake is not None:
            # A live feed at QoS 0: the durable record is the deadletter point in the WAL.
            intake.publish(DEADLETTER_TOPIC, rejected.deadletter_message())
        with self._deadletter_lock:
            # One millisecond per rejection of this hub, so that two rejections of the
            # same device and reason never share a point (same series + time overwrites).
            self._deadletter_ms = max(rejected.time_ms, self._deadletter_ms + 1)
            time_ms = self._deadletter_ms
        return rejected.deadletter_line(hub=self.client_id, time_ms=time_ms)

    def _wait_for_wal_room(self) -> None:
        wal = self.wal
        if wal is None or wal.total_bytes < wal.max_bytes:
            return
        # Blocking the network thread stops reading from the broker, which keeps
        # queueing for this persistent session: nothing is lost while the disk is full.
        self.stats.wal_full_waits += 1
        log.error("WAL is full (%d bytes); pausing intake until InfluxDB catches up", wal.max_bytes)
        started = time.monotonic()
        while not self._stop_intake.is_set() and not wal.wait_for_room(1.0):
            pass
        self.stats.backpressure_s += time.monotonic() - started

    def _wait_for_wal_writable(self) -> None:
        # As for a full WAL: blocking the network thread stops reading from the broker,
        # which keeps queueing for this session. The flusher retries its group meanwhile.
        started = time.monotonic()
        while not self._wal_ok.wait(0.5) and not self._stop_intake.is_set():
            pass
        self.stats.backpressure_s += time.monotonic() - started

    def queue_lines(self, lines: list[str]) -> None:
        """Write points of a consumer's own (the ``alert`` measurement) through the WAL."""
        self._queue(lines)

    def _queue(self, lines: list[str]) -> None:
        """Queue lines that acknowledge no message (status, dead-letters, hub points)."""
        with self._group_lock:
            self._group_lines.extend(lines)
            self._group_ready.notify()

    # -- fsync groups ----------------------------------------------------------------
    def _flusher_loop(self) -> None:
        while True:
            self._beat("ingest-flusher")
            with self._group_ready:
                self._group_ready.wait_for(
                    lambda: (
                        bool(self._group_lines or self._group_acks) or self._stop_flusher.is_set()
                    ),
                    timeout=0.5,
                )
                pending = len(self._group_acks)
            if pending and pending < GROUP_MAX_MESSAGES and not self._stop_flusher.is_set():
                time.sleep(GROUP_DELAY_S)
            self._flush_group()
            if self._stop_flusher.is_set():
                self._flush_group()
                return

    def _flush_group(self) -> None:
        with self._group_lock:
            lines, acks = self._group_lines, self._group_acks
            self._group_lines, self._group_acks = [], []
            generation = self._generation
        if not lines and not acks:
            return
        if lines:
            if not self._append_durably(encode_lines(lines)):
                log.error(
                    "stopping while the WAL cannot be written: %d line(s) not kept; their "
                    "%d message(s) are not acknowledged, so the broker redelivers them",
                    len(lines),
                    len(acks),
                )
                return
            self.stats.lines_appended += len(lines)
        intake = self._intake
        if intake is None or not acks:
            return
        # Dropped when the connection changed meanwhile: the broker redelivers these.
        if intake.ack(generation, acks):
            self.stats.messages_acked += len(acks)

    def _append_durably(self, body: bytes) -> bool:
        """Append and fsync ``body``, retrying while the disk refuses; False if stopping."""
        assert self.wal is not None
        while True:
            try:
                self.wal.append(body)
                self.wal.sync()
            except OSError as err:
                if self._wal_ok.is_set():
                    # Logged once: nothing is acked meanwhile, so the broker keeps the
                    # messages queued for this persistent session and nothing is lost.
                    self._wal_ok.clear()
                    self._wal_error = f"{type(err).__name__}: {err}"
                    self.stats.wal_write_errors += 1
                    self._wal_blocked_since = time.monotonic()
                    log.error(
                        "the WAL cannot be written (%s); intake paused and nothing is "
                        "acknowledged until it can; retrying every %.0f s",
                        self._wal_error,
                        WAL_RETRY_S,
                    )
                if self._stop_flusher.is_set():
                    return False
                self._beat("ingest-flusher")
                self._stop_flusher.wait(WAL_RETRY_S)
                continue
            if not self._wal_ok.is_set():
                log.warning(
                    "the WAL is writable again after %.0f s; intake resumes",
                    time.monotonic() - self._wal_blocked_since,
                )
                self._wal_error = ""
                self._wal_ok.set()
            return True

    # -- InfluxDB writer -------------------------------------------------------------
    def _writer_loop(self) -> None:
        assert self.wal is not None
        wal = self.wal
        cfg = self.settings.ingest
        writer = InfluxLineWriter(
            self.settings.influx, stop=self._stop_writer, on_retry=self._count_retry
        )
        position = wal.first_position()
        self._committed = position
        catching_up = False
        # Behind, the writer takes a window of many batches and posts it sorted by series.
        window = cfg.catchup_sort_lines if cfg.catchup_sort_lines > cfg.batch_lines else 0
        try:
            while not self._stop_writer.is_set():
                self._beat("ingest-writer")
                if not wal.wait_for_data(position, timeout_s=0.2):
                    continue
                limit = window if catching_up and window else cfg.batch_lines
                batch = self._collect(
                    position, limit, cfg.batch_interval_s, catching_up=catching_up
                )
                # A batch filled without waiting means the WAL is ahead of InfluxDB: the
                # lines left over have waited already, so the next one goes when read.
                catching_up = self._catching_up = batch.behind
                if batch.chunks:
                    self._post(writer, batch, sort=bool(window))
                    if self._recovered_end is not None and position < self._recovered_end:
                        self._restore_from_records(batch.chunks)
                # Only now, with every line of the batch or window in InfluxDB (or in
                # the dead-letter): a crash before this replays all of it (idempotent).
                position = batch.end
                self._committed = batch.end
                # Segments go once every consumer (not only InfluxDB) is past them.
                if self.cursors is not None:
                    self.cursors.commit(INFLUX_CURSOR, batch.end)
                else:
                    wal.release(batch.end)  # a writer run on its own (tests)
        except WriterStoppedError:
            log.info("writer stopped with data left in the WAL; it is replayed at next start")
        # Anything else goes to the supervisor, which logs it and restarts the loop from
        # the first position not yet written (rewriting a batch is idempotent).
        finally:
            writer.close()

    def _post(self, writer: InfluxLineWriter, batch: WalBatch, *, sort: bool) -> None:
        """Write one batch, or a catch-up window as series-sorted batches, to InfluxDB."""
        batch_lines = self.settings.ingest.batch_lines
        requests: Iterable[Sequence[bytes]] = [batch.chunks]
        if sort and batch.lines >= 2 * batch_lines:
            # Many batches were waiting: InfluxDB takes them faster grouped by series.
            requests = ([body] for body in series_batches(batch.chunks, batch_lines))
        for index, chunks in enumerate(requests):
            if index and self._stop_writer.is_set():
                # The window is not committed: the next start posts all of it again.
                raise WriterStoppedError("stopping in the middle of a catch-up window")
            started = time.monotonic()
            outcome = writer.write(chunks)
            self._writer_failing = False
            self.stats.record_batch(outcome.lines, time.monotonic() - started)
            if outcome.refused:
                self._refused(outcome.refused)

    def _collect(
        self, start: WalPosition, max_lines: int, interval_s: float, *, catching_up: bool = False
    ) -> WalBatch:
        """WAL records holding about ``max_lines`` lines from ``start``, waiting at most
        ``interval_s`` for them; when ``catching_up``, only as long as the WAL has more.
        """
        assert self.wal is not None
        chunks: list[bytes] = []
        count = 0
        position = start
        deadline = time.monotonic() + interval_s
        waited = False
        while True:
            records, position = self.wal.read(position, READ_CHUNK_BYTES)
            for record in records:
                # Records stay whole (lines joined by newlines): the writer posts them so.
                chunks.append(record)
                count += record.count(b"\n") + 1
            remaining = deadline - time.monotonic()
            if count >= max_lines or remaining <= 0 or self._stop_writer.is_set():
                return WalBatch(chunks, count, position, count >= max_lines and not waited)
            if not records and (self._stop_intake.is_set() or (catching_up and chunks)):
                # Draining at stop, or behind: post now; still behind if more than a
                # batch was waiting.
                behind = catching_up and count >= self.settings.ingest.batch_lines
                return WalBatch(chunks, count, position, behind)
            if not records:
                waited = True
                self.wal.wait_for_data(position, timeout_s=min(remaining, 0.25))

    # -- device status across restarts -----------------------------------------------
    def _restore_status(self) -> None:
        """Seed the status tracker with each device's last ``device_status`` point."""
        ix = self.settings.influx
        if ix.api != "v1":
            log.info("device status is not restored with the v2 write API (no InfluxQL)")
            return
        password = ix.password.get_secret_value() if ix.password else None
        # The policy name is checked by the settings (letters, digits, - and _ only).
        rp = ix.retention_policy
        statement = (
            f'SELECT last("online") AS "online" FROM "{rp}"."device_status" GROUP BY "device_id"'  # noqa: S608
        )
        try:
            with InfluxQL(
                ix.url, username=ix.username, password=password, timeout_s=min(ix.timeout_s, 5.0)
            ) as client:
                rows = client.rows(statement, database=ix.database)
        except InfluxQueryError as err:
            log.warning("device status not restored (%s): devices start as unknown", err)
            return
        now = now_ms()
        restored = 0
        for row in rows:
            record = self.directory.get(str(row.get("device_id", "")))
            online, time_ms = row.get("online"), row.get("time")
            if record is None or not isinstance(time_ms, int) or online not in (0, 1):
                continue
            restored += self.status.restore(record, online == 1, time_ms, now)
        log.info("restored the last status of %d device(s) from InfluxDB", restored)

    def _restore_from_records(self, chunks: list[bytes]) -> None:
        """Hand device_status points replayed from the WAL to the tracker (newer wins)."""
        now = now_ms()
        for chunk in chunks:
            if b"device_status," not in chunk:
                continue
            for line in chunk.split(b"\n"):
                state = parse_status_line(line)
                record = self.directory.get(state[0]) if state else None
                if state is not None and record is not None:
                    self.status.restore(record, state[1], state[2], now)

    def _count_retry(self, _problem: str) -> None:
        self._beat("ingest-writer")  # waiting for InfluxDB is progress: the WAL buffers
        self.stats.write_retries += 1
        self._writer_failing = True

    def _refused(self, refused: list[RefusedLine]) -> None:
        self.stats.refused_lines += len(refused)
        lines: list[str] = []
        for item in refused:
            measurement = line_measurement(item.line)
            log.warning("InfluxDB refused a %s point: %s", measurement, item.error)
            if measurement.encode() in HUB_MEASUREMENTS:
                continue  # never dead-letter the hub's own points: that could loop
            rejected = Rejected(
                Reason.REFUSED_BY_INFLUX,
                f"{measurement}: {item.error}",
                "",
                line_tag(item.line, "device_id"),
                item.line,
                now_ms(),
            )
            lines.append(self._deadletter(rejected))
        if lines:
            self._queue(lines)

    # -- housekeeping ----------------------------------------------------------------
    def _housekeeping_loop(self) -> None:
        interval = self.settings.ingest.self_metrics_interval_s
        fleet_interval = self.settings.ingest.fleet_online_interval_s
        next_metrics = time.monotonic() + interval
        next_fleet = time.monotonic() + fleet_interval
        while not self._stop_house.wait(1.0):
            self._beat("ingest-housekeeping")
            # Each duty on its own: a failing one must not stop the others (a bad number
            # in the self-metrics once stopped silence detection and device refreshes).
            self._duty("device list refresh", self._refresh_directory)
            self._duty("silence check", self._check_silence)
            self._duty("WAL gauges", self._update_wal_gauges)
            self._duty("dead-letter summary", self.deadletter_log.summarise)
            if time.monotonic() >= next_metrics:
                next_metrics += interval
                self._duty("hub measurement", self._queue_hub_points)
            if time.monotonic() >= next_fleet:
                next_fleet += fleet_interval
                self._duty("fleet_online", self._queue_fleet_points)
                self._duty("area_totals", self._queue_area_points)

    def _duty(self, name: str, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as err:
            self.stats.housekeeping_errors[name] += 1
            if self.stats.housekeeping_errors[name] == 1:
                log.error("housekeeping: %s failed; it is retried every second", name, exc_info=err)

    def _check_silence(self) -> None:
        changes = self.status.check_silence(now_ms())
        if changes:
            self.stats.status_changes += len(changes)
            self._queue([change.line() for change in changes])

    def _queue_hub_points(self) -> None:
        self._queue(self.hub_measurement.lines(self.stats, now_ms()))

    def _queue_fleet_points(self) -> None:
        # The registry's current records: a retired device leaves the counts within a
        # minute, though it keeps its last device_status point.
        counts = self.status.fleet_counts(self.directory.get)
        self._queue(self.hub_measurement.fleet_lines(counts, now_ms()))

    def _queue_area_points(self) -> None:
        # On fleet_online's schedule, with the registry's current records, likewise.
        self._queue(self.area_totals.lines(self.client_id, now_ms(), self.directory.get))

    def _refresh_directory(self) -> None:
        try:
            self.directory.refresh()
        except DirectoryError as err:
            if self._dir_error != str(err):
                log.error("device list not reloaded, keeping the last good one: %s", err)
                self._dir_error = str(err)
        else:
            if self._dir_error is not None:
                log.warning("device list readable again")
                self._dir_error = None

    def _update_wal_gauges(self) -> None:
        wal = self.wal
        if wal is None:
            return
        self.stats.intake_busy_s = self.intake_busy.busy_s
        total = wal.total_bytes
        self.stats.wal_bytes = total
        self.stats.wal_corrupt_records = wal.corrupt_records
        self.stats.wal_corrupt_bytes = wal.corrupt_bytes
        self.stats.wal_corrupt_tail_bytes = wal.corrupt_tail_bytes
        self.stats.wal_segments = wal.segment_count
        committed = self._committed
        self.stats.wal_depth_bytes = wal.bytes_after(committed) if committed else total
        fill = total / wal.max_bytes
        warn = self.settings.ingest.wal_warn_fill
        if fill >= warn and not self._wal_warned:
            log.warning("WAL is %.0f%% full (%d bytes); InfluxDB is behind", fill * 100, total)
            self._wal_warned = True
        elif fill < warn * 0.9 and self._wal_warned:
            log.warning("WAL fill back to %.0f%%", fill * 100)
            self._wal_warned = False

    # -- observation -------------------------------------------------------------------
    def render(self) -> str:
        """The /metrics page."""
        self._update_wal_gauges()
        self.stats.wal_writable = self._wal_ok.is_set()
        if self._intake is not None:
            self.stats.mqtt_connect_failures = self._intake.stats.connect_failures
            self.stats.mqtt_connection_losses = self._intake.stats.connection_losses
        self.stats.thread_restarts = {t.name: t.health.restarts for t in self._threads}
        if self.cursors is not None:
            self.stats.consumers = {
                name: figures
                for name, figures in self.cursors.figures().items()
                if name != INFLUX_CURSOR  # the writer's lag is wal_bytes already
            }
        return self.stats.prometheus(self.client_id)

    def _thread_checks(self) -> tuple[bool, dict[str, object]]:
        now = time.monotonic()
        passing = True
        threads: dict[str, object] = {}
        for thread in self._threads:
            health = thread.health
            stuck_s = now - health.beat
            if not thread.is_alive():
                state = "finished" if health.finished else "dead"
            elif health.backing_off:
                state = "restarting"
            elif stuck_s > STUCK_AFTER_S:
                state = "stuck"
            else:
                state = "running"
            passing = passing and state in ("running", "restarting")
            threads[thread.name] = {
                "state": state,
                "restarts": health.restarts,
                "last_error": health.last_error,
                "seconds_since_progress": round(stuck_s, 1),
            }
        return passing and self._started, {"threads": threads}

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """``/healthz``: every loop runs (or is restarting after a failure), none is stuck."""
        return self._thread_checks()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """``/readyz``: alive, connected to the broker, WAL writable, writer not crashed."""
        alive, details = self._thread_checks()
        intake = self._intake
        broker = intake is not None and intake.connected
        writer = next((t for t in self._threads if t.name == "ingest-writer"), None)
        writer_ok = writer is not None and writer.is_alive() and not writer.health.backing_off
        checks = {
            "threads": alive,
            "broker_connected": broker,
            "wal_writable": self._wal_ok.is_set(),
            # InfluxDB down is fine: the WAL buffers; a writer loop that crashed is not.
            "writer": writer_ok,
        }
        details["checks"] = checks
        details["writer_buffering"] = self._writer_failing
        if self._wal_error:
            details["wal_error"] = self._wal_error
        return all(checks.values()), details

    @property
    def metrics_port(self) -> int:
        """Port /metrics listens on (0 when disabled)."""
        return self.metrics_server.port if self.metrics_server else 0

    @property
    def committed(self) -> WalPosition | None:
        """How far InfluxDB holds the WAL."""
        return self._committed
