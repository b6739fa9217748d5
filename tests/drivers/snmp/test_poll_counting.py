"""Produced points are completed polls: one per poll, however many requests or retries."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.framework import DeviceSpec, DriverError
from drivers.simulation import PollCounter, SimulatorStats
from drivers.snmp.client import close_family_clients
from drivers.snmp.simulated_agent import SimulatedAgents
from drivers.wifi import FAMILY as WIFI
from drivers.wifi.simulated_ap import SimulatedAccessPoint
from tests.agent.conftest import wait_until

SPAN_S = 5.0


class Clock:
    """A clock the test steps (the counter's time base)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retries_and_walk_steps_are_one_poll_and_a_silent_poll_is_failed() -> None:
    stats, clock = SimulatorStats(), Clock()
    counter = PollCounter(stats, "ap-1", SPAN_S, clock)
    for answered in (False, False, True):  # two timeouts, then the retry answered
        counter.request(answered)
        clock.now += 1.5
    counter.flush()
    assert stats.total == 0  # still within the poll's span: not over yet
    clock.now += SPAN_S
    counter.flush()
    assert (stats.total, stats.total_polls_failed) == (1, 0)
    clock.now += 60
    counter.request(answered=False)
    counter.request(answered=False)
    clock.now += 60
    for _ in range(3):  # a walk of three answered requests
        counter.request(answered=True)
    counter.flush(force=True)
    assert stats.by_device() == {"ap-1": 2}
    assert stats.polls_failed() == {"ap-1": 1}


def requests_of(poll: list[tuple[float, bool]]) -> list[tuple[float, bool]]:
    """A poll's requests in time order, the first at its start."""
    ordered = sorted(poll)
    return [(0.0, ordered[0][1]), *ordered[1:]]


@given(
    st.lists(
        st.lists(st.tuples(st.floats(0, SPAN_S * 0.99), st.booleans()), min_size=1, max_size=6),
        max_size=12,
    ),
    st.floats(0.01, 100),
)
def test_every_poll_is_counted_once_by_its_last_request(
    polls: list[list[tuple[float, bool]]], gap_s: float
) -> None:
    stats, clock = SimulatorStats(), Clock()
    counter = PollCounter(stats, "dev", SPAN_S, clock)
    for poll in polls:
        start = clock.now  # a poll starts with its first request
        for offset, answered in requests_of(poll):
            clock.now = start + offset
            counter.request(answered)
        clock.now = start + SPAN_S + gap_s  # the next one starts after this one's span
    counter.flush(force=True)
    completed = sum(1 for poll in polls if requests_of(poll)[-1][1])
    assert stats.total == completed
    assert stats.total_polls_failed == len(polls) - completed


async def test_the_real_driver_s_polls_are_counted_as_polls_not_requests() -> None:
    """A retried poll is one point; a poll of a silent AP is a failed poll, never a point."""
    stats, clock = SimulatorStats(), Clock()
    target = SimulatedAccessPoint(vendor="mikrotik")
    target.polls = PollCounter(stats, "ap-1", SPAN_S, clock)
    agents = SimulatedAgents()
    port = await agents.serve(target)
    spec = DeviceSpec(
        device_id="ap-1",
        device_type="mikrotik_ap",
        protocol="snmp",
        address=f"127.0.0.1:{port}",
        driver_config={"timeout_s": 3, "request_timeout_s": 0.4, "retries": 1},
    )
    poller = WIFI.create_poller(spec, WIFI.validate(spec))  # type: ignore[misc]
    try:
        assert "clients" in (await poller.poll())[0].metrics
        clock.now += 60
        # The first attempt goes unanswered, the retry is answered: one completed poll.
        target.silent = True
        before = target.requests
        retried = asyncio.create_task(poller.poll())
        await wait_until(lambda: target.requests > before, 5)
        target.silent = False
        assert "clients" in (await retried)[0].metrics
        assert target.requests == before + 2
        clock.now += 60
        target.silent = True
        with pytest.raises(DriverError, match="no answer"):
            await poller.poll()
        target.polls.flush(force=True)
    finally:
        await poller.close()
        agents.close()
        close_family_clients()
    assert target.requests >= 5  # requests are not polls
    assert stats.by_device() == {"ap-1": 2}
    assert stats.polls_failed() == {"ap-1": 1}
