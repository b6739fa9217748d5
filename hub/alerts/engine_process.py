"""The alert engine in a process of its own, fed by the hub's WAL seam over a pipe.

Why a process: evaluation and ingest share nothing but, in one interpreter, the GIL.
With 1,000 rules in the hub's process ingest drained a backlog 22 % slower, and above
5,000 msg/s the engine fell behind on two cores. In a child process the rules use the
other core and ingest keeps its own.

Parent side, ``EngineProcess``: a WAL consumer (``wal_consumers.RecordConsumer``) that
hands each batch of raw WAL records to the child and returns when the child has saved its
effect (rule state and WAL position in one SQLite transaction, as in the hub's process),
so the hub's cursor moves only after that. The child answers with the ``alert`` points
to write through the WAL.

Child side, ``child_main``: the same engine, store, router, notifier, Alertmanager output
and HTTP server as ``alert_runtime.build_runtime`` makes in-process, over its own copy of
the device list (the same file, registry database or registry feed as the hub's),
refreshed every second like the hub's.

Failures: a child that dies (or stops answering) is logged and the consumer's thread
fails; its supervisor restarts it, which starts a new child and resumes at the position
the child's store holds, so nothing is lost or evaluated twice. A hub killed outright
closes the pipe and the child exits at once, as the engine would inside the hub; a lock
on the alert database keeps a new hub's engine from running beside a dying one.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.directory import DeviceDirectory, FileDeviceDirectory
from hub.ingest.wal_consumers import StreamItem, decode_records
from hub.ingest.write_ahead_log import WalPosition

if TYPE_CHECKING:
    from hub.alerts.alert_runtime import AlertRuntime
    from hub.settings import Settings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # imports, the rule files, the device list
# A batch is a read of 64 KiB: seconds would mean a wedged child, not a slow one.
REPLY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
LOCK_TIMEOUT_S = 30.0
REFRESH_S = 1.0
TICK_AFTER_BATCH_S = 0.2  # the consumer's tick interval (alert_consumer.TICK_INTERVAL_MS)
Sink = Callable[[list[str]], None]


class AlertEngineError(RuntimeError):
    """The engine's process could not start, failed a batch, or died."""


@dataclass(frozen=True, slots=True)
class DirectorySource:
    """Where the hub's device list comes from, so that the child opens the same one."""

    kind: Literal["file", "database", "feed"]
    path: Path | None = None
    url: str = ""

    @classmethod
    def of(cls, directory: DeviceDirectory) -> DirectorySource | None:
        """The source of ``directory``; None for a list only this process holds."""
        if isinstance(directory, FileDeviceDirectory):
            return cls("file", path=directory.path)
        if isinstance(directory, DatabaseDeviceDirectory):
            url = directory.database.engine.url.render_as_string(hide_password=False)
            return cls("database", url=url)
        from hub.agent.registry_feed import RegistryFeedDirectory

        if isinstance(directory, RegistryFeedDirectory):
            return cls("feed")
        return None

    def open(self, settings: Settings) -> DeviceDirectory:
        """A directory of this source (in the child)."""
        if self.kind == "file":
            assert self.path is not None
            return FileDeviceDirectory(self.path)
        if self.kind == "database":
            from device_registry.database import open_database

            return DatabaseDeviceDirectory(open_database(self.url))
        from hub.agent.registry_feed import RegistryFeedDirectory, hub_feed_config

        return RegistryFeedDirectory(hub_feed_config(settings))


class EngineProcess:
    """The hub's side of the engine's process: a consumer of raw WAL records."""

    name = "alerts"

    def __init__(self, settings: Settings, source: DirectorySource, sink: Sink) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.starts = 0  # processes started: more than one means the engine died
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._wanted: frozenset[str] | None = None
        self._last_batch = 0.0

    @property
    def pid(self) -> int | None:
        """The child's process id, while it runs."""
        return self._process.pid if self._process is not None else None

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> None:
        """Start the child and wait until its engine is ready; AlertEngineError if not."""
        with self._lock:
            self._spawn()

    def _spawn(self) -> None:
        # spawn, not fork: the hub has threads (a forked child would copy held locks).
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=child_main,
            # As data: the settings' class may be made at load time (not picklable).
            args=(theirs, self.settings.model_dump(), self.source, logging.getLogger().level),
            name="kotahub-alerts",
            daemon=True,
        )
        process.start()
        theirs.close()
        self._process, self._conn = process, ours
        self.starts += 1
        reply = self._receive(START_TIMEOUT_S, "start")
        if reply[0] != "ready":
            self._kill()
            raise AlertEngineError(f"alert engine did not start: {reply[1]}")
        self._wanted = reply[1]
        log.info("alert engine process %s ready", process.pid)

    def stop(self) -> None:
        """Stop the child (its notifier, output and HTTP server); after the hub stopped."""
        with self._lock:
            process, conn = self._process, self._conn
            if process is None or conn is None:
                return
            try:
                conn.send(("stop",))
                if conn.poll(STOP_TIMEOUT_S):
                    conn.recv()
            except (OSError, EOFError):
                pass  # gone already
            process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                log.error("alert engine process did not stop in %.0f s: killed", STOP_TIMEOUT_S)
            self._kill()

    def _kill(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(5.0)

    # -- the consumer seam -------------------------------------------------------------
    def start_position(self, first: WalPosition, durable: WalPosition) -> WalPosition:
        """After the last batch the child's store saved; the log's start when none."""
        return self.resume_position(first, first, durable)

    def resume_position(
        self, committed: WalPosition, first: WalPosition, durable: WalPosition
    ) -> WalPosition:
        """Where to read on (re)start: where the child's store says (a new child if need be)."""
        del committed  # the store's position is the one that goes with the rule state
        reply = self._request(("start", first, durable), restart=True)
        position: WalPosition = reply[1]
        return position

    def wanted(self) -> frozenset[str] | None:
        """The measurements the rules watch (the child filters the records)."""
        return self._wanted

    def consume(self, items: Sequence[StreamItem], end: WalPosition) -> None:
        """Not used: this consumer takes raw records (``consume_records``)."""
        raise TypeError("EngineProcess takes raw WAL records: consume_records")

    def consume_records(
        self, records: list[bytes], end: WalPosition, on_error: Callable[[str], None]
    ) -> None:
        """Have the child evaluate and save a batch; write the alert points it returns."""
        reply = self._request(("batch", records, end))
        self._last_batch = time.monotonic()
        for detail in reply[2]:
            on_error(detail)

    def tick(self) -> None:
        """Time-driven evaluation in the child (for-durations, escalations, exports)."""
        if time.monotonic() - self._last_batch < TICK_AFTER_BATCH_S:
            return  # the child ticked after that batch already
        self._request(("tick",))

    def _request(self, message: tuple[Any, ...], *, restart: bool = False) -> tuple[Any, ...]:
        with self._lock:
            if self._conn is None or self._process is None or not self._process.is_alive():
                if not restart:
                    raise AlertEngineError("alert engine process is not running")
                if self._process is not None:
                    log.error(
                        "alert engine process %s exited (code %s): starting it again",
                        self._process.pid,
                        self._process.exitcode,
                    )
                    self._kill()
                self._spawn()
            assert self._conn is not None
            try:
                self._conn.send(message)
            except OSError as err:
                self._kill()
                raise AlertEngineError(f"alert engine process gone: {err}") from err
            reply = self._receive(REPLY_TIMEOUT_S, message[0])
            if reply[0] == "failed":
                raise AlertEngineError(f"alert engine failed a {message[0]}: {reply[1]}")
            lines: list[str] = reply[1] if reply[0] == "done" else []
        if lines:
            self.sink(lines)
        return reply

    def _receive(self, timeout_s: float, what: str) -> tuple[Any, ...]:
        """The child's reply; AlertEngineError when it dies or stays silent."""
        conn, process = self._conn, self._process
        assert conn is not None
        assert process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if conn.poll(0.5):
                    reply: tuple[Any, ...] = conn.recv()
                    return reply
            except (EOFError, OSError):
                pass  # the child closed its end: it died
            if not process.is_alive() or time.monotonic() > deadline:
                code = process.exitcode
                self._kill()
                # The same line as a death noticed between requests, so one search finds both.
                state = f"exited (code {code})" if code is not None else "stopped answering"
                log.error("alert engine process %s %s during a %s", process.pid, state, what)
                raise AlertEngineError(f"alert engine process {state} during a {what}")


# -- the child -------------------------------------------------------------------------
def _lock_database(database: Path) -> int:
    """Hold ``<database>.lock`` for the process's life: one engine per alert database."""
    database.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{database}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise AlertEngineError(
                    f"{database} is in use by another alert engine for {LOCK_TIMEOUT_S:.0f} s"
                ) from None
            time.sleep(0.1)


def child_main(
    conn: Connection, settings_data: dict[str, Any], source: DirectorySource, log_level: int
) -> None:
    """The engine's process: build the runtime, then answer the hub's requests."""
    # The hub stops its engine through the pipe; Ctrl-C in the terminal reaches the
    # whole process group and must not kill the engine before the hub's orderly stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=log_level,
        format="%(asctime)s %(levelname)s %(name)s[alerts]: %(message)s",
    )
    from hub.alerts.alert_runtime import alert_database, build_runtime
    from hub.alerts.clock import SystemClock
    from hub.settings import Settings

    pending: list[str] = []
    try:
        # Validated as given: the hub's environment and config file are already in it.
        settings = Settings.model_validate(settings_data)
        os.nice(settings.alerts.engine_nice)
        _lock_database(alert_database(settings))
        directory = source.open(settings)
        runtime = build_runtime(settings, directory, SystemClock(), pending.extend)
        runtime.start()
    except Exception as err:  # one line to the hub, which stops its start with it
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", runtime.consumer.wanted()))
    _serve(conn, runtime, directory, pending)


def _serve(
    conn: Connection, runtime: AlertRuntime, directory: DeviceDirectory, pending: list[str]
) -> None:
    consumer = runtime.consumer
    next_refresh = time.monotonic() + REFRESH_S
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            # The hub is gone (killed): so is its engine, at once, as if it ran inside.
            os._exit(1)
        kind = message[0]
        errors: list[str] = []
        try:
            if kind == "batch":
                _kind, records, end = message
                consumer.consume(decode_records(records, consumer.wanted(), errors.append), end)
                consumer.tick()
            elif kind == "tick":
                consumer.tick()
            elif kind == "start":
                _kind, first, durable = message
                conn.send(("position", consumer.start_position(first, durable)))
                continue
            elif kind == "stop":
                runtime.stop()
                conn.send(("stopped",))
                return
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + REFRESH_S
                _refresh(directory)
        except Exception as err:
            log.exception("alert engine: %s failed", kind)
            # Alert points already queued stay in ``pending``: they go with the next answer.
            conn.send(("failed", f"{type(err).__name__}: {err}"))
            continue
        conn.send(("done", list(pending), errors))
        pending.clear()


def _refresh(directory: DeviceDirectory) -> None:
    from device_registry.directory import DirectoryError

    try:
        directory.refresh()
    except DirectoryError as err:
        log.error("device list not reloaded, keeping the last good one: %s", err)
