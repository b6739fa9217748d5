"""The seam after decoding: WAL consumers besides InfluxDB, their positions and releases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.ingest import IngestService, StatusChange
from hub.ingest.busy_meter import BusyMeter
from hub.ingest.line_protocol import format_line
from hub.ingest.wal_consumers import (
    INFLUX_CURSOR,
    INGEST_BACKLOG_BYTES,
    INTAKE_BUSY_SHARE,
    Reading,
    StreamItem,
    WalCursors,
    decode_records,
    parse_line,
    run_consumer,
)
from hub.ingest.write_ahead_log import WalPosition, WriteAheadLog
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, level_points, payload, wait_until


class RecordingConsumer:
    """A consumer that keeps what it got and, while ``failing`` is set, refuses batches."""

    def __init__(self, name: str = "recorder", start: WalPosition | None = None) -> None:
        self.name = name
        self.items: list[StreamItem] = []
        self.failing = threading.Event()
        self.ticks = 0
        self.committed: WalPosition | None = None
        self._start = start

    def start_position(self, first: WalPosition, durable: WalPosition) -> WalPosition:
        start = self._start
        return start if start is not None and first <= start <= durable else first

    def wanted(self) -> frozenset[str] | None:
        return frozenset({"flood", "flood_event", "device_status"})

    def consume(self, items: Sequence[StreamItem], end: WalPosition) -> None:
        if self.failing.is_set():
            raise RuntimeError("evaluation failed (test)")
        self.items.extend(items)
        self.committed = end

    def tick(self) -> None:
        self.ticks += 1

    def readings(self) -> list[Reading]:
        return [item for item in self.items if isinstance(item, Reading)]


# -- line protocol back to typed values ---------------------------------------------------
TAG_TEXT = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\\"),
    min_size=1,
    max_size=20,
)
FIELD_TEXT = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), max_size=30)
FIELD_VALUES = (
    st.floats(allow_nan=False, allow_infinity=False) | st.booleans() | FIELD_TEXT.map(str)
)


@settings(max_examples=300, deadline=None)
@given(
    tags=st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True), TAG_TEXT),
    fields=st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), FIELD_VALUES, min_size=1
    ),
    time_ms=st.integers(min_value=0, max_value=10**15),
)
def test_lines_read_back_as_written(
    tags: dict[str, str], fields: dict[str, float | bool | str], time_ms: int
) -> None:
    line = format_line("flood", tags, fields, time_ms)
    measurement, got_tags, got_fields, got_time = parse_line(line)
    assert measurement == "flood"
    assert got_tags == tags
    assert got_fields == fields
    assert all(type(got_fields[k]) is type(v) for k, v in fields.items())
    assert got_time == time_ms


def test_integer_fields_status_lines_and_hub_points() -> None:
    change = StatusChange("g1", "flood", False, "silent", 1000, (("device_id", "g1"),))
    records = [
        b"flood,device_id=g1,family=flood,kecamatan=Semarang\\ Timur level_m=1.5,count_i=7i 10",
        b"flood_event,device_id=g1,family=flood tamper=true 11\n" + change.line().encode(),
        b"hub,hub=h1 messages_in_per_s=3.0 12\nalert,device_id=g1 stage=2i 13",
        b"atcs,device_id=a1,family=atcs flash=true 14",
    ]
    errors: list[str] = []
    items = decode_records(
        records, frozenset({"flood", "flood_event", "device_status"}), errors.append
    )
    assert errors == []
    first, event, status = items
    assert first == Reading(
        "g1",
        "flood",
        "telemetry",
        {"device_id": "g1", "family": "flood", "kecamatan": "Semarang Timur"},
        {"level_m": 1.5, "count_i": 7},
        10,
    )
    assert isinstance(event, Reading)
    assert event.kind == "event"
    assert event.metrics == {"tamper": True}
    assert isinstance(status, StatusChange)
    assert (status.device_id, status.online, status.reason, status.time_ms) == (
        "g1",
        False,
        "silent",
        1000,
    )
    # Everything, the hub's own points left out; a broken line is reported, not raised.
    every = decode_records([*records, b"flood,device_id=g1 level_m= 9"], None, errors.append)
    assert len(every) == 4
    assert len(errors) == 1


# -- positions and releases ----------------------------------------------------------------
def _filled_wal(tmp_path: Path, segments: int) -> WriteAheadLog:
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=4096, max_bytes=64 * 1024)
    body = b"flood,device_id=g1,family=flood level_m=1.0 " + b"1" * 13
    while wal.segment_count <= segments:
        wal.append(b"\n".join([body] * 40))
        wal.sync()
    return wal


def test_release_waits_for_the_slowest_consumer(tmp_path: Path) -> None:
    wal = _filled_wal(tmp_path, 4)
    try:
        cursors = WalCursors(wal, hold_fill=0.9)
        cursors.register(INFLUX_CURSOR, wal.first_position(), essential=True)
        cursors.register("alerts", wal.first_position())
        before = wal.segment_count
        assert cursors.commit(INFLUX_CURSOR, wal.durable) == 0  # alerts holds everything
        assert wal.segment_count == before
        assert cursors.commit("alerts", WalPosition(wal.first_position().segment + 2, 0)) == 2
        assert cursors.commit("alerts", wal.durable) >= 1
        assert cursors.lowest() == wal.durable
    finally:
        wal.close()


def test_a_lagging_consumer_is_overtaken_beyond_what_the_log_holds_for_it(tmp_path: Path) -> None:
    wal = _filled_wal(tmp_path, 4)
    try:
        # The log is past hold_fill: the consumer no longer holds InfluxDB's releases back.
        cursors = WalCursors(wal, hold_fill=wal.fill / 2)
        cursors.register(INFLUX_CURSOR, wal.first_position(), essential=True)
        consumer = RecordingConsumer("alerts")
        cursors.register("alerts", wal.first_position())
        assert cursors.commit(INFLUX_CURSOR, wal.durable) >= 3
        wal.append(b"flood,device_id=g1,family=flood level_m=2.0 5")
        wal.sync()
        stop = threading.Event()
        thread = threading.Thread(
            target=run_consumer, args=(wal, cursors, consumer, stop, lambda: None), daemon=True
        )
        thread.start()
        wait_until(lambda: cursors.position("alerts") == wal.durable, what="consumer at the end")
        stop.set()
        thread.join(5)
        _behind, skipped, parse_errors = cursors.figures()["alerts"]
        assert skipped >= 3
        assert parse_errors == 0
        assert [r.metrics for r in consumer.readings()] == [{"level_m": 2.0}]  # what is left
    finally:
        wal.close()


# -- in a running hub ----------------------------------------------------------------------
def _start(hubs: HubFactory, *consumers: RecordingConsumer) -> IngestService:
    service = IngestService(hubs.settings(), hubs.stack.mqtt_password)
    for consumer in consumers:
        service.add_consumer(consumer)
    service.start()
    hubs.hubs.append(service)
    return service


def test_consumer_gets_typed_readings_and_status_changes(
    hubs: HubFactory, mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    consumer = RecordingConsumer()
    _start(hubs, consumer)
    client = mqtt_client()
    now = time.time_ns() // 1_000_000
    client.publish(f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 2, "count_i": 3}, ts=now))
    client.publish(f"kota/v1/dev/{gauge}/event", payload({"tamper": True}, ts=now + 1))
    client.publish(f"kota/v1/dev/{gauge}/status", '{"online": false, "reason": "bye"}')
    wait_until(lambda: len(consumer.items) >= 4, what="readings and status changes")
    readings = consumer.readings()
    assert [(r.kind, r.metrics, r.time_ms) for r in readings] == [
        ("telemetry", {"level_m": 2.0, "count_i": 3}, now),
        ("event", {"tamper": True}, now + 1),
    ]
    assert type(readings[0].metrics["level_m"]) is float
    assert readings[0].tags["kecamatan"] == "Semarang Timur"
    changes = [item for item in consumer.items if isinstance(item, StatusChange)]
    assert [(c.device_id, c.online, c.reason) for c in changes] == [
        (gauge, True, "data"),
        (gauge, False, "bye"),
    ]
    assert consumer.ticks > 0


def test_acked_but_unconsumed_readings_reach_the_consumer_after_restart(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    broken = RecordingConsumer()
    broken.failing.set()
    service = _start(hubs, broken)
    client = mqtt_client()
    now = time.time_ns() // 1_000_000
    for index in range(5):
        client.publish(
            f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": index}, ts=now + index)
        )
    # In InfluxDB, so acknowledged to the broker (which will not send them again) ...
    wait_until(lambda: level_points(running_stack, influx_db) == 5, what="points written")
    assert broken.readings() == []
    service.stop(drain_timeout_s=0.5)
    assert any((Path(service.wal_dir)).glob("*.wal")), "the WAL keeps what the consumer lacks"
    hubs.hubs.remove(service)
    # ... and the next start hands them to the consumer from the WAL.
    healthy = RecordingConsumer(start=broken.committed)
    restarted = _start(hubs, healthy)
    wait_until(lambda: len(healthy.readings()) >= 5, what="replayed readings")
    assert [r.metrics["level_m"] for r in healthy.readings()] == [0.0, 1.0, 2.0, 3.0, 4.0]
    # Now every consumer has it all: a clean stop leaves nothing to replay.
    restarted.stop()
    hubs.hubs.remove(restarted)
    assert not any(Path(restarted.wal_dir).glob("*.wal"))
    assert level_points(running_stack, influx_db) == 5


def test_a_consumer_that_yields_to_ingest_still_reads_everything(tmp_path: Path) -> None:
    wal = _filled_wal(tmp_path, 3)
    try:
        records, _end = wal.read(wal.first_position(), 1 << 30)
        lines = sum(r.count(b"\n") + 1 for r in records)
        cursors = WalCursors(wal, hold_fill=0.9)
        cursors.register("alerts", wal.first_position())
        consumer = RecordingConsumer("alerts")
        stop = threading.Event()
        thread = threading.Thread(
            target=run_consumer,
            args=(wal, cursors, consumer, stop, lambda: None),
            kwargs={"pressure": lambda: True},  # ingest under pressure all along
            daemon=True,
        )
        thread.start()
        wait_until(lambda: cursors.position("alerts") == wal.durable, what="all of it read")
        stop.set()
        thread.join(5)
        assert len(consumer.readings()) == lines > 0
    finally:
        wal.close()


class RawRecorder(RecordingConsumer):
    """A consumer of raw records, as the alert engine's process is (its work elsewhere)."""

    def __init__(self) -> None:
        super().__init__("alerts")
        self.records: list[bytes] = []

    def resume_position(
        self, committed: WalPosition, first: WalPosition, durable: WalPosition
    ) -> WalPosition:
        return committed

    def consume_records(
        self, records: list[bytes], end: WalPosition, on_error: Callable[[str], None]
    ) -> None:
        self.records.extend(records)
        self.committed = end


class CountedStop(threading.Event):
    """The loop's stop event, counting the waits a yielding consumer makes on it."""

    def __init__(self) -> None:
        super().__init__()
        self.yields = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.yields += 1
        return super().wait(timeout)


def _run_raw(
    wal: WriteAheadLog, ingest_lag: int, intake_busy: float = 0.0
) -> tuple[RawRecorder, CountedStop]:
    cursors = WalCursors(wal, hold_fill=0.9)
    cursors.register("alerts", wal.first_position())
    consumer = RawRecorder()
    stop = CountedStop()
    thread = threading.Thread(
        target=run_consumer,
        args=(wal, cursors, consumer, stop, lambda: None),
        # The InfluxDB writer fills its batches (pressure) all along, as at a steady
        # 10,000 msg/s; how far behind it is decides.
        kwargs={
            "pressure": lambda: True,
            "ingest_lag": lambda: ingest_lag,
            "intake_busy": lambda: intake_busy,
        },
        daemon=True,
    )
    thread.start()
    wait_until(lambda: cursors.position("alerts") == wal.durable, what="all of it read")
    stop.set()
    thread.join(5)
    return consumer, stop


def test_a_raw_consumer_is_held_back_only_behind_a_real_ingest_backlog(tmp_path: Path) -> None:
    cases = (
        (INGEST_BACKLOG_BYTES, INTAKE_BUSY_SHARE, False),
        (INGEST_BACKLOG_BYTES + 1, 0.0, True),  # InfluxDB's writer behind
        (0, INTAKE_BUSY_SHARE + 0.01, True),  # the intake drains the broker's backlog
    )
    for index, (lag, busy, held_back) in enumerate(cases):
        wal = _filled_wal(tmp_path / str(index), 3)
        try:
            records, _end = wal.read(wal.first_position(), 1 << 30)
            consumer, stop = _run_raw(wal, ingest_lag=lag, intake_busy=busy)
            assert consumer.records == records  # held back or not, it reads everything
            assert (stop.yields > 0) is held_back
        finally:
            wal.close()


@given(st.lists(st.floats(min_value=0, max_value=0.1), max_size=30))
def test_the_busy_meter_reports_the_last_windows_share(works: list[float]) -> None:
    now = [0.0]
    meter = BusyMeter(window_s=1.0, clock=lambda: now[0])
    for seconds in works:
        meter.add(seconds)
    assert meter.share() == 0.0  # the first window has not ended
    now[0] = 4.0
    assert meter.share() == pytest.approx(sum(works) / 4.0)
    now[0] = 4.5  # within the next window: still the last whole one's share
    meter.add(0.3)
    assert meter.share() == pytest.approx(sum(works) / 4.0)
    now[0] = 6.0
    assert meter.share() == pytest.approx(0.3 / 2.0)
