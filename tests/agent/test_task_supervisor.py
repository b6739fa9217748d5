"""The task supervisor on its own: restart with backoff, logged once, clean cancel, fatal stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from hub.agent.task_supervisor import (
    FatalTaskError,
    RestartPolicy,
    TaskSupervisor,
)
from tests.agent.conftest import wait_until

SUPERVISOR_LOG = "hub.agent.task_supervisor"
FAST = RestartPolicy(first_delay_s=0.01, max_delay_s=0.04, healthy_after_s=0.2)


class Flaky:
    """A long-lived task that fails its first ``failures`` runs, then runs until cancelled."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs = 0
        self.healthy = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise OSError(f"radio not ready (run {self.runs})")
        self.healthy.set()
        await asyncio.Event().wait()


@asynccontextmanager
async def supervising(
    policy: RestartPolicy, **tasks: Callable[[], Coroutine[Any, Any, None]]
) -> AsyncIterator[TaskSupervisor]:
    """A supervisor running ``tasks`` in a TaskGroup; all stopped (and awaited) on exit."""
    supervisor = TaskSupervisor("test", policy=policy)
    async with asyncio.TaskGroup() as group:
        for name, factory in tasks.items():
            supervisor.start(group, name, factory)
        try:
            yield supervisor
        finally:
            await supervisor.stop()


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    """The supervisor's log records at exactly ``level``."""
    return [r for r in caplog.records if r.name == SUPERVISOR_LOG and r.levelno == level]


async def test_failing_task_restarts_with_capped_doubling_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky(failures=4)
    # repeat_log_interval_s=0: a WARNING for every restart, so each backoff shows in the log.
    policy = RestartPolicy(first_delay_s=0.01, max_delay_s=0.04, repeat_log_interval_s=0)
    with caplog.at_level(logging.INFO, SUPERVISOR_LOG):
        async with supervising(policy, radio=flaky) as supervisor:
            await asyncio.wait_for(flaky.healthy.wait(), 10)
            health = supervisor.health()["radio"]
    assert flaky.runs == 5
    assert health.state == "running"
    assert health.restarts == 4
    assert health.last_error == "OSError: radio not ready (run 4)"
    delays = [records(caplog, logging.ERROR)[0].args[1]]  # type: ignore[index]
    delays += [r.args[3] for r in records(caplog, logging.WARNING)]  # type: ignore[index]
    assert delays == [0.01, 0.02, 0.04, 0.04]


async def test_failure_logged_once_with_cause_then_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flaky = Flaky(failures=5)
    with caplog.at_level(logging.INFO, SUPERVISOR_LOG):
        async with supervising(FAST, radio=flaky) as supervisor:
            await asyncio.wait_for(flaky.healthy.wait(), 10)
            assert supervisor.report()["failing"]["radio"]["restarts"] == 5
            await wait_until(lambda: supervisor.health()["radio"].failures_in_a_row == 0)
            report = supervisor.report()
    errors = records(caplog, logging.ERROR)
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert str(errors[0].exc_info[1]) == "radio not ready (run 1)"
    assert "Traceback" in caplog.text
    assert records(caplog, logging.WARNING) == []  # the next ones within the minute: silent
    infos = records(caplog, logging.INFO)
    assert [r.getMessage() for r in infos] == [
        "task radio running healthily again (5 restart(s) in all)"
    ]
    assert report == {"tasks": 1, "healthy": 1, "restarts": 5, "failing": {}}


async def test_a_new_failure_after_a_healthy_run_is_logged_again_from_the_first_delay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = 0
    healthy_run = asyncio.Event()

    async def fails_after_healthy_run() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("first trouble")
        if attempts == 2:
            await asyncio.sleep(FAST.healthy_after_s * 2)
            healthy_run.set()
            raise OSError("second trouble")
        await asyncio.Event().wait()

    with caplog.at_level(logging.INFO, SUPERVISOR_LOG):
        async with supervising(FAST, job=fails_after_healthy_run) as supervisor:
            await wait_until(lambda: attempts == 3)
            health = supervisor.health()["job"]
    errors = records(caplog, logging.ERROR)
    assert [str(r.exc_info[1]) for r in errors if r.exc_info] == ["first trouble", "second trouble"]
    assert [r.args[1] for r in errors] == [0.01, 0.01]  # type: ignore[index]
    assert health.restarts == 2
    assert health.failures_in_a_row == 1


async def test_a_task_that_returns_is_restarted() -> None:
    runs = 0

    async def returns_at_once() -> None:
        nonlocal runs
        runs += 1
        if runs > 2:
            await asyncio.Event().wait()

    async with supervising(FAST, job=returns_at_once) as supervisor:
        await wait_until(lambda: runs == 3)
        health = supervisor.health()["job"]
    assert health.restarts == 2
    assert health.last_error == "TaskEndedError: job returned"


async def test_stop_cancels_running_and_backing_off_tasks_and_leaves_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = asyncio.all_tasks()
    closed: list[str] = []
    swallowed = 0

    async def runs_for_ever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            closed.append("runner")

    async def swallows_one_cancel() -> None:
        # What pymodbus does under CPython gh-86296: a cancel racing a reply is lost.
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    async def always_fails() -> None:
        raise OSError("never starts")

    slow = RestartPolicy(first_delay_s=3600, max_delay_s=3600)
    with caplog.at_level(logging.INFO, SUPERVISOR_LOG):
        async with supervising(
            slow, runner=runs_for_ever, swallower=swallows_one_cancel, failer=always_fails
        ) as supervisor:
            await wait_until(lambda: supervisor.health()["failer"].state == "backing_off")
            await supervisor.stop()
            assert supervisor.names() == []
    assert asyncio.all_tasks() == before
    assert closed == ["runner"]
    assert swallowed == 2
    # Only the real failure was logged; stopping is not a failure.
    assert [r.getMessage() for r in records(caplog, logging.ERROR)] == [
        "task failer failed; restarting it in 3600 s"
    ]


async def test_fatal_error_is_not_restarted_and_siblings_run_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = 0
    sibling = Flaky(failures=0)

    async def bad_config() -> None:
        nonlocal attempts
        attempts += 1
        raise FatalTaskError("outbox damaged") from ValueError("file is not a database")

    with caplog.at_level(logging.INFO, SUPERVISOR_LOG):
        async with supervising(FAST, config=bad_config, sibling=sibling) as supervisor:
            await wait_until(lambda: supervisor.fatal is not None)
            await asyncio.sleep(FAST.max_delay_s * 3)  # a restart would have come by now
            health = supervisor.health()
    assert attempts == 1
    assert health["config"].state == "failed"
    assert health["sibling"].state == "running"
    assert sibling.healthy.is_set()
    fatal = supervisor.fatal
    assert fatal is not None
    assert fatal.name == "config"
    assert str(fatal) == (
        "task config failed and must not be restarted: FatalTaskError: outbox damaged"
        " (caused by ValueError: file is not a database)"
    )
    critical = records(caplog, logging.CRITICAL)
    assert len(critical) == 1
    assert critical[0].exc_info is not None


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="first_delay_s"):
        RestartPolicy(first_delay_s=2, max_delay_s=1)
    with pytest.raises(ValueError, match="healthy_after_s"):
        RestartPolicy(healthy_after_s=0)


async def test_a_name_runs_once() -> None:
    async with supervising(FAST, job=Flaky(failures=0)) as supervisor, asyncio.TaskGroup() as group:
        with pytest.raises(ValueError, match="already running"):
            supervisor.start(group, "job", Flaky(failures=0))
