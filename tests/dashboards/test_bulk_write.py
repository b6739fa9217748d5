"""The query benchmark's bulk writer: every point arrives, in parallel, and a 5xx is retried."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import bench.bulk_write as bulk_write
from bench.bulk_write import Target, WriteError, post_lines, write_city
from dashboards.grafana.demo_points import CitySize, city_lines
from tests.conftest import RunningStack

HOUR_MS = 3_600_000


def test_parallel_hours_write_what_city_lines_makes(
    running_stack: RunningStack, influx_db: str
) -> None:
    size = CitySize(cameras=3, access_points=2, vehicles=2)
    start_ms = 1_700_000_000_000
    end_ms = start_ms + 3 * HOUR_MS
    target = Target(running_stack.settings.influx.url, influx_db, "autogen", batch_lines=700)
    written, _seconds = write_city(target, size, start_ms=start_ms, end_ms=end_ms, workers=2)
    lines = list(city_lines(size, start_ms=start_ms, end_ms=end_ms))
    assert written == len(lines)
    # Same values as the one-process generator, whichever worker made each hour.
    (series,) = running_stack.influx.query(
        'SELECT sum("fps_measured") FROM "cctv"', database=influx_db
    )
    expected = sum(
        float(part.split("=", 1)[1])
        for text in lines
        if text.startswith("cctv,") and "model=hikvision_ds2cd" in text
        for part in text.split(" ")[-2].split(",")
        if part.startswith("fps_measured=")
    )
    assert series.values[0][1] == pytest.approx(expected)


class _Flaky(BaseHTTPRequestHandler):
    """A recording HTTP stand-in for InfluxDB's /write: answers 500 to the first post."""

    bodies: list[bytes] = []
    answers: list[int] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append(body)
        status = type(self).answers.pop(0) if type(self).answers else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(bulk_write, "RETRY_PAUSE_S", 0.01)
    _Flaky.bodies, _Flaky.answers = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_busy_answer_is_posted_again(stand_in: str) -> None:
    _Flaky.answers = [500, 503]
    target = Target(stand_in, "db", "raw", batch_lines=2)
    with httpx.Client() as client:
        assert post_lines(client, target, ["a v=1 1", "a v=2 2", "a v=3 3"]) == 3
    assert _Flaky.bodies == [b"a v=1 1\na v=2 2"] * 3 + [b"a v=3 3"]


def test_a_refused_batch_stops_the_write(stand_in: str) -> None:
    _Flaky.answers = [400]
    target = Target(stand_in, "db", "raw")
    with httpx.Client() as client, pytest.raises(WriteError, match="400"):
        post_lines(client, target, ["bad line"])
    assert len(_Flaky.bodies) == 1
