"""The operator's log of rejections: the first per device and reason, then a summary."""

from __future__ import annotations

import logging

import pytest

from hub.ingest.contract_decoder import Reason, Rejected
from hub.ingest.deadletter_log import DeadletterLog


def _rejected(device: str, reason: Reason, *, known: bool = True) -> Rejected:
    return Rejected(reason, "why", f"kota/v1/dev/{device}/telemetry", device, b"{}", 0, known)


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hub.ingest.deadletter"]


def test_first_per_device_and_reason_then_counts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "hub.ingest.deadletter")
    summary = DeadletterLog(interval_s=3600)
    for _ in range(5):
        summary.rejected(_rejected("g1", Reason.NOT_JSON))
    summary.rejected(_rejected("g1", Reason.BAD_TEXT))
    summary.rejected(_rejected("g2", Reason.NOT_JSON))
    for n in range(1000):  # a gateway inventing ids: one key, not a thousand lines
        summary.rejected(_rejected(f"ghost{n}", Reason.UNKNOWN_DEVICE, known=False))
    first = _messages(caplog)
    assert len(first) == 4
    assert "dead-letter not_json from device 'g1'" in first[0]
    assert "why" in first[0]
    summary.summarise()  # the interval has not passed: nothing yet
    assert len(_messages(caplog)) == 4
    summary.summarise(force=True)
    last = _messages(caplog)[-1]
    assert last.endswith("unknown_device 999, not_json 4")
    summary.summarise(force=True)  # nothing new: no line
    assert len(_messages(caplog)) == 5


def test_bounded_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "hub.ingest.deadletter")
    summary = DeadletterLog(max_keys=3)
    for n in range(10):
        summary.rejected(_rejected(f"d{n}", Reason.NOT_JSON))
    assert len(_messages(caplog)) == 3
    summary.summarise(force=True)
    assert _messages(caplog)[-1].endswith("not_json 7")
