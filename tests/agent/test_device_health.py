"""The availability state machine: backoff, circuit breaker, one report each way."""

from __future__ import annotations

from hub.agent.device_health import DeviceHealth, PollPolicy

POLICY = PollPolicy(
    interval_s=10,
    timeout_s=2,
    offline_after_failures=3,
    breaker_failures=5,
    breaker_open_s=60,
    retry_max_s=45,
)


def test_backoff_doubles_is_capped_and_breaker_opens() -> None:
    health = DeviceHealth(POLICY)
    delays = [health.failed("timeout").delay_s for _ in range(7)]
    assert delays == [10, 20, 40, 45, 60, 60, 60]
    assert health.breaker_open
    outcome = health.succeeded()
    assert outcome.delay_s is None
    assert not health.breaker_open
    assert health.failed("timeout").delay_s == 10  # counting starts again


def test_offline_and_online_reported_once_each_way() -> None:
    health = DeviceHealth(POLICY)
    changes = [health.succeeded().change, health.succeeded().change]
    changes += [health.failed("x").change for _ in range(8)]
    changes += [health.succeeded().change for _ in range(3)]
    changes += [health.failed("x").change for _ in range(2)]
    reported = [c for c in changes if c is not None]
    assert reported == ["online", "offline", "online"]
    assert changes.index("offline") == 4  # the third failure in a row
    assert health.last_error == "x"


def test_unknown_device_that_never_answers_goes_offline_once() -> None:
    health = DeviceHealth(POLICY)
    reported = [health.failed("refused").change for _ in range(10)]
    assert [c for c in reported if c] == ["offline"]
