"""Supervised asyncio tasks: a long-lived task that fails is logged, backed off and restarted.

The agent's tasks (the outbox publisher, each device poller, each listening family such as
BLE) live as long as the process. In a bare ``TaskGroup`` one of them raising cancels all
the others: a BLE scanner that cannot start would stop the Modbus pollers and the outbox.
Here each task runs under its own ``SupervisedTask``: an unexpected exception (or a return,
since these tasks never end by themselves) is logged with its traceback the first time,
then one short WARNING a minute while it keeps failing, and an INFO once it has run
healthily again; the task restarts after a capped exponential backoff, reset by a healthy
run. A task that raises ``FatalTaskError`` is not restarted: the supervisor records it and
wakes its owner, which stops everything and exits non-zero so a service manager restarts
the process. Cancellation (shutdown) passes straight through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

log = logging.getLogger(__name__)

TaskState = Literal["running", "backing_off", "failed", "stopped"]
TaskFactory = Callable[[], Coroutine[Any, Any, None]]
ERROR_TEXT_MAX = 500


class FatalTaskError(Exception):
    """Raised by a supervised task when no restart can help: the process must exit."""


class TaskEndedError(Exception):
    """A long-lived task returned although nothing asked it to stop."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    """How soon a failed task restarts and how often its failures are logged."""

    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    # A task that ran this long without failing counts as healthy: backoff starts over.
    healthy_after_s: float = 60.0
    repeat_log_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.first_delay_s <= self.max_delay_s:
            raise ValueError("need 0 < first_delay_s <= max_delay_s")
        if self.healthy_after_s <= 0 or self.repeat_log_interval_s < 0:
            raise ValueError("healthy_after_s must be > 0 and repeat_log_interval_s >= 0")


@dataclass(slots=True)
class TaskHealth:
    """What one supervised task reports about itself (a row of the health report)."""

    name: str
    state: TaskState = "running"
    restarts: int = 0
    failures_in_a_row: int = 0
    last_error: str = ""

    @property
    def healthy(self) -> bool:
        """Running, and not failed since it last ran healthily."""
        return self.state == "running" and self.failures_in_a_row == 0

    def as_dict(self) -> dict[str, str | int]:
        """The row as plain JSON-able data."""
        return {
            "state": self.state,
            "restarts": self.restarts,
            "failures_in_a_row": self.failures_in_a_row,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class FatalFailure:
    """The task that failed for good, and why."""

    name: str
    error: BaseException = field(compare=False)

    def __str__(self) -> str:
        return f"task {self.name} failed and must not be restarted: {describe(self.error)}"


def describe(err: BaseException) -> str:
    """An exception as one short line: its type, its message and its cause's."""
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    cause = err.__cause__
    if cause is not None:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text[:ERROR_TEXT_MAX]


def stop_requested() -> bool:
    """True when someone cancelled this task, even if a library swallowed the CancelledError.

    Python 3.11's ``asyncio.wait_for`` (inside pymodbus) can swallow a cancel that races a
    reply (CPython gh-86296); the request is still counted by ``Task.cancelling()``.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class SupervisedTask:
    """Runs one coroutine factory for ever: restarts it with backoff when it fails."""

    def __init__(
        self,
        name: str,
        factory: TaskFactory,
        *,
        policy: RestartPolicy,
        on_fatal: Callable[[FatalFailure], None],
    ) -> None:
        self.name = name
        self.health = TaskHealth(name)
        self._factory = factory
        self._policy = policy
        self._on_fatal = on_fatal
        self._last_log = 0.0

    async def run(self) -> None:
        """Run, restart on failure, end on cancellation or on a fatal error."""
        loop = asyncio.get_running_loop()
        delay = self._policy.first_delay_s
        try:
            while True:
                self.health.state = "running"
                healthy = loop.call_later(self._policy.healthy_after_s, self._ran_healthily)
                error: Exception
                try:
                    await self._factory()
                    error = TaskEndedError(f"{self.name} returned")
                except FatalTaskError as err:
                    self._fatal(err)
                    return
                except Exception as err:
                    error = err
                finally:
                    healthy.cancel()
                if stop_requested():
                    return  # stopping: whatever it raised on the way out is not a failure
                if self.health.failures_in_a_row == 0:
                    delay = self._policy.first_delay_s
                self._failed(error, loop.time(), delay)
                self.health.state = "backing_off"
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._policy.max_delay_s)
        finally:
            if self.health.state != "failed":
                self.health.state = "stopped"

    def _ran_healthily(self) -> None:
        health = self.health
        if health.failures_in_a_row:
            log.info(
                "task %s running healthily again (%d restart(s) in all)",
                self.name,
                health.restarts,
            )
        health.failures_in_a_row = 0

    def _failed(self, err: Exception, now: float, delay: float) -> None:
        health = self.health
        health.restarts += 1
        health.failures_in_a_row += 1
        health.last_error = describe(err)
        if health.failures_in_a_row == 1:
            log.error("task %s failed; restarting it in %g s", self.name, delay, exc_info=err)
            self._last_log = now
        elif now - self._last_log >= self._policy.repeat_log_interval_s:
            log.warning(
                "task %s failed again (%d in a row, %d restart(s) in all); next try in %g s: %s",
                self.name,
                health.failures_in_a_row,
                health.restarts,
                delay,
                health.last_error,
            )
            self._last_log = now

    def _fatal(self, err: FatalTaskError) -> None:
        self.health.state = "failed"
        self.health.last_error = describe(err)
        log.critical("task %s failed and must not be restarted", self.name, exc_info=err)
        self._on_fatal(FatalFailure(self.name, err))


class TaskSupervisor:
    """Starts named long-lived tasks in a TaskGroup, each supervised on its own."""

    def __init__(self, owner: str, *, policy: RestartPolicy | None = None) -> None:
        self.owner = owner
        self.policy = policy or RestartPolicy()
        self.fatal: FatalFailure | None = None
        self._tasks: dict[str, tuple[SupervisedTask, asyncio.Task[None]]] = {}

    def start(self, group: asyncio.TaskGroup, name: str, factory: TaskFactory) -> None:
        """Start ``factory()`` under supervision in ``group``; the name must be free."""
        if name in self._tasks:
            raise ValueError(f"task {name} is already running; stop it first")
        supervised = SupervisedTask(name, factory, policy=self.policy, on_fatal=self._on_fatal)
        task = group.create_task(supervised.run(), name=f"{self.owner}:{name}")
        self._tasks[name] = (supervised, task)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def names(self) -> list[str]:
        """The supervised tasks, by name."""
        return list(self._tasks)

    async def stop(self, names: Iterable[str] | None = None) -> None:
        """Cancel the named tasks (default: all) and wait until each has really ended."""
        chosen = list(self._tasks) if names is None else [n for n in names if n in self._tasks]
        pending = {self._tasks.pop(name)[1] for name in chosen}
        while pending:
            # A cancel can be swallowed inside a driver (CPython gh-86296): repeat it.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)

    def health(self) -> dict[str, TaskHealth]:
        """A snapshot of every supervised task's health, by name."""
        return {name: replace(sup.health) for name, (sup, _) in self._tasks.items()}

    def report(self) -> dict[str, Any]:
        """Which tasks are up, which are failing and why, and the restarts: for logs and status.

        A task counts as failing from its first failure until it has run healthily again,
        not just while it waits, so a report does not flicker with each restart.
        """
        health = self.health()
        failing = {n: h.as_dict() for n, h in health.items() if not h.healthy}
        return {
            "tasks": len(health),
            "healthy": len(health) - len(failing),
            "restarts": sum(h.restarts for h in health.values()),
            "failing": failing,
        }

    def _on_fatal(self, failure: FatalFailure) -> None:
        if self.fatal is None:
            self.fatal = failure
