"""What the hub tells its operator about rejected input, in its log, without flooding it.

Every rejection is in the ``deadletter`` measurement and on the dead-letter topic; the
log gets the first rejection of each device and reason (so a new misconfigured device
is seen at once, with the reason and detail), then, once a minute, how many rejections
of each reason followed. A gateway inventing thousands of ids cannot flood the log:
unknown ids share one key, and the set of keys is bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from hub.ingest.contract_decoder import UNKNOWN_DEVICE_TAG, Rejected

log = logging.getLogger("hub.ingest.deadletter")

SUMMARY_INTERVAL_S = 60.0
MAX_FIRST_SEEN = 100_000


class DeadletterLog:
    """Logs the first rejection per device and reason, then a per-reason summary a minute."""

    def __init__(
        self, *, interval_s: float = SUMMARY_INTERVAL_S, max_keys: int = MAX_FIRST_SEEN
    ) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str]] = set()
        self._pending: Counter[str] = Counter()
        self._since = time.monotonic()

    def rejected(self, rejected: Rejected) -> None:
        """Note one rejection (any thread)."""
        device = rejected.device_id if rejected.device_known else UNKNOWN_DEVICE_TAG
        key = (device or "-", rejected.reason.value)
        with self._lock:
            first = key not in self._seen and len(self._seen) < self.max_keys
            if first:
                self._seen.add(key)
            else:
                self._pending[rejected.reason.value] += 1
        if first:
            log.warning(
                "dead-letter %s from device %r on %r: %s (further ones of this device and "
                "reason are counted in the summary every %.0f s)",
                rejected.reason.value,
                rejected.device_id,
                rejected.topic[:200],
                rejected.detail,
                self.interval_s,
            )

    def summarise(self, *, force: bool = False) -> None:
        """Log the counts since the last summary, once the interval has passed."""
        now = time.monotonic()
        with self._lock:
            if not force and now - self._since < self.interval_s:
                return
            pending, self._pending = self._pending, Counter()
            elapsed, self._since = now - self._since, now
        if pending:
            counts = ", ".join(f"{reason} {count}" for reason, count in pending.most_common())
            log.warning("dead-letters in the last %.0f s besides those logged: %s", elapsed, counts)
