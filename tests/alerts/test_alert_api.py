"""The alerts' JSON API over real HTTP: list, show, ack, resolve; hub and registry tokens."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_registry.api_tokens import create_token, revoke_token
from device_registry.database import RegistryDatabase, open_database
from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.alert_api import ApiAuth, answer
from hub.alerts.alert_runtime import ack_server
from hub.alerts.alert_store import AlertStore
from hub.alerts.clock import ManualClock
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import parse_rules
from hub.ingest.wal_consumers import Reading
from hub.ingest.write_ahead_log import WalPosition
from tests.conftest import free_port

T0 = 1_795_000_000_000
HUB_TOKEN = "hub-api-secret"


@dataclass
class Api:
    """The alert HTTP server on a free port, over a store holding two firing alerts."""

    base: str
    store: AlertStore
    registry: RegistryDatabase
    client: httpx.Client

    def call(self, method: str, path: str, token: str | None = HUB_TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.client.request(method, f"{self.base}{path}", headers=headers)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    database = tmp_path / "alerts.sqlite3"
    defaults, rules = parse_rules(
        "rules: [{id: high, kind: threshold, metric: level_m, above: 3}]", "r"
    )
    gauges = [DeviceRecord(device_id=g, family="flood", device_type="t") for g in ("g1", "g2")]
    engine = RuleEngine([(defaults, r) for r in rules], SnapshotDirectory(gauges), ManualClock(T0))
    store = AlertStore(database)
    for offset, gauge in enumerate(("g1", "g2"), start=1):
        events = engine.on_reading(Reading(gauge, "flood", "telemetry", {}, {"level_m": 3.5}, T0))
        store.apply(events, engine.take_dirty(), WalPosition(1, offset), None, T0)
    registry = open_database(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    port = free_port()
    server = ack_server(
        "127.0.0.1",
        port,
        database,
        None,
        ManualClock(T0 + 5000),
        auth=ApiAuth(HUB_TOKEN, registry),
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client(timeout=10) as client:
            yield Api(f"http://127.0.0.1:{port}/alerts/api/v1/alerts", store, registry, client)
    finally:
        server.shutdown()
        server.server_close()
        store.close()
        registry.engine.dispose()


def test_list_show_ack_resolve_with_the_hub_token(api: Api) -> None:
    listed = api.call("GET", "")
    assert listed.status_code == 200
    assert sorted(a["key"] for a in listed.json()["alerts"]) == ["high|g1", "high|g2"]
    shown = api.call("GET", "/high%7Cg1")
    assert shown.status_code == 200
    assert shown.json()["alert"]["state"] == "firing"
    assert [e["kind"] for e in shown.json()["events"]] == ["raise"]
    acked = api.call("POST", "/high%7Cg1/ack")
    assert acked.status_code == 200
    assert acked.json()["alert"]["acked_by"] == "api"
    assert api.store.alert("high|g1").acked_ms == T0 + 5000
    again = api.call("POST", "/high%7Cg1/ack")
    assert again.status_code == 409
    assert "already acknowledged" in again.json()["error"]
    resolved = api.call("POST", "/high%7Cg1/resolve")
    assert (resolved.status_code, resolved.json()["alert"]["state"]) == (200, "resolved")
    twice = api.call("POST", "/high%7Cg1/resolve")
    assert twice.status_code == 409
    assert "already resolved" in twice.json()["error"]
    assert api.call("POST", "/high%7Cg1/ack").status_code == 409
    # Open alerts by default; ?state=all shows the resolved one too.
    assert [a["key"] for a in api.call("GET", "").json()["alerts"]] == ["high|g2"]
    assert len(api.call("GET", "?state=all").json()["alerts"]) == 2
    assert api.call("GET", "?state=open").status_code == 400


def test_unknown_alert_and_path_are_404_in_json(api: Api) -> None:
    missing = api.call("POST", "/high%7Cnope/ack")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no alert 'high|nope'"}
    assert api.call("GET", "/high%7Cg1/silence").status_code == 404
    assert api.call("GET", "/high%7Cg1/ack").status_code == 405


def test_tokens_are_checked_and_roles_limit_what_they_may_do(api: Api) -> None:
    no_token = api.call("GET", "", token=None)
    assert no_token.status_code == 401
    assert no_token.headers["WWW-Authenticate"] == "Bearer"
    assert "missing bearer token" in no_token.json()["error"]
    assert api.call("GET", "", token="khr_made_up").status_code == 401
    assert api.call("GET", "", token="hub-api-secreT").status_code == 401
    technician = create_token(api.registry, name="budi", role="technician", actor="test")
    viewer = create_token(api.registry, name="wali", role="viewer", actor="test")
    gateway = create_token(api.registry, name="gw", role="gateway", actor="test", gateway_id="gw-1")
    # A viewer reads but may not act; a gateway token may do neither.
    assert api.call("GET", "", token=viewer.token).status_code == 200
    refused = api.call("POST", "/high%7Cg2/ack", token=viewer.token)
    assert refused.status_code == 403
    assert "may not acknowledge" in refused.json()["error"]
    assert api.call("GET", "", token=gateway.token).status_code == 403
    assert api.store.alert("high|g2").acked_ms is None
    done = api.call("POST", "/high%7Cg2/ack", token=technician.token)
    assert done.status_code == 200
    assert done.json()["alert"]["acked_by"] == f"token:{technician.id}:budi"
    revoke_token(api.registry, technician.id, actor="test")
    assert api.call("GET", "", token=technician.token).status_code == 401


STATUSES = {200, 400, 401, 403, 404, 405, 409}


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "get", ""]),
    path=st.one_of(
        st.text(max_size=80).map(lambda t: "/alerts/api/v1/alerts" + t),
        st.text(max_size=80),
    ),
    authorization=st.one_of(
        st.none(),
        st.text(max_size=60),
        st.sampled_from([f"Bearer {HUB_TOKEN}", "Bearer ", "bearer x", "Basic Zm9v"]),
    ),
)
def test_any_request_gets_a_json_answer_never_an_exception(
    api: Api, tmp_path: Path, method: str, path: str, authorization: str | None
) -> None:
    status, body = answer(
        method,
        path,
        authorization,
        auth=ApiAuth(HUB_TOKEN, api.registry),
        database=tmp_path / "alerts.sqlite3",
        clock=ManualClock(T0 + 5000),
    )
    assert status in STATUSES
    assert ("error" in body) == (status != 200)


@pytest.mark.parametrize("length", ["abc", "-1", str(10**12)])
def test_a_hostile_content_length_is_refused_and_the_server_goes_on(api: Api, length: str) -> None:
    host_port = api.base.split("/")[2]
    host, port = host_port.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(
            f"POST /alerts/api/v1/alerts/x/ack HTTP/1.1\r\nHost: {host_port}\r\n"
            f"Authorization: Bearer {HUB_TOKEN}\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        reply = raw.recv(4096).decode(errors="replace")
    assert reply.startswith("HTTP/1.0 413") or reply.startswith("HTTP/1.1 413"), reply
    assert api.call("GET", "").status_code == 200
