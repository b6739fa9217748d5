"""Turn a tipping-bucket tip counter into rain increments across wraps and reboots."""

from __future__ import annotations

from dataclasses import dataclass

COUNTER_MODULO = 65536


@dataclass(slots=True)
class TipCounter:
    """Remembers the last count; ``increment`` returns the tips since then.

    A smaller count is either a wrap past 65535 or a logger reboot that reset the
    counter to zero. A wrap means the counter ran close to the top: if counting on
    through the wrap gives a plausible number of tips it was a wrap, otherwise a reset
    (and the tips since the reset are the new count).
    """

    max_tips_per_reading: int = 5000
    last: int | None = None

    def increment(self, count: int) -> int:
        """Tips since the previous reading (0 for the first one: no baseline yet)."""
        previous, self.last = self.last, count
        if previous is None:
            return 0
        if count >= previous:
            return count - previous
        wrapped = count + COUNTER_MODULO - previous
        if wrapped <= self.max_tips_per_reading:
            return wrapped
        return count
