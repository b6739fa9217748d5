"""The gateway device list over a real uvicorn: a gateway token reads its own gateway only.

``GET /api/v1/gateways/{id}/devices`` is what a field agent on another machine polls
(issue 12). Run on SQLite and PostgreSQL (the ``service`` fixture).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from device_registry.api_tokens import create_token, list_tokens, revoke_token
from device_registry.database import open_database
from device_registry.models import ApiToken
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate
from hub.cli import app
from tests.agent.registry_api_server import ServedRegistry, served_registry

PATH = "/api/v1/gateways/{}/devices"


def register(service: RegistryService, device_id: str, **fields: object) -> None:
    service.create_device(
        DeviceCreate.model_validate(
            {"id": device_id, "device_type": "generic_4_20ma", "state": "active", **fields}
        ),
        actor="test",
    )


def seed_types(service: RegistryService) -> None:
    """A gauge polled over Modbus and a gateway type (no other catalog needed)."""
    service.create_type(
        DeviceTypeCreate(
            name="generic_4_20ma", family="flood", protocol="modbus_tcp", expected_interval_s=60
        ),
        actor="test",
    )
    service.create_type(
        DeviceTypeCreate(
            name="agent", family="gateway", protocol="mqtt", expected_interval_s=60, is_gateway=True
        ),
        actor="test",
    )


@pytest.fixture
def served(service: RegistryService) -> Iterator[ServedRegistry]:
    """Two gateways with two cameras each, served on a free port."""
    seed_types(service)
    for gw in ("gw-a", "gw-b"):
        service.create_device(DeviceCreate(id=gw, device_type="agent"), actor="test")
        for n in (1, 2):
            register(
                service,
                f"cam-{gw[-1]}{n}",
                gateway_id=gw,
                protocol_address=f"10.0.0.{n}",
                driver_config={"timeout_s": 2},
            )
    with served_registry(service) as registry:
        yield registry


def client(served: ServedRegistry, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=served.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def test_a_gateway_token_reads_its_own_list_and_nothing_else(served: ServedRegistry) -> None:
    database = served.service.database
    token = create_token(
        database, name="gw-a-agent", role="gateway", actor="test", gateway_id="gw-a"
    ).token
    with client(served, token) as api:
        own = api.get(PATH.format("gw-a"))
        assert own.status_code == 200, own.text
        body = own.json()
        assert body["gateway_id"] == "gw-a"
        assert [d["device_id"] for d in body["devices"]] == ["cam-a1", "cam-a2"]
        first = body["devices"][0]
        assert first["gateway_id"] == "gw-a"
        assert first["address"] == "10.0.0.1"
        assert first["protocol"] == "modbus_tcp"
        assert first["driver_config"] == {"timeout_s": 2}
        assert own.headers["etag"] == f'"rev-{body["revision"]}"'

        other = api.get(PATH.format("gw-b"))
        assert other.status_code == 403
        assert "belongs to gateway 'gw-a', not 'gw-b'" in other.json()["detail"]
        # Nothing else of the registry: no device list, no single device, no catalog.
        for path in (
            "/api/v1/devices",
            "/api/v1/devices/cam-b1",
            "/api/v1/device-types",
            "/api/v1/directory",
        ):
            assert api.get(path).status_code == 403, path

        # While nothing changes, the ETag answers 304 without a body.
        same = api.get(PATH.format("gw-a"), headers={"If-None-Match": own.headers["etag"]})
        assert same.status_code == 304
        assert same.content == b""
        register(served.service, "cam-a3", gateway_id="gw-a")
        changed = api.get(PATH.format("gw-a"), headers={"If-None-Match": own.headers["etag"]})
        assert changed.status_code == 200
        assert [d["device_id"] for d in changed.json()["devices"]][-1] == "cam-a3"
        assert changed.headers["etag"] != own.headers["etag"]


def test_people_read_any_gateway_and_unknown_gateways_are_404(served: ServedRegistry) -> None:
    database = served.service.database
    viewer = create_token(database, name="ops", role="viewer", actor="test").token
    with client(served, viewer) as api:
        assert [d["device_id"] for d in api.get(PATH.format("gw-b")).json()["devices"]] == [
            "cam-b1",
            "cam-b2",
        ]
        missing = api.get(PATH.format("gw-nowhere"))
        assert missing.status_code == 404
        assert "gw-nowhere" in missing.json()["detail"]


def test_gateway_tokens_need_their_gateway_and_stop_when_revoked_or_expired(
    served: ServedRegistry,
) -> None:
    database = served.service.database
    admin = create_token(database, name="root", role="admin", actor="test").token
    with client(served, admin) as api:
        unscoped = api.post("/api/v1/tokens", json={"name": "x", "role": "gateway"})
        assert unscoped.status_code == 422
        assert "gateway_id is required with role gateway" in unscoped.json()["detail"]
        person = api.post(
            "/api/v1/tokens", json={"name": "x", "role": "viewer", "gateway_id": "gw-a"}
        )
        assert person.status_code == 422
        made = api.post(
            "/api/v1/tokens", json={"name": "gw-b-agent", "role": "gateway", "gateway_id": "gw-b"}
        )
        assert made.status_code == 201, made.text
        assert made.json()["gateway_id"] == "gw-b"
    with pytest.raises(ValueError, match="gateway_id: required with role gateway"):
        create_token(database, name="x", role="gateway", actor="test")
    secret = made.json()["token"]
    with client(served, secret) as api:
        assert api.get(PATH.format("gw-b")).status_code == 200
        revoke_token(database, made.json()["id"], actor="test")
        refused = api.get(PATH.format("gw-b"))
        assert refused.status_code == 401
    expiring = create_token(
        database, name="old", role="gateway", actor="test", gateway_id="gw-a", expires_in_s=60
    )
    with database.session() as session:
        row = session.get(ApiToken, expiring.id)
        assert row is not None
        row.expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with client(served, expiring.token) as api:
        expired = api.get(PATH.format("gw-a"))
        assert expired.status_code == 401
        assert "expired" in expired.json()["detail"]


gateway_ids = st.one_of(
    st.text(alphabet="abgw-_.0123456789AZ", min_size=1, max_size=20),
    st.sampled_from(["gw-A", "gw-a ", "gw-a.", "gw-b", "GW-A", "gw-a%2F..", "gw-"]),
).filter(lambda s: s != "gw-a")


@pytest.fixture
def gw_a_token(served: ServedRegistry) -> str:
    """A token of role gateway for gw-a."""
    database = served.service.database
    return create_token(database, name="gw-a", role="gateway", actor="t", gateway_id="gw-a").token


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(gateway_id=gateway_ids)
def test_a_gateway_token_never_reads_another_id(
    served: ServedRegistry, gw_a_token: str, gateway_id: str
) -> None:
    with client(served, gw_a_token) as api:
        answer = api.get(PATH.format(gateway_id))
    # 403 for every other id; 404 only where the id is not even a route (trailing dot).
    assert answer.status_code in (403, 404), (gateway_id, answer.status_code)
    if answer.status_code == 404:
        assert "belongs" not in answer.text


def test_token_create_for_a_gateway_from_the_cli(tmp_path: Path) -> None:
    config = tmp_path / "kotahub.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(app, [*args, "--config", str(config)], env={"COLUMNS": "200"})

    made = run("registry", "token", "create", "gw-a-agent", "--role", "gateway",
               "--gateway", "gw-a", "--expires-in", "30d")  # fmt: skip
    assert made.exit_code == 0, made.stdout + made.stderr
    assert "(gateway), shown once: khr_" in made.stdout
    missing = run("registry", "token", "create", "x", "--role", "gateway")
    assert missing.exit_code == 2
    assert "--gateway" in missing.stderr
    assert "required with --role gateway" in missing.stderr
    person = run("registry", "token", "create", "x", "--role", "viewer", "--gateway", "gw-a")
    assert person.exit_code == 2
    database = open_database(f"sqlite:///{tmp_path / 'state' / 'registry.sqlite3'}")
    try:
        [token] = list_tokens(database)
    finally:
        database.close()
    assert (token.role, token.gateway_id) == ("gateway", "gw-a")
    assert token.expires_at is not None
