"""Writing to InfluxDB: partial writes, outages, and the v2 API (against a stand-in)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from hub.ingest.influx_writer import InfluxLineWriter
from hub.settings import InfluxSettings
from tests.conftest import MqttClientFactory, RunningStack, free_port
from tests.ingest.conftest import (
    HubFactory,
    InfluxV2StandIn,
    device,
    level_points,
    payload,
    serve_stand_in,
    wait_until,
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_partial_write_dead_letters_bad_points_and_writes_the_rest(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    gauges = [f"{unique_id}-g{i}" for i in range(6)]
    hubs.devices(*(device(g) for g in gauges))
    influx = running_stack.settings.influx.url
    running_stack.influx.query(
        f'CREATE RETENTION POLICY "short" ON "{influx_db}" DURATION 1h REPLICATION 1'
    )
    # InfluxDB already holds level_m as a string; the hub has not seen it (it restarted).
    resp = httpx.post(
        f"{influx}/write",
        params={"db": influx_db, "rp": "short", "precision": "ms"},
        content=f'flood,device_id=someone level_m="high" {_now_ms() - 60_000}',
        timeout=5,
    )
    assert resp.status_code == 204
    service = hubs.start(batch_interval_s=1.0, influx={"retention_policy": "short"})
    watcher = mqtt_client()
    watcher.keep_only(unique_id)
    watcher.subscribe("kota/v1/hub/deadletter")
    publisher = mqtt_client()
    now = _now_ms()
    good = 0
    for i, gauge in enumerate(gauges):
        topic = f"kota/v1/dev/{gauge}/telemetry"
        for k in range(20):
            publisher.publish(topic, payload({"flow_m3s": float(k)}, ts=now - 10_000 + k))
            good += 1
        if i == 2:  # a number where InfluxDB has a string: field type conflict
            publisher.publish(topic, payload({"level_m": 1.5}, ts=now - 5000))
        if i == 4:  # within the hub's 7 days, beyond the 1 h retention policy
            publisher.publish(topic, payload({"flow_m3s": 9.0}, ts=now - 3 * 3600 * 1000))

    def flow_count() -> int:
        rows = running_stack.influx.rows(
            'SELECT count(flow_m3s) FROM "short".flood', database=influx_db
        )
        return int(rows[0]["count"]) if rows else 0

    wait_until(lambda: service.stats.refused_lines == 2, what="two refused lines")
    wait_until(lambda: flow_count() == good, what="all good points")
    reports = [json.loads(m.payload) for m in watcher.wait_for(2)]
    assert sorted(r["device"] for r in reports) == [gauges[2], gauges[4]]
    assert {r["reason"] for r in reports} == {"refused_by_influx"}
    details = " ".join(r["detail"] for r in reports)
    assert "field type conflict" in details
    assert "retention" in details

    def dead_devices() -> list[str]:
        rows = running_stack.influx.rows(
            'SELECT * FROM "short".deadletter GROUP BY device_id', database=influx_db
        )
        return sorted(str(r["device_id"]) for r in rows)

    wait_until(lambda: dead_devices() == [gauges[2], gauges[4]], what="deadletter points")
    assert service.stats.deadletters["refused_by_influx"] == 2


@pytest.mark.parametrize(
    "writer",
    [{}, {"batch_lines": 40, "catchup_sort_lines": 200}],
    ids=["batches", "sorted-windows"],
)
def test_influx_unreachable_then_back_loses_nothing(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    writer: dict[str, Any],
) -> None:
    """The backlog replays whole; with small windows it goes out grouped by series."""
    gauges = [f"{unique_id}-g{i}" for i in range(12)]
    hubs.devices(*(device(g) for g in gauges))
    dead = f"http://127.0.0.1:{free_port()}"
    first = hubs.start(influx={"url": dead}, **writer)
    publisher = mqtt_client()
    base = _now_ms() - 100_000
    rounds = 50
    for seq in range(rounds):
        for gauge in gauges:
            publisher.publish(
                f"kota/v1/dev/{gauge}/telemetry",
                payload({"level_m": seq / 10}, ts=base + seq, seq=seq),
            )
    expected = rounds * len(gauges)
    wait_until(lambda: first.stats.messages_acked == expected, what="every message acked")
    wait_until(lambda: first.stats.write_retries >= 2, what="retries against the dead port")
    assert first.stats.lines_written == 0
    first.stop()
    # The same worker (client id and WAL) comes back with InfluxDB reachable.
    second = hubs.start(**writer)
    wait_until(lambda: second.stats.lines_written >= expected, what="the WAL replayed")
    assert level_points(running_stack, influx_db) == expected  # each point once
    assert second.stats.refused_lines == 0
    if "batch_lines" in writer:  # the backlog went out as many sorted bodies, not one
        assert second.stats.batches >= expected // writer["batch_lines"] // 2
    assert second.wal is not None
    wait_until(lambda: second.wal is not None and second.wal.segment_count == 1, what="release")


def test_v2_api_request_shape_against_stand_in(v2_stand_in: InfluxV2StandIn) -> None:
    v2_stand_in.answers = [503, 500]
    settings = InfluxSettings(
        url=f"http://127.0.0.1:{v2_stand_in.port}",
        api="v2",
        org="semarang",
        bucket="kotahub/raw",
        token="s3cret-token",
    )
    retries: list[str] = []
    writer = InfluxLineWriter(
        settings, stop=threading.Event(), backoff_initial_s=0.01, on_retry=retries.append
    )
    lines = [b"flood,device_id=g1 level_m=1.5 1795000000000", b"flood,device_id=g2 x=true 1"]
    outcome = writer.write(lines)
    writer.close()
    assert outcome.lines == 2
    assert outcome.refused == []
    assert len(retries) == 2
    assert "HTTP 503" in retries[0]
    assert len(v2_stand_in.requests) == 3
    last = v2_stand_in.requests[-1]
    assert last.path == "/api/v2/write"
    assert last.query == {"org": ["semarang"], "bucket": ["kotahub/raw"], "precision": ["ms"]}
    assert last.headers["Authorization"] == "Token s3cret-token"
    assert last.headers["Content-Encoding"] == "gzip"
    assert last.headers["Content-Type"].startswith("text/plain")
    assert last.body == b"\n".join(lines)


def test_v1_request_carries_db_rp_and_basic_auth(v2_stand_in: InfluxV2StandIn) -> None:
    v2_stand_in.answers = [400, 204, 400]  # batch refused, first half fine, second line bad
    settings = InfluxSettings(
        url=f"http://127.0.0.1:{v2_stand_in.port}",
        database="kotahub",
        retention_policy="raw",
        username="writer",
        password="pw",
    )
    writer = InfluxLineWriter(settings, stop=threading.Event())
    outcome = writer.write([b"a x=1 1", b"b x=1 1"])
    writer.close()
    assert [r.line for r in outcome.refused] == [b"b x=1 1"]
    assert outcome.lines == 1
    first = v2_stand_in.requests[0]
    assert first.path == "/write"
    assert first.query == {"db": ["kotahub"], "precision": ["ms"], "rp": ["raw"]}
    assert first.headers["Authorization"].startswith("Basic ")


def test_wal_records_are_posted_whole_and_split_into_lines_only_when_refused(
    v2_stand_in: InfluxV2StandIn,
) -> None:
    # Whole body refused; then [a] ok, [b, c] refused, [b] refused (bad), [c] ok.
    v2_stand_in.answers = [400, 204, 400, 400, 204]
    settings = InfluxSettings(url=f"http://127.0.0.1:{v2_stand_in.port}", database="kotahub")
    writer = InfluxLineWriter(settings, stop=threading.Event())
    records = [b"a x=1 1\nb x=1 1", b"c x=1 1"]  # two WAL records, three lines
    outcome = writer.write(records)
    writer.close()
    assert [r.line for r in outcome.refused] == [b"b x=1 1"]
    assert outcome.lines == 2
    bodies = [r.body for r in v2_stand_in.requests]
    assert bodies == [
        b"a x=1 1\nb x=1 1\nc x=1 1",
        b"a x=1 1",
        b"b x=1 1\nc x=1 1",
        b"b x=1 1",
        b"c x=1 1",
    ]


def test_a_clean_batch_of_records_is_one_request_with_the_records_as_they_are(
    v2_stand_in: InfluxV2StandIn,
) -> None:
    settings = InfluxSettings(url=f"http://127.0.0.1:{v2_stand_in.port}", database="kotahub")
    writer = InfluxLineWriter(settings, stop=threading.Event())
    outcome = writer.write([b"a x=1 1\nb x=2 1", b"c x=3 1\nd x=4 1\ne x=5 1"])
    empty = writer.write([])
    writer.close()
    assert outcome.lines == 5
    assert outcome.requests == 1
    assert empty.lines == 0
    assert empty.requests == 0
    assert [r.body for r in v2_stand_in.requests] == [
        b"a x=1 1\nb x=2 1\nc x=3 1\nd x=4 1\ne x=5 1"
    ]


def test_after_refused_connections_the_writer_retries_when_influx_answers_ping() -> None:
    """InfluxDB down, then back: the write goes as soon as /ping answers, not after the
    backoff (30 s here, so waiting it out would fail the test's 10 s bound)."""
    port = free_port()
    settings = InfluxSettings(url=f"http://127.0.0.1:{port}", database="kotahub")
    retried = threading.Event()
    writer = InfluxLineWriter(
        settings, stop=threading.Event(), backoff_initial_s=30.0, on_retry=lambda _: retried.set()
    )
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(writer.write([b"a x=1 1"]).lines))
    thread.start()
    assert retried.wait(10), "the first attempt should fail: nothing listens yet"
    with serve_stand_in(InfluxV2StandIn(), port) as stand_in:
        began = time.monotonic()
        try:
            thread.join(10)
            assert not thread.is_alive(), "the writer waited out its backoff"
            assert time.monotonic() - began < 10
        finally:
            writer.close()
    assert result == [1]
    calls = [f"{r.method} {r.path}" for r in stand_in.requests]
    assert calls[0] == "GET /ping"
    assert calls[-1] == "POST /write"


def test_a_server_answering_errors_gets_the_backoff_and_no_ping(
    v2_stand_in: InfluxV2StandIn,
) -> None:
    v2_stand_in.answers = [503, 503]
    settings = InfluxSettings(url=f"http://127.0.0.1:{v2_stand_in.port}", database="kotahub")
    writer = InfluxLineWriter(settings, stop=threading.Event(), backoff_initial_s=0.3)
    began = time.monotonic()
    outcome = writer.write([b"a x=1 1"])
    writer.close()
    # 0.3 s then 0.6 s of backoff (less 20 % jitter at most): the waits were kept.
    assert time.monotonic() - began >= 0.7
    assert outcome.retries == 2
    assert [r.path for r in v2_stand_in.requests] == ["/write"] * 3  # the stand-in saw no GET
