"""How busy a thread is: the share of wall time it spends in a handler, sampled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class BusyMeter:
    """Share of wall time spent in ``add``-ed work, over windows of ``window_s``.

    ``add`` is called by the one thread measured, on every message, and takes no lock
    (a float add under the GIL); ``share`` may be called from any thread.
    """

    def __init__(
        self, window_s: float = 1.0, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.window_s = window_s
        self.busy_s = 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._mark = (clock(), 0.0)
        self._share = 0.0

    def add(self, seconds: float) -> None:
        """Count ``seconds`` of work."""
        self.busy_s += seconds

    def share(self) -> float:
        """Busy share of the last whole window (0 before the first one ends)."""
        with self._lock:
            now = self._clock()
            began, busy = self._mark
            if now - began >= self.window_s:
                self._share = (self.busy_s - busy) / (now - began)
                self._mark = (now, self.busy_s)
            return self._share
