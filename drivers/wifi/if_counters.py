"""Counter arithmetic for access points: octet rates across wraps and resets, reboots.

Pure functions and small state holders, so hypothesis can test them without an agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

COUNTER64: Final = 2**64
TIMETICKS: Final = 2**32  # sysUpTime wraps after ~497 days
# Above this a "wrap" of a 64-bit octet counter is implausible: it is a reset instead.
MAX_PLAUSIBLE_BPS: Final = 100e9


def octet_delta(previous: int, current: int, seconds: float, modulo: int = COUNTER64) -> int | None:
    """Octets since ``previous``: across one wrap if plausible, None after a counter reset."""
    if current >= previous:
        return current - previous
    wrapped = current + modulo - previous
    if seconds > 0 and wrapped * 8 / seconds <= MAX_PLAUSIBLE_BPS:
        return wrapped
    return None


def uptime_rebooted(previous_ticks: int, current_ticks: int, elapsed_s: float) -> bool:
    """A decrease of sysUpTime is a reboot, unless it is the ~497-day wrap of the ticks."""
    if current_ticks >= previous_ticks:
        return False
    wrapped_s = (current_ticks + TIMETICKS - previous_ticks) / 100
    # A wrap advances the clock by about the time that passed; a reboot restarts it.
    return not (previous_ticks > TIMETICKS * 0.99 and abs(wrapped_s - elapsed_s) < 60 + elapsed_s)


@dataclass(slots=True)
class RateMeter:
    """Bits per second from successive octet counter readings (one per interface)."""

    last_octets: int | None = None
    last_time_s: float | None = None

    def update(self, octets: int, now_s: float, *, reset: bool = False) -> float | None:
        """The rate since the previous reading, None on the first one or after a reset."""
        previous, previous_time = self.last_octets, self.last_time_s
        self.last_octets, self.last_time_s = octets, now_s
        if previous is None or previous_time is None or reset:
            return None
        seconds = now_s - previous_time
        if seconds <= 0:
            return None
        delta = octet_delta(previous, octets, seconds)
        return None if delta is None else delta * 8 / seconds
