"""The alert engine's clock: the wall clock in the hub, a hand-driven one in tests."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Milliseconds since the epoch."""

    def now_ms(self) -> int:
        """The current time."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        """The current time."""
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (durations in tests without waiting)."""

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        """The current time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> int:
        """Move the clock forward; return the new time."""
        with self._lock:
            self._now += round(seconds * 1000)
            return self._now

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms``."""
        with self._lock:
            self._now = now_ms
