"""Fixtures for hub ingest tests: device lists, hub settings, a running in-process hub."""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_registry.directory import DeviceRecord, save_device_file
from drivers.flood.metrics import FLOOD_METRICS
from hub.ingest import IngestService
from hub.settings import Settings, load_settings
from tests.conftest import RunningStack, free_port, own_stack

# The test gauges' type: the flood family's metrics, plus the short names tests send. The
# hub refuses (metric_not_in_type) any metric a device's type does not declare.
TEST_METRICS: dict[str, str] = {
    **{m.key: m.kind for m in FLOOD_METRICS},
    **dict.fromkeys(("x", "y", "a", "b", "n", "count", "flow_m3s"), "number"),
    **dict.fromkeys(("note", "s", "mode"), "string"),
    **dict.fromkeys(("on", "tamper", "done"), "boolean"),
    "count_i": "integer",
}


def device(device_id: str, **extra: Any) -> DeviceRecord:
    """A flood gauge with registry tags and TEST_METRICS as its schema, unless told otherwise."""
    fields: dict[str, Any] = {
        "family": "flood",
        "device_type": "vegapuls-c21",
        "tags": {"site": "Kali Banger", "kecamatan": "Semarang Timur", "team": "pompa-1"},
        "expected_interval_s": 60.0,
        "metrics": TEST_METRICS,
    }
    fields.update(extra)
    return DeviceRecord(device_id=device_id, **fields)


def hub_settings(
    base: Settings,
    tmp_path: Path,
    client_id: str,
    influx: dict[str, Any] | None = None,
    **ingest: Any,
) -> Settings:
    """Settings for one hub worker of a test: own client id, WAL and metrics port."""
    section: dict[str, Any] = {
        "client_id": client_id,
        "metrics_port": free_port(),
        "batch_interval_s": 0.2,
        "devices_file": str(tmp_path / "devices.json"),
        "wal_dir": str(tmp_path / "wal" / client_id),
    }
    section.update(ingest)
    data = base.model_dump(mode="python")
    data["ingest"] = section
    data["influx"].update(influx or {})
    return load_settings(None, **data)


def forget_session(stack: RunningStack, client_id: str) -> None:
    """Remove a hub's persistent session from the shared broker (clean start, expiry 0)."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
    )
    client.username_pw_set(stack.settings.mqtt.username, stack.mqtt_password)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    try:
        client.connect(stack.mqtt_host, stack.mqtt_port, clean_start=True, properties=props)
        client.loop_start()
        time.sleep(0.2)
        client.disconnect()
        client.loop_stop()
    except OSError:
        pass


def wait_until(check: Callable[[], bool], timeout_s: float = 15.0, what: str = "") -> None:
    """Poll ``check`` until true; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def count_points(stack: RunningStack, database: str, query: str) -> int:
    """Number of rows a query returns."""
    return len(stack.influx.rows(query, database=database))


def level_points(stack: RunningStack, database: str) -> int:
    """How many ``level_m`` points the ``flood`` measurement holds."""
    rows = stack.influx.rows("SELECT count(level_m) FROM flood", database=database)
    return int(rows[0]["count"]) if rows else 0


def payload(metrics: dict[str, Any], *, ts: int | str | None = None, seq: int | None = None) -> str:
    """A contract v1 payload."""
    body: dict[str, Any] = {"metrics": metrics}
    if ts is not None:
        body["ts"] = ts
    if seq is not None:
        body["seq"] = seq
    return json.dumps(body)


class HubFactory:
    """Starts in-process hubs for a test and stops them (and their sessions) afterwards."""

    def __init__(self, stack: RunningStack, base: Settings, tmp_path: Path, unique_id: str):
        self.stack, self.base, self.tmp_path, self.unique_id = stack, base, tmp_path, unique_id
        self.devices_path = tmp_path / "devices.json"
        self.hubs: list[IngestService] = []
        self.client_ids: set[str] = set()

    def devices(self, *records: DeviceRecord) -> None:
        """Write the device list the hubs read."""
        save_device_file(self.devices_path, records)

    def settings(
        self, name: str = "hub", influx: dict[str, Any] | None = None, **ingest: Any
    ) -> Settings:
        """Settings of a hub worker named ``name`` in this test."""
        client_id = f"{self.unique_id}-{name}"
        self.client_ids.add(client_id)
        return hub_settings(self.base, self.tmp_path, client_id, influx, **ingest)

    def start(
        self, name: str = "hub", influx: dict[str, Any] | None = None, **ingest: Any
    ) -> IngestService:
        """Start a hub worker and wait until it is subscribed."""
        if not self.devices_path.exists():
            self.devices()
        service = IngestService(self.settings(name, influx, **ingest), self.stack.mqtt_password)
        service.start()
        self.hubs.append(service)
        return service

    def stop_all(self) -> None:
        """Stop every hub still running and forget their broker sessions."""
        for service in self.hubs:
            service.stop()
        for client_id in self.client_ids:
            forget_session(self.stack, client_id)


@pytest.fixture
def hubs(
    running_stack: RunningStack, test_settings: Settings, tmp_path: Path, unique_id: str
) -> Iterator[HubFactory]:
    """Factory of in-process hub workers on the session broker and this test's database."""
    factory = HubFactory(running_stack, test_settings, tmp_path, unique_id)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="package")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A Mosquitto + InfluxDB of the ingest tests' own.

    A hub subscribes to every device topic, so on the session broker it would also see
    the retained statuses and traffic that other packages' tests leave behind (unknown
    devices, hence dead-letters) and counts would depend on test order.
    """
    with own_stack(tmp_path_factory, "ingest-stack") as stack:
        yield stack


@dataclass
class _Recorded:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    method: str = "POST"


@dataclass
class InfluxV2StandIn:
    """A STAND-IN for an InfluxDB write endpoint: v2's ``/api/v2/write`` (no InfluxDB 2.x
    can run here), or v1's ``/write`` where a test scripts the answers.

    It records each request and answers each write with the statuses queued in
    ``answers`` (then 204), so the test checks exactly what the hub sends; ``GET``s
    (``/ping``) are recorded too and always answered 204.
    """

    answers: list[int] = field(default_factory=list)
    requests: list[_Recorded] = field(default_factory=list)
    port: int = 0


@contextlib.contextmanager
def serve_stand_in(state: InfluxV2StandIn, port: int = 0) -> Iterator[InfluxV2StandIn]:
    """Serve ``state`` on ``port`` (0: a free one, written into ``state.port``)."""

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
            parts = urlsplit(self.path)
            headers = dict(self.headers.items())
            state.requests.append(
                _Recorded(parts.path, parse_qs(parts.query), headers, body, self.command)
            )

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            self._record()
            self._answer(state.answers.pop(0) if state.answers else 204)

        def do_GET(self) -> None:
            self._record()
            self._answer(204)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    state.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def v2_stand_in() -> Iterator[InfluxV2StandIn]:
    """Run the recording stand-in on a free port."""
    with serve_stand_in(InfluxV2StandIn()) as state:
        yield state
