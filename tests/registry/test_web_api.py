"""REST API on both databases: tokens and roles, problem details, bad input changes nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from device_registry.api_tokens import create_token
from device_registry.registry_service import RegistryService
from device_registry.schemas import (
    ROLES,
    DeviceQuery,
    DeviceTypeUpdate,
    DeviceUpdate,
    SiteUpdate,
    TeamUpdate,
)
from device_registry.web_api import create_app
from tests.registry.conftest import seed_catalog


@dataclass
class Api:
    """A test client, the service behind it and one token per role."""

    client: TestClient
    service: RegistryService
    tokens: dict[Any, str]

    def headers(self, role: str) -> dict[str, str]:
        """Authorization header for a role."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def state(self) -> tuple[int, int, int]:
        """Change counter, audit length and device count: all must stay put on bad input."""
        return (
            self.service.revision(),
            len(self.service.audit_log(limit=1000)),
            self.service.list_devices(DeviceQuery()).total,
        )


@pytest.fixture
def api(service: RegistryService) -> Iterator[Api]:
    seed_catalog(service)
    tokens = {
        role: create_token(service.database, name=f"{role}-t", role=role, actor="test").token
        for role in ROLES
    }
    with TestClient(create_app(service)) as client:
        yield Api(client, service, tokens)


def camera(device_id: str, **extra: object) -> dict[str, object]:
    return {
        "id": device_id,
        "device_type": "cctv-dome",
        "state": "active",
        "kota": "Semarang",
        "kecamatan": "Gayamsari",
        **extra,
    }


def routes(api: Api) -> list[tuple[str, str]]:
    found = []
    for route in api.client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, APIRoute):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            found += [(method, path) for method in route.methods or ()]
    return found


def test_every_route_needs_a_token_and_the_right_role(api: Api) -> None:
    all_routes = routes(api)
    assert len(all_routes) >= 25
    for method, path in all_routes:
        response = api.client.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
        bad = api.client.request(method, path, headers={"Authorization": "Bearer khr_nope"})
        assert bad.status_code == 401, (method, path)
    writes = [(m, p) for m, p in all_routes if m != "GET"]
    for method, path in writes:
        response = api.client.request(method, path, headers=api.headers("viewer"), json={})
        assert response.status_code == 403, (method, path)
    for method, path in [
        ("POST", "/api/v1/sites"),
        ("POST", "/api/v1/tokens"),
        ("POST", "/api/v1/devices/import"),
        ("PUT", "/api/v1/status"),
    ]:
        response = api.client.request(method, path, headers=api.headers("technician"), json={})
        assert response.status_code == 403, (method, path)
    audit = api.client.get("/api/v1/audit", headers=api.headers("provisioner"))
    assert audit.status_code == 403
    assert api.client.get("/docs").status_code == 200


def test_device_lifecycle_over_http(api: Api) -> None:
    tech = api.headers("technician")
    created = api.client.post("/api/v1/devices", json=camera("cam-1", serial="SN1"), headers=tech)
    assert created.status_code == 201, created.text
    assert created.json()["device"]["family"] == "cctv"
    listed = api.client.get(
        "/api/v1/devices",
        params={"family": "cctv", "kecamatan": "Gayamsari"},
        headers=api.headers("viewer"),
    )
    assert [d["id"] for d in listed.json()["items"]] == ["cam-1"]
    patched = api.client.patch("/api/v1/devices/cam-1", json={"state": "maintenance"}, headers=tech)
    assert patched.json()["device"]["state"] == "maintenance"
    replaced = api.client.post(
        "/api/v1/devices/cam-1/replace", json={"serial": "SN2"}, headers=tech
    )
    assert replaced.json()["device"]["serial"] == "SN2"
    history = api.client.get("/api/v1/devices/cam-1/history", headers=tech).json()
    assert [a["action"] for a in history["audit"]] == ["replace", "update", "create"]
    assert history["audit"][0]["actor"].endswith("technician-t")
    pushed = api.client.put(
        "/api/v1/status",
        json=[{"device_id": "cam-1", "online": True, "last_readings": {"online": True}}],
        headers=api.headers("provisioner"),
    )
    assert pushed.json() == {"stored": 1}
    status = api.client.get("/api/v1/devices/cam-1/status", headers=tech).json()
    assert status["online"] is True
    assert status["last_readings"] == {"online": True}
    assert (
        api.client.get("/api/v1/devices", params={"online": "true"}, headers=tech).json()["total"]
        == 1
    )
    retired = api.client.post("/api/v1/devices/cam-1/retire", json={"reason": "gone"}, headers=tech)
    assert retired.json()["state"] == "retired"
    me = api.client.get("/api/v1/me", headers=tech).json()
    assert me["role"] == "technician"
    assert "device.write" in me["permissions"]


BAD_INPUTS: list[tuple[str, str, object, int, str]] = [
    ("POST", "/api/v1/devices", {"id": "bad/id", "device_type": "cctv-dome"}, 422, "body.id"),
    ("POST", "/api/v1/devices", {"id": "c9", "device_type": "nope"}, 422, "device_type"),
    ("POST", "/api/v1/devices", camera("c9", latitude=200, longitude=1), 422, "body.latitude"),
    ("POST", "/api/v1/devices", camera("c9", rt="1"), 422, "body"),
    ("POST", "/api/v1/devices", camera("c9", colour="red"), 422, "body.colour"),
    ("POST", "/api/v1/devices", camera("c9", team_id="ghosts"), 422, "team_id"),
    ("POST", "/api/v1/devices", camera("cam-0"), 409, "id"),
    ("POST", "/api/v1/devices", "not json", 422, "body"),
    ("GET", "/api/v1/devices?limit=0", None, 422, "query.limit"),
    ("GET", "/api/v1/devices?state=broken", None, 422, "query.state"),
    ("GET", "/api/v1/devices?online=maybe", None, 422, "query.online"),
    ("GET", "/api/v1/devices/ghost", None, 404, "id"),
    ("PATCH", "/api/v1/devices/cam-0", {"state": "retired"}, 422, "body.state"),
    ("PATCH", "/api/v1/devices/cam-0", {"site_id": "nowhere"}, 422, "site_id"),
    ("PATCH", "/api/v1/devices/cam-0", {"gateway_id": "cam-0"}, 422, "gateway_id"),
    ("PATCH", "/api/v1/devices/cam-0", {"rw": "abc"}, 422, "body.rw"),
    ("PATCH", "/api/v1/devices/ghost", {"state": "active"}, 404, "id"),
    ("POST", "/api/v1/devices/ghost/retire", {}, 404, "id"),
    ("POST", "/api/v1/devices/cam-0/retire", {"why": "x"}, 422, "body.why"),
    ("POST", "/api/v1/devices/cam-0/replace", {"serial": ""}, 422, "body.serial"),
    ("POST", "/api/v1/devices/cam-0/rotate-credentials", None, 409, "id"),
    ("GET", "/api/v1/devices/ghost/status", None, 404, "id"),
    ("GET", "/api/v1/devices/ghost/history", None, 404, "id"),
    ("PUT", "/api/v1/status", [{"device_id": "ghost", "online": True}], 422, "[0].device_id"),
    ("PUT", "/api/v1/status", [{"device_id": "cam-0", "online": "perhaps"}], 422, "body.0.online"),
    ("POST", "/api/v1/devices/import?dry_run=false", "id,wrong\nx,y\n", 422, "body"),
    ("POST", "/api/v1/devices/import?format=xml", "", 422, "query.format"),
    ("POST", "/api/v1/devices/bulk", {"not": "a list"}, 422, "body"),
    ("GET", "/api/v1/devices/export?format=pdf", None, 422, "query.format"),
    (
        "POST",
        "/api/v1/device-types",
        {"name": "t", "family": "Bad Family", "protocol": "mqtt", "expected_interval_s": 60},
        422,
        "body.family",
    ),
    (
        "POST",
        "/api/v1/device-types",
        {"name": "t", "family": "x", "protocol": "mqtt", "expected_interval_s": -1},
        422,
        "body.expected_interval_s",
    ),
    (
        "POST",
        "/api/v1/device-types",
        {"name": "cctv-dome", "family": "cctv", "protocol": "onvif", "expected_interval_s": 60},
        409,
        "name",
    ),
    (
        "PATCH",
        "/api/v1/device-types/cctv-dome",
        {"metrics": [{"name": "Bad"}]},
        422,
        "body.metrics.0.name",
    ),
    ("GET", "/api/v1/device-types/ghost", None, 404, "id"),
    (
        "POST",
        "/api/v1/sites",
        {"id": "s1", "name": "x", "latitude": -100, "longitude": 0},
        422,
        "body.latitude",
    ),
    ("PATCH", "/api/v1/sites/ghost", {"name": "x"}, 404, "id"),
    ("GET", "/api/v1/sites/ghost", None, 404, "id"),
    (
        "POST",
        "/api/v1/teams",
        {"id": "t1", "name": "x", "contact_channels": [{"kind": "pigeon", "address": "x"}]},
        422,
        "body.contact_channels.0.kind",
    ),
    ("PATCH", "/api/v1/teams/dpu-drainage", {"name": None}, 422, "body.name"),
    ("GET", "/api/v1/teams/ghost", None, 404, "id"),
    ("POST", "/api/v1/tokens", {"name": "x", "role": "god"}, 422, "body.role"),
    ("DELETE", "/api/v1/tokens/ghost", None, 404, "id"),
    ("GET", "/api/v1/audit?limit=5000", None, 422, "query.limit"),
]


def test_bad_input_gets_a_problem_naming_the_field_and_changes_nothing(api: Api) -> None:
    admin = api.headers("admin")
    assert (
        api.client.post("/api/v1/devices", json=camera("cam-0"), headers=admin).status_code == 201
    )
    before = api.state()
    for method, path, body, status, field in BAD_INPUTS:
        kwargs: dict[str, object] = {}
        if isinstance(body, str):
            kwargs["content"] = body
            kwargs["headers"] = {**admin, "content-type": "application/json"}
        else:
            kwargs["json"] = body
            kwargs["headers"] = admin
        response = api.client.request(method, path, **kwargs)  # type: ignore[arg-type]
        where = f"{method} {path} {body!r}"
        assert response.status_code == status, f"{where}: {response.text}"
        assert response.headers["content-type"] == "application/problem+json", where
        problem = response.json()
        assert problem["status"] == status, where
        assert problem["title"], where
        assert problem["detail"], where
        assert problem["field"] == field, f"{where}: {problem}"
        assert api.state() == before, where


def test_import_and_export_over_http(api: Api) -> None:
    prov = api.headers("provisioner")
    csv_text = "id,device_type,kota,kecamatan\nc1,cctv-dome,Semarang,Tugu\nc2,nope,Semarang,Tugu\n"
    dry = api.client.post("/api/v1/devices/import", content=csv_text, headers=prov)
    report = dry.json()
    assert report["dry_run"] is True
    assert report["applied"] is False
    assert report["errors"] == [
        {"line": 3, "field": "device_type", "message": "unknown device type 'nope'"}
    ]
    assert api.service.list_devices(DeviceQuery()).total == 0
    strict = api.client.post(
        "/api/v1/devices/import?dry_run=false&all_or_nothing=true", content=csv_text, headers=prov
    ).json()
    assert strict["applied"] is False
    assert api.service.list_devices(DeviceQuery()).total == 0
    done = api.client.post(
        "/api/v1/devices/import?dry_run=false", content=csv_text, headers=prov
    ).json()
    assert done["applied"] is True
    assert done["created"] == 1
    exported = api.client.get("/api/v1/devices/export", params={"format": "geojson"}, headers=prov)
    features = exported.json()["features"]
    assert [f["properties"]["id"] for f in features] == ["c1"]
    bulk = api.client.post(
        "/api/v1/devices/bulk?dry_run=false",
        json=[
            camera("c3"),
            {"id": "c1", "device_type": "cctv-dome", "kota": "Semarang", "kecamatan": "Tugu"},
        ],
        headers=prov,
    ).json()
    assert (bulk["created"], bulk["updated"], bulk["unchanged"]) == (1, 0, 1)


# The NOT NULL columns of each update's table, written out here (not derived) so that the
# test also checks the schema derives them right.
NOT_CLEARABLE: dict[str, tuple[str, type[BaseModel], set[str]]] = {
    "site": ("/api/v1/sites/bkt-01", SiteUpdate, {"name", "address"}),
    "team": ("/api/v1/teams/dpu-drainage", TeamUpdate, {"name", "members", "contact_channels"}),
    "type": (
        "/api/v1/device-types/cctv-dome",
        DeviceTypeUpdate,
        {"expected_interval_s", "metrics", "description", "influx_tag_keys"},
    ),
    "device": (
        "/api/v1/devices/bare-1",
        DeviceUpdate,
        {"device_type", "owner_kind", "state", "tags", "driver_config"},
    ),
}


def test_null_is_refused_by_name_where_the_column_is_not_null(api: Api) -> None:
    admin = api.headers("admin")
    created = api.client.post(
        "/api/v1/devices", json={"id": "bare-1", "device_type": "cctv-dome"}, headers=admin
    )
    assert created.status_code == 201, created.text
    for path, model, not_null in NOT_CLEARABLE.values():
        assert model.not_clearable() == not_null  # type: ignore[attr-defined]
        before = api.client.get(path, headers=admin).json()
        counter = api.state()
        for name in sorted(not_null):
            response = api.client.patch(path, json={name: None}, headers=admin)
            assert response.status_code == 422, (path, name, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["field"] == f"body.{name}", response.text
            assert "cannot be cleared" in response.json()["detail"]
        assert api.state() == counter
        assert api.client.get(path, headers=admin).json() == before
        # Every other field may be cleared with null, and is.
        for name in sorted(set(model.model_fields) - not_null):
            response = api.client.patch(path, json={name: None}, headers=admin)
            assert response.status_code == 200, (path, name, response.text)
            body = response.json()
            assert body.get("device", body)[name] is None, (path, name)
