"""Registry API limits (issue 12): body size, tags, reserved names, auth first, token expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import update

from device_registry.api_tokens import check_token, create_token, parse_duration
from device_registry.models import ApiToken
from device_registry.registry_service import RegistryService
from device_registry.schemas import ROLES, ROUTE_DEVICE_IDS
from device_registry.web_api import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_IMPORT_BYTES,
    DEFAULT_MAX_IMPORT_ROWS,
    MIB,
    create_app,
)
from tests.registry.conftest import seed_catalog
from tests.registry.test_cli import (  # noqa: F401 - fixtures used by name
    Cli,
    build_the_command_once,
    cli,
)
from tests.registry.test_web_api import Api, camera

SMALL_BODY = 4000
SMALL_IMPORT = 40_000


@pytest.fixture
def api(service: RegistryService) -> Iterator[Api]:
    """The API with small body limits, so that tests need no megabytes."""
    seed_catalog(service)
    tokens = {
        role: create_token(service.database, name=f"{role}-t", role=role, actor="test").token
        for role in ROLES
    }
    app = create_app(service, max_body_bytes=SMALL_BODY, max_import_bytes=SMALL_IMPORT)
    with TestClient(app) as client:
        yield Api(client, service, tokens)


def assert_problem(response: Any, status: int, *words: str) -> dict[str, Any]:
    """A problem-details answer with this status, whose detail holds every word."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    for word in words:
        assert word in body["detail"], body
    return body


# -- body size ------------------------------------------------------------------------------
def test_default_limits_are_one_and_ten_mib() -> None:
    assert (DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IMPORT_BYTES) == (MIB, 10 * MIB)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_default_app_refuses_a_body_over_one_mib(service: RegistryService) -> None:
    token = create_token(service.database, name="a", role="admin", actor="t").token
    with TestClient(create_app(service)) as client:
        big = b'{"id": "x", "device_type": "y", "vendor": "' + b"v" * MIB + b'"}'
        response = client.post(
            "/api/v1/devices",
            content=big,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    body = assert_problem(response, 413, str(MIB))
    assert body["field"] == "body"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_import_has_its_own_larger_limit(api: Api) -> None:
    headers = {**api.headers("admin"), "Content-Type": "text/csv"}
    rows = "".join(f"cam-{n:05d},cctv-dome\n" for n in range(1000))  # ~17 kB
    assert SMALL_BODY < len(rows) < SMALL_IMPORT
    fits = api.client.post(
        "/api/v1/devices/import", content="id,device_type\n" + rows, headers=headers
    )
    assert fits.status_code == 200, fits.text
    assert fits.json()["created"] == 1000
    too_big = api.client.post(
        "/api/v1/devices/import", content="id,device_type\n" + rows * 3, headers=headers
    )
    assert_problem(too_big, 413, str(SMALL_IMPORT))
    # Any other route keeps the small limit.
    small = api.client.post(
        "/api/v1/devices", json=camera("c-1", vendor="v" * SMALL_BODY), headers=api.headers("admin")
    )
    assert_problem(small, 413, str(SMALL_BODY))


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_import_is_bounded_in_rows_too(service: RegistryService) -> None:
    """Bytes alone do not bound memory (short rows): an import takes at most N rows."""
    seed_catalog(service)
    token = create_token(service.database, name="p", role="provisioner", actor="t").token
    headers = {"Authorization": f"Bearer {token}"}
    assert DEFAULT_MAX_IMPORT_ROWS == 20_000
    rows = "".join(f"cam-{n},cctv-dome\n" for n in range(51))
    with TestClient(create_app(service, max_import_rows=50)) as client:
        refused = client.post(
            "/api/v1/devices/import", content="id,device_type\n" + rows, headers=headers
        )
        assert_problem(refused, 422, "line 52", "more than 50 rows", "split the file")
        features = [
            {"type": "Feature", "geometry": None, "properties": {"id": f"c-{n}"}} for n in range(51)
        ]
        geo = client.post(
            "/api/v1/devices/import?format=geojson",
            json={"type": "FeatureCollection", "features": features},
            headers=headers,
        )
        assert_problem(geo, 422, "feature 51", "more than 50 rows")
        fits = client.post(
            "/api/v1/devices/import",
            content="id,device_type\n" + rows[: rows.index("cam-50")],
            headers=headers,
        )
        assert fits.status_code == 200, fits.text
        assert fits.json()["rows"] == 50


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_chunked_body_is_refused_while_it_arrives(service: RegistryService) -> None:
    """No Content-Length: the app stops pulling chunks at the one that passes the limit."""
    seed_catalog(service)
    token = create_token(service.database, name="p", role="provisioner", actor="t").token
    app = create_app(service, max_import_bytes=10_000)
    chunk = b"x" * 1000
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/devices/import",
        "raw_path": b"/api/v1/devices/import",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"host", b"t")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
    assert pulled == 11  # 11 kB read of the 1 MB offered, then refused


# -- authentication before the body -----------------------------------------------------------
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_authentication_comes_before_the_body(api: Api) -> None:
    bad_json = {"Content-Type": "application/json"}
    for path in ("/api/v1/devices", "/api/v1/devices/bulk", "/api/v1/device-types"):
        nobody = api.client.post(path, content=b"{not json", headers=bad_json)
        assert_problem(nobody, 401, "missing bearer token")
        stranger = api.client.post(
            path, content=b"{not json", headers={**bad_json, "Authorization": "Bearer khr_x_y"}
        )
        assert_problem(stranger, 401, "unknown or revoked")
        viewer = api.client.post(
            path, content=b"{not json", headers={**bad_json, **api.headers("viewer")}
        )
        assert_problem(viewer, 403, "viewer")
        admin = api.client.post(
            path, content=b"{not json", headers={**bad_json, **api.headers("admin")}
        )
        assert admin.status_code == 422, admin.text
    # Valid JSON of the wrong shape: 401 before the field errors, too.
    shape = api.client.patch("/api/v1/devices/x", json={"latitude": "north"})
    assert_problem(shape, 401)


# -- tags -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tags", "words"),
    [
        ({f"k{n}": "v" for n in range(33)}, ("33 tags", "at most 32")),
        ({"k" * 65: "v"}, ("1-64",)),
        ({"pole": "v" * 201}, ("at most 200",)),
        ({"path": "C:\\cams\\"}, ("backslash",)),
        ({"note": "two\nlines"}, ("newlines",)),
        ({"note": "cr\rhere"}, ("newlines",)),
    ],
)
def test_tags_are_bounded_and_storable_in_influxdb(
    api: Api, tags: dict[str, str], words: tuple[str, ...]
) -> None:
    admin = api.headers("admin")
    before = api.state()
    created = api.client.post("/api/v1/devices", json=camera("c-1", tags=tags), headers=admin)
    body = assert_problem(created, 422, *words)
    assert body["field"] == "body.tags"
    assert api.state() == before
    assert api.client.post("/api/v1/devices", json=camera("c-1"), headers=admin).status_code == 201
    patched = api.client.patch("/api/v1/devices/c-1", json={"tags": tags}, headers=admin)
    assert_problem(patched, 422, *words)
    fine = api.client.post(
        "/api/v1/devices",
        json=camera("c-2", tags={f"k{n}": "v\\w" for n in range(32)}),
        headers=admin,
    )
    assert fine.status_code == 201, fine.text


# -- reserved names -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "family", ["deadletter", "hub", "device_status", "alert", "flood_event", "x_event"]
)
def test_families_named_like_the_hubs_measurements_are_refused(api: Api, family: str) -> None:
    response = api.client.post(
        "/api/v1/device-types",
        json={"name": "t-1", "family": family, "protocol": "mqtt", "expected_interval_s": 60},
        headers=api.headers("admin"),
    )
    body = assert_problem(response, 422, "reserved")
    assert body["field"] == "body.family"


def fixed_device_segments(app: Any) -> set[str]:
    """Fixed path segments right under /api/v1/devices/ in the app's routes."""
    found = set()
    for route in app.routes:
        if isinstance(route, APIRoute):
            match = re.fullmatch(r"/api/v1/devices/([^/{]+)(/.*)?", route.path)
            if match:
                found.add(match.group(1))
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_device_ids_that_are_routes_are_refused(api: Api) -> None:
    assert fixed_device_segments(api.client.app) == ROUTE_DEVICE_IDS
    admin = api.headers("admin")
    for device_id in (*sorted(ROUTE_DEVICE_IDS), "Export"):
        response = api.client.post("/api/v1/devices", json=camera(device_id), headers=admin)
        body = assert_problem(response, 422, "reserved")
        assert body["field"] == "body.id"
    imported = api.client.post(
        "/api/v1/devices/import?dry_run=true",
        content="id,device_type\nexport,cctv-dome\n",
        headers=admin,
    )
    assert imported.json()["errors"][0]["field"] == "id", imported.text


# -- expiring tokens ------------------------------------------------------------------------
def test_parse_duration() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("90m") == 5400
    assert parse_duration("2w") == 14 * 86400
    for bad in ("30", "d", "0d", "1y", "-1d"):
        with pytest.raises(ValueError, match="30d"):
            parse_duration(bad)


def test_an_expired_token_is_refused_with_a_clear_401(api: Api) -> None:
    admin = api.headers("admin")
    made = api.client.post(
        "/api/v1/tokens",
        json={"name": "temp", "role": "viewer", "expires_in_s": 3600},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    token = made.json()
    expires = dt.datetime.fromisoformat(token["expires_at"])
    assert dt.timedelta(minutes=59) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    viewer = {"Authorization": f"Bearer {token['token']}"}
    assert api.client.get("/api/v1/me", headers=viewer).status_code == 200
    # The stored expiry is what counts: move it into the past.
    with api.service.database.session() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == token["id"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    refused = api.client.get("/api/v1/me", headers=viewer)
    assert_problem(refused, 401, "expired at", token["id"])
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    # A token without expiry never expires.
    forever = check_token(
        api.service.database,
        api.tokens["admin"],
        now=dt.datetime.now(dt.UTC) + dt.timedelta(days=3650),
    )
    assert forever.token is not None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cli_token_create_expires_in(cli: Cli) -> None:  # noqa: F811 - the fixture
    made = cli.run("registry", "token", "create", "field-1", "--role", "technician",
                   "--expires-in", "30d").stdout  # fmt: skip
    assert "expires" in made
    secret = re.search(r"khr_\S+", made)
    assert secret is not None
    from device_registry.database import open_database

    database = open_database(cli.database_url)
    try:
        token = check_token(database, secret.group(0)).token
        assert token is not None
        assert token.expires_at is not None
        expires = token.expires_at.replace(tzinfo=token.expires_at.tzinfo or dt.UTC)
        left = expires - dt.datetime.now(dt.UTC)
        assert dt.timedelta(days=29, hours=23) < left <= dt.timedelta(days=30)
        late = check_token(database, secret.group(0), now=expires + dt.timedelta(seconds=1))
        assert late.token is None
        assert "expired at" in late.refusal
    finally:
        database.close()
    bad = cli.run("registry", "token", "create", "x", "--role", "viewer", "--expires-in", "soon",
                  code=2)  # fmt: skip
    assert "30d" in bad.stderr
