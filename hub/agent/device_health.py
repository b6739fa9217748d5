"""A device's availability, backoff and circuit breaker, as a small state machine.

Pure: it is told the outcome of each poll and answers when to poll next and whether
the device just went offline or came back. Each change is reported once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Availability = Literal["online", "offline"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PollPolicy:
    """How the agent treats failing devices."""

    interval_s: float
    timeout_s: float
    offline_after_failures: int = 3
    breaker_failures: int = 5
    breaker_open_s: float = 60.0
    retry_max_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the poller does after a poll: wait this long; maybe report a change."""

    delay_s: float | None
    change: Availability | None


class DeviceHealth:
    """Consecutive failures, breaker state, and the last availability reported."""

    def __init__(self, policy: PollPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.reported: Availability | None = None
        self.breaker_open = False
        self.last_error = ""

    def succeeded(self) -> Outcome:
        """A good poll: close the breaker, report online if that is news."""
        self.failures = 0
        self.breaker_open = False
        self.last_error = ""
        change: Availability | None = None
        if self.reported != "online":
            self.reported = change = "online"
        # None: keep to the regular schedule.
        return Outcome(delay_s=None, change=change)

    def failed(self, error: str) -> Outcome:
        """A failed poll: back off (capped, doubling), open the breaker, maybe report offline."""
        self.failures += 1
        self.last_error = error
        change: Availability | None = None
        if self.failures >= self.policy.offline_after_failures and self.reported != "offline":
            self.reported = change = "offline"
        backoff = min(self.policy.interval_s * 2 ** (self.failures - 1), self.policy.retry_max_s)
        if self.failures >= self.policy.breaker_failures:
            # Open (or re-open after a failed half-open probe): one probe per open period.
            self.breaker_open = True
            return Outcome(delay_s=max(backoff, self.policy.breaker_open_s), change=change)
        return Outcome(delay_s=backoff, change=change)
