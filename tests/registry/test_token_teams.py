"""A person's token names their field team: made, listed and told by /me over real HTTP,
from the CLI, and added by migration 0004 to a registry with tokens (SQLite and PostgreSQL).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from typer.testing import CliRunner

from device_registry.api_tokens import create_token, list_tokens
from device_registry.database import MIGRATIONS_DIR, make_engine, open_database
from device_registry.registry_service import RegistryService
from device_registry.schemas import TeamCreate
from hub.cli import app as kotahub
from tests.agent.registry_api_server import served_registry


def test_a_token_with_a_team_over_http(service: RegistryService) -> None:
    service.create_team(TeamCreate(id="drainage-east", name="Drainage East"), actor="test")
    admin = create_token(service.database, name="boss", role="admin", actor="test").token
    with (
        served_registry(service) as served,
        httpx.Client(
            base_url=served.url, headers={"Authorization": f"Bearer {admin}"}, timeout=10
        ) as api,
    ):
        made = api.post(
            "/api/v1/tokens", json={"name": "budi", "role": "technician", "team": "drainage-east"}
        )
        assert made.status_code == 201, made.text
        assert made.json()["team"] == "drainage-east"
        listed = {t["name"]: t["team"] for t in api.get("/api/v1/tokens").json()}
        assert listed == {"boss": None, "budi": "drainage-east"}
        me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {made.json()['token']}"})
        assert me.json()["team"] == "drainage-east"
        assert me.json()["role"] == "technician"
        assert api.get("/api/v1/me").json()["team"] is None
        # An unknown team, or a team on a gateway's token: refused, and no token is made.
        unknown = api.post("/api/v1/tokens", json={"name": "x", "role": "viewer", "team": "nope"})
        assert unknown.status_code == 422
        assert unknown.json()["field"] == "team"
        assert "unknown team 'nope'" in unknown.json()["detail"]
        gateway = api.post(
            "/api/v1/tokens",
            json={"name": "y", "role": "gateway", "gateway_id": "gw-1", "team": "drainage-east"},
        )
        assert gateway.status_code == 422
        assert "a gateway token has no team" in gateway.text
    assert [t.name for t in list_tokens(service.database)] == ["boss", "budi"]


def test_the_cli_makes_and_lists_a_token_with_its_team(tmp_path: Path) -> None:
    config = tmp_path / "kotahub.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    runner = CliRunner()
    args = ["registry", "token"]
    assert runner.invoke(kotahub, [*args, "list", "-c", str(config)]).exit_code == 0
    database = open_database(f"sqlite:///{tmp_path / 'state' / 'registry.sqlite3'}")
    try:
        RegistryService(database).create_team(TeamCreate(id="pompa-1", name="Pompa"), actor="t")
    finally:
        database.close()
    made = runner.invoke(
        kotahub,
        [*args, "create", "sari", "--role", "technician", "--team", "pompa-1", "-c", str(config)],
    )
    assert made.exit_code == 0, made.output
    assert "(technician, team pompa-1), shown once: khr_" in made.output
    listed = runner.invoke(kotahub, [*args, "list", "-c", str(config)])
    row = next(line for line in listed.output.splitlines() if "sari" in line)
    assert "pompa-1" in row
    unknown = runner.invoke(
        kotahub, [*args, "create", "x", "--role", "viewer", "--team", "nope", "-c", str(config)]
    )
    assert unknown.exit_code != 0
    assert "unknown team 'nope'" in unknown.output
    refused = runner.invoke(
        kotahub,
        [*args, "create", "g", "--role", "gateway", "--gateway", "gw", "--team", "pompa-1",
         "-c", str(config)],
    )  # fmt: skip
    assert refused.exit_code != 0
    assert "a gateway token has no team" in refused.output


def test_migration_0004_adds_the_team_to_existing_tokens(database_url: str) -> None:
    """A registry at 0003 with a token upgrades: the token keeps working, with no team."""
    engine = make_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            if sa.inspect(connection).has_table("alembic_version"):
                command.downgrade(config, "0003")  # PostgreSQL's copy comes at head
            else:
                command.upgrade(config, "0003")  # SQLite's file comes empty
            columns = {c["name"] for c in sa.inspect(connection).get_columns("api_tokens")}
            assert "team" not in columns
            connection.execute(
                sa.text(
                    "INSERT INTO api_tokens (id, name, role, secret_sha256, created_at, "
                    "created_by) VALUES ('old1', 'old', 'viewer', :sha, :at, 'test')"
                ),
                {"sha": "0" * 64, "at": "2026-01-01 00:00:00"},
            )
    finally:
        engine.dispose()
    database = open_database(database_url)  # migrates to head
    try:
        (old,) = list_tokens(database)
        assert (old.id, old.role, old.team) == ("old1", "viewer", None)
    finally:
        database.close()
