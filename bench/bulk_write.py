"""Writing a simulated city's weeks of points into InfluxDB fast, in time order.

The readings are made an hour at a time (``demo_points.time_chunks``) by a pool of worker
processes; each worker posts its hour in batches of ``batch_lines`` lines while the others
generate theirs, so line generation (Python, one core per worker) and InfluxDB's parsing
overlap. Hours are handed out in time order, so the writes fill one shard after another.
Progress (points written, rate, ETA) goes to stderr.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice

import httpx

from dashboards.grafana.demo_points import (
    CitySize,
    Device,
    context_lines,
    devices,
    reading_lines,
    time_chunks,
)

# InfluxDB answers 500 "cache-max-memory-size exceeded" while its compactions catch up, and
# a post can time out on a busy 2-core machine: such a batch is posted again after a pause.
RETRIES = 20
RETRY_PAUSE_S = 2.0


class WriteError(Exception):
    """InfluxDB refused a batch for good; the message has its answer."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the points go."""

    url: str
    database: str
    policy: str
    batch_lines: int = 5_000


def post_lines(client: httpx.Client, target: Target, lines: Iterable[str]) -> int:
    """Post ``lines`` in batches; return how many were written."""
    count = 0
    it = iter(lines)
    while batch := list(islice(it, target.batch_lines)):
        body = "\n".join(batch).encode()
        for attempt in range(RETRIES + 1):
            try:
                resp = client.post(
                    f"{target.url}/write",
                    params={"db": target.database, "rp": target.policy, "precision": "ms"},
                    content=body,
                )
            except httpx.TransportError as err:
                if attempt == RETRIES:
                    raise WriteError(f"write failed {RETRIES + 1} times: {err}") from err
                time.sleep(RETRY_PAUSE_S)
                continue
            if resp.status_code == 204:
                break
            if resp.status_code < 500 or attempt == RETRIES:
                raise WriteError(f"write refused: {resp.status_code} {resp.text[:300]}")
            time.sleep(RETRY_PAUSE_S)
        count += len(batch)
    return count


@dataclass(frozen=True, slots=True)
class _WorkerState:
    target: Target
    fleet: list[Device]
    origin_ms: int
    seed: int
    client: httpx.Client


# One worker process's state, set by _init (a pool initializer cannot return it).
_worker: list[_WorkerState] = []


def _init(target: Target, size: CitySize, origin_ms: int, seed: int) -> None:
    _worker.append(_WorkerState(target, devices(size), origin_ms, seed, httpx.Client(timeout=300)))


def _write_window(window: tuple[int, int]) -> int:
    w = _worker[0]
    lines = reading_lines(w.fleet, origin_ms=w.origin_ms, window=window, seed=w.seed)
    return post_lines(w.client, w.target, lines)


def expected_readings(fleet: list[Device], start_ms: int, end_ms: int) -> int:
    """About how many readings the fleet makes in the window (for the ETA)."""
    return sum((end_ms - start_ms) // d.every_ms + 1 for d in fleet)


@dataclass
class Progress:
    """Points written so far, printed to stderr every ``every_s`` seconds."""

    total: int
    every_s: float = 15.0
    written: int = 0

    def __post_init__(self) -> None:
        self.began = time.perf_counter()
        self._last = self.began

    def add(self, count: int, *, force: bool = False) -> None:
        """Count ``count`` more points; print if it is time."""
        self.written += count
        now = time.perf_counter()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        rate = self.written / max(now - self.began, 1e-9)
        left = max(self.total - self.written, 0) / max(rate, 1e-9)
        print(
            f"  {self.written:,} of ~{self.total:,} points, {rate:,.0f}/s, "
            f"{now - self.began:,.0f} s so far, ETA {left:,.0f} s",
            file=sys.stderr,
            flush=True,
        )

    def rate(self) -> float:
        """Points per second so far."""
        return self.written / max(time.perf_counter() - self.began, 1e-9)


def write_city(
    target: Target,
    size: CitySize,
    *,
    start_ms: int,
    end_ms: int,
    workers: int = 3,
    seed: int = 17,
    context: bool = True,
) -> tuple[int, float]:
    """Write the city's points from ``start_ms`` to ``end_ms``; return (points, seconds).

    ``context``: also the stages, hub, dead-letter and alert points of the window.
    """
    fleet = devices(size)
    windows = time_chunks(start_ms, end_ms)
    progress = Progress(total=expected_readings(fleet, start_ms, end_ms))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init, initargs=(target, size, start_ms, seed)) as pool:
        for count in pool.imap(_write_window, windows):
            progress.add(count)
    if context:
        with httpx.Client(timeout=300) as client:
            progress.add(
                post_lines(
                    client,
                    target,
                    context_lines(fleet, start_ms=start_ms, end_ms=end_ms, seed=seed),
                )
            )
    progress.add(0, force=True)
    return progress.written, time.perf_counter() - progress.began
