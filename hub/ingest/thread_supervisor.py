"""Supervised threads: a loop that dies of an unexpected exception is logged and restarted.

The hub's loops (flusher, writer, housekeeping) must never die silently: a dead flusher
leaves a process that looks alive and acknowledges nothing. ``SupervisedThread`` runs a
loop function; when it raises, the error is logged with its traceback the first time
(then one WARNING a minute while it keeps failing), counted, and the loop starts again
after a capped exponential backoff. A loop that returns has finished (the hub is
stopping). Each loop also beats a heartbeat, so ``/healthz`` can tell a loop that is
stuck (an fsync that never returns) from one that is merely idle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 10.0
# A loop that ran this long before failing starts its backoff from the minimum again.
HEALTHY_RUN_S = 60.0
REPEAT_LOG_INTERVAL_S = 60.0


@dataclass(slots=True)
class ThreadHealth:
    """What a supervised loop's thread reports about itself."""

    name: str
    restarts: int = 0
    last_error: str = ""
    backing_off: bool = False
    finished: bool = False
    beat: float = 0.0  # time.monotonic() of the loop's last sign of progress


class SupervisedThread:
    """Runs ``target`` on a daemon thread, restarting it with backoff when it raises."""

    def __init__(
        self,
        name: str,
        target: Callable[[], None],
        *,
        stop: threading.Event,
        min_backoff_s: float = MIN_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.name = name
        self.health = ThreadHealth(name, beat=time.monotonic())
        self._target = target
        self._stop = stop
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._last_log = 0.0

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        """True while the thread runs (a loop in backoff counts as alive)."""
        return self._thread.is_alive()

    def beat(self) -> None:
        """Record progress (called by the loop, from its own thread)."""
        self.health.beat = time.monotonic()

    def _run(self) -> None:
        delay = self._min_backoff_s
        while True:
            started = time.monotonic()
            self.beat()
            try:
                self._target()
            except Exception as err:
                self._failed(err, started)
            else:
                self.health.finished = True
                return
            if time.monotonic() - started >= HEALTHY_RUN_S:
                delay = self._min_backoff_s
            self.health.backing_off = True
            stopping = self._stop.wait(delay)
            self.health.backing_off = False
            if stopping:
                self.health.finished = True
                return
            delay = min(delay * 2, self._max_backoff_s)

    def _failed(self, err: Exception, started: float) -> None:
        health = self.health
        health.restarts += 1
        health.last_error = f"{type(err).__name__}: {err}"[:500]
        now = time.monotonic()
        if health.restarts == 1:
            log.error("thread %s failed; restarting it", self.name, exc_info=err)
            self._last_log = now
        elif now - self._last_log >= REPEAT_LOG_INTERVAL_S:
            log.warning(
                "thread %s failed again (%d restarts, ran %.1f s): %s",
                self.name,
                health.restarts,
                now - started,
                health.last_error,
            )
            self._last_log = now
