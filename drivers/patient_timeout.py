"""A timeout that does not blame a device for its own event loop's lateness.

``asyncio.timeout(5)`` fires five seconds of wall time after it started, busy loop or
not. An agent polling thousands of devices on one loop can fall seconds behind (a burst of
ONVIF replies to parse): the answer sits in the socket buffer, its callback waits its
turn, and the timer, due meanwhile, cancels the poll first. The device answered; the agent
calls it silent; three such polls and it is reported offline.

``patient_timeout`` checks at the deadline how late its own callback runs. Late by more
than ``lag_tolerance_s`` means the loop was busy and callbacks ready before the deadline
(the answer among them) have not run yet: the deadline moves on by that lag, as often as
needed, up to ``max_extra_s`` in all. On time means nothing else was waiting: it expires,
and the block raises ``TimeoutError`` as ``asyncio.timeout`` does. A silent device is
found just as fast on an idle loop, and at most ``max_extra_s`` later on a busy one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

LAG_TOLERANCE_S = 0.1


def longest_s(delay_s: float) -> float:
    """The longest a ``patient_timeout(delay_s)`` with the default extra time can last."""
    return 2 * delay_s


@dataclass(slots=True)
class Patience:
    """What one ``patient_timeout`` did: how often and how far it moved its deadline."""

    extensions: int = 0
    extra_s: float = 0.0


@asynccontextmanager
async def patient_timeout(
    delay_s: float,
    *,
    max_extra_s: float | None = None,
    lag_tolerance_s: float = LAG_TOLERANCE_S,
) -> AsyncIterator[Patience]:
    """Like ``asyncio.timeout(delay_s)``, but the loop's own lateness is added to the time.

    ``max_extra_s`` (default: ``delay_s`` again) bounds the added time, so a device that
    is silent on a saturated loop still times out.
    """
    loop = asyncio.get_running_loop()
    patience = Patience()
    limit = loop.time() + delay_s + (delay_s if max_extra_s is None else max_extra_s)
    handle: asyncio.TimerHandle | None = None
    async with asyncio.timeout(None) as scope:

        def check(due: float) -> None:
            nonlocal handle
            now = loop.time()
            lag = now - due
            if lag > lag_tolerance_s and now < limit:
                # Callbacks queued before ``now`` run before one scheduled after it.
                moved = min(limit, now + lag)
                patience.extensions += 1
                patience.extra_s += moved - due
                handle = loop.call_at(moved, check, moved)
            else:
                scope.reschedule(now)  # expires at once: the block raises TimeoutError

        deadline = loop.time() + delay_s
        handle = loop.call_at(deadline, check, deadline)
        try:
            yield patience
        finally:
            handle.cancel()
