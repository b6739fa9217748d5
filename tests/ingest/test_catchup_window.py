"""The writer catching up: a window of the WAL posted grouped by series, committed whole.

The same path against the real Mosquitto and InfluxDB, after an outage:
``test_influx_writer.py::test_influx_unreachable_then_back_loses_nothing[sorted-windows]``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_registry.directory import SnapshotDirectory
from hub.ingest.ingest_service import IngestService
from hub.ingest.line_protocol import series_batches
from hub.ingest.write_ahead_log import WriteAheadLog
from hub.settings import load_settings
from tests.ingest.conftest import InfluxV2StandIn, wait_until

SERIES = 10
ROUNDS = 60
BATCH = 50
WINDOW = 250


def _series(line: bytes) -> bytes:
    return line.split(b" ", 1)[0]


def _time(line: bytes) -> int:
    return int(line.rsplit(b" ", 1)[1])


# -- series_batches, alone -----------------------------------------------------------
@given(
    keys=st.lists(st.integers(0, 6), max_size=80),
    records=st.integers(1, 7),
    batch=st.integers(1, 30),
)
def test_series_batches_keep_every_line_once_and_each_series_in_order(
    keys: list[int], records: int, batch: int
) -> None:
    lines = [f"m,device_id=d{k} x={i} {i}".encode() for i, k in enumerate(keys)]
    chunks = [b"\n".join(lines[i::records]) for i in range(records) if lines[i::records]]
    bodies = list(series_batches(chunks, batch))
    out = [line for body in bodies for line in body.split(b"\n") if body]
    assert Counter(out) == Counter(lines)
    # Grouped: each series' lines are adjacent, and in the order the WAL held them.
    in_wal_order = [line for chunk in chunks for line in chunk.split(b"\n")]
    for key in {_series(line) for line in lines}:
        positions = [i for i, line in enumerate(out) if _series(line) == key]
        assert positions == list(range(positions[0], positions[0] + len(positions)))
        assert [out[i] for i in positions] == [x for x in in_wal_order if _series(x) == key]
    if lines:
        sizes = [body.count(b"\n") + 1 for body in bodies]
        assert len(bodies) == max(1, round(len(lines) / batch))
        assert max(sizes) - min(sizes) <= 1  # near-equal: no sliver at the end


def test_series_batches_of_nothing_is_nothing() -> None:
    assert list(series_batches([], 5000)) == []


# -- the writer against a recording stand-in ------------------------------------------
BacklogFactory = Callable[..., tuple[IngestService, list[bytes]]]


@pytest.fixture
def backlog_service(tmp_path: Path, v2_stand_in: InfluxV2StandIn) -> Iterator[BacklogFactory]:
    """Services whose WAL holds ROUNDS rounds of SERIES gauges (one record per round)
    and whose InfluxDB is the STAND-IN (v1 /write), with only the writer to run."""
    made: list[IngestService] = []

    def make(catchup_sort_lines: int = WINDOW) -> tuple[IngestService, list[bytes]]:
        settings = load_settings(
            None,
            state_dir=tmp_path,
            mqtt={"password": "unused"},
            influx={"url": f"http://127.0.0.1:{v2_stand_in.port}"},
            ingest={
                "batch_lines": BATCH,
                "catchup_sort_lines": catchup_sort_lines,
                "batch_interval_s": 0.2,
            },
        )
        svc = IngestService(settings, "unused", directory=SnapshotDirectory([]))
        svc.wal = WriteAheadLog(tmp_path / "wal")
        made.append(svc)
        lines: list[bytes] = []
        for r in range(ROUNDS):
            record = [
                f"flood,device_id=g{s} level_m={r}.5 {1000 + r}".encode() for s in range(SERIES)
            ]
            svc.wal.append(b"\n".join(record))
            lines.extend(record)
        svc.wal.sync()
        return svc, lines

    yield make
    for svc in made:
        svc._stop_writer.set()
        if svc.wal is not None:
            svc.wal.close()


def _run_writer(svc: IngestService) -> threading.Thread:
    thread = threading.Thread(target=svc._writer_loop, daemon=True)
    thread.start()
    return thread


def _drain(svc: IngestService, stand_in: InfluxV2StandIn) -> list[list[bytes]]:
    """Run the writer until it has committed the whole WAL; the bodies it posted, as lines."""
    wal = svc.wal
    assert wal is not None
    writer = _run_writer(svc)
    wait_until(lambda: svc._committed == wal.durable, what="the whole WAL committed")
    svc._stop_writer.set()
    writer.join(5)
    return [r.body.split(b"\n") for r in stand_in.requests]


def test_a_backlog_goes_out_grouped_by_series_each_line_once(
    backlog_service: BacklogFactory, v2_stand_in: InfluxV2StandIn
) -> None:
    svc, lines = backlog_service()
    bodies = _drain(svc, v2_stand_in)
    posted = [line for body in bodies for line in body]
    assert Counter(posted) == Counter(lines)  # every line once: nothing lost, no re-post
    assert svc.stats.lines_written == len(lines)
    # The WAL held many batches: bodies of about BATCH lines, each grouped by series.
    assert len(bodies) == len(lines) // BATCH
    for body in bodies:
        assert len(body) == BATCH
        keys = [_series(x) for x in body]
        assert keys == sorted(keys)
        assert len(set(keys)) < len(keys) / 2  # several points of a series in one body
    for s in range(SERIES):
        key = f"flood,device_id=g{s}".encode()
        times = [_time(x) for x in posted if _series(x) == key]
        assert times == sorted(times)  # each series still in time order


def test_a_window_cut_short_by_a_failure_stays_in_the_wal(
    backlog_service: BacklogFactory, v2_stand_in: InfluxV2StandIn
) -> None:
    svc, lines = backlog_service()
    wal = svc.wal
    assert wal is not None
    start = wal.first_position()
    # Three bodies of the window pass; then InfluxDB fails until the hub stops.
    v2_stand_in.answers = [204, 204, 204] + [503] * 10_000
    writer = _run_writer(svc)
    wait_until(lambda: svc.stats.write_retries >= 1, what="a failing write")
    assert svc.stats.lines_written == 3 * BATCH
    svc._stop_writer.set()
    writer.join(10)
    assert not writer.is_alive()
    # Three bodies reached InfluxDB, yet the window is not committed: a restart posts
    # all of it again (points are idempotent), so none of it can be lost.
    assert svc._committed == start
    assert wal.bytes_after(start) >= sum(len(line) for line in lines)


def test_with_the_window_off_a_backlog_goes_out_in_wal_order(
    backlog_service: BacklogFactory, v2_stand_in: InfluxV2StandIn
) -> None:
    svc, lines = backlog_service(catchup_sort_lines=0)
    posted = [line for body in _drain(svc, v2_stand_in) for line in body]
    assert posted == lines
