"""The one-tap link endpoint over real HTTP: GET shows a button, POST acknowledges once."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.ack_links import LinkSigner
from hub.alerts.alert_runtime import ack_server
from hub.alerts.alert_store import AlertStore
from hub.alerts.clock import ManualClock
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import parse_rules
from hub.ingest.wal_consumers import Reading
from hub.ingest.write_ahead_log import WalPosition
from tests.conftest import free_port

T0 = 1_795_000_000_000


def test_link_page_then_acknowledge_once_and_refuse_forgeries(tmp_path: Path) -> None:
    database = tmp_path / "alerts.sqlite3"
    defaults, rules = parse_rules(
        "rules: [{id: high, kind: threshold, metric: level_m, above: 3}]", "r"
    )
    gauge = DeviceRecord(device_id="g1", family="flood", device_type="t")
    engine = RuleEngine([(defaults, r) for r in rules], SnapshotDirectory([gauge]), ManualClock(T0))
    store = AlertStore(database)
    events = engine.on_reading(Reading("g1", "flood", "telemetry", {}, {"level_m": 3.5}, T0))
    store.apply(events, engine.take_dirty(), WalPosition(1, 1), None, T0)
    clock = ManualClock(T0 + 1000)
    signer = LinkSigner(b"city-secret", ttl_ms=3_600_000)
    port = free_port()
    server = ack_server("127.0.0.1", port, database, signer, clock)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        token = signer.token("high|g1", 1, clock.now_ms())
        url = f"http://127.0.0.1:{port}/alerts/ack?t={token}"
        with httpx.Client(timeout=10) as client:
            page = client.get(url)  # a mail scanner's fetch acknowledges nothing
            assert page.status_code == 200
            assert "<button" in page.text
            assert store.alert("high|g1").acked_ms is None
            done = client.post(url)
            assert (done.status_code, "Acknowledged" in done.text) == (200, True)
            assert store.alert("high|g1").acked_by == "link"
            again = client.post(url)
            assert again.status_code == 403
            assert "used already" in again.text
            forged = client.post(url[:-3] + "AAA")
            assert forged.status_code == 403
            assert "not valid" in forged.text
            clock.advance(3601)
            late = signer.token("high|g1", 1, T0)
            expired = client.get(f"http://127.0.0.1:{port}/alerts/ack?t={late}")
            assert expired.status_code == 403
            assert "expired" in expired.text
            assert client.get(f"http://127.0.0.1:{port}/other").status_code == 404
    finally:
        server.shutdown()
        server.server_close()
        store.close()
