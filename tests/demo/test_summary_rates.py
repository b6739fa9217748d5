"""The summary's rates when snapshots come slower than the rate window (the plain view)."""

from __future__ import annotations

from hub.demo import summary as summary_module
from hub.demo.summary import DemoSummary, HubCounters, SummarySources


def _summary(counts: list[tuple[int, int]], clock: list[float]) -> DemoSummary:
    def hub() -> HubCounters:
        messages, lines = counts[0]
        return HubCounters(
            messages_in=messages,
            lines_written=lines,
            deadletters={},
            wal_depth_bytes=0,
            broker_connected=True,
        )

    sources = SummarySources(
        hub=hub, online=lambda _d: None, gateways=dict, produced=dict, faults=list
    )
    return DemoSummary(devices=(), sources=sources, clock=lambda: clock[0])


def test_snapshots_further_apart_than_the_window_still_give_rates() -> None:
    clock = [1000.0]
    counts = [(0, 0)]
    summary = _summary(counts, clock)
    first = summary.snapshot()
    assert first.messages_in_per_s == 0.0
    # The plain view asks every 10 s, a hair more than the window: the rate is the last 12 s's.
    clock[0] += summary_module.RATE_WINDOW_S + 2.0
    counts[0] = (1200, 1100)
    second = summary.snapshot()
    assert second.messages_in_per_s == 100.0
    assert abs(second.written_per_s - 1100 / 12.0) < 1e-9
    # Inside the window the oldest sample within it is used.
    clock[0] += 1.0
    counts[0] = (1300, 1200)
    third = summary.snapshot()
    assert third.messages_in_per_s == 100.0
