"""The API's request limits are registry settings (issue 12): ``registry serve`` uses them.

The app is the one ``kotahub registry serve`` builds from ``[registry]`` in the settings
file (uvicorn.run is replaced, so nothing listens); requests go through it in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from device_registry.api_tokens import create_token
from device_registry.database import open_database
from device_registry.registry_service import RegistryService
from device_registry.registry_settings import DATABASE_FILE, RegistrySettings
from hub.cli import app as kotahub_app
from tests.registry.conftest import seed_catalog


def served_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: str) -> FastAPI:
    """The app `kotahub registry serve` would run with this ``[registry]`` section."""
    import uvicorn

    served: list[FastAPI] = []

    def run(app: FastAPI, **_kwargs: Any) -> None:
        served.append(app)

    monkeypatch.setattr(uvicorn, "run", run)
    config = tmp_path / "kotahub.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[registry]\nmqtt_identities = false\n{registry}')
    result = CliRunner().invoke(kotahub_app, ["registry", "serve", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert len(served) == 1
    return served[0]


def admin_token(tmp_path: Path) -> str:
    """An admin token in the registry the served app uses, with the seeded catalog."""
    database = open_database(f"sqlite:///{tmp_path / DATABASE_FILE}")
    try:
        seed_catalog(RegistryService(database))
        return create_token(database, name="admin", role="admin", actor="test").token
    finally:
        database.close()


def test_a_smaller_max_body_bytes_from_the_settings_gives_413(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = served_app(tmp_path, monkeypatch, "max_body_bytes = 2000\nmax_import_rows = 3\n")
    headers = {"Authorization": f"Bearer {admin_token(tmp_path)}"}
    with TestClient(app) as client:
        # ~3 kB: far under the 1 MiB default, over the configured 2000 bytes.
        big = {"id": "c-1", "device_type": "cctv-dome", "vendor": "v" * 3000}
        response = client.post("/api/v1/devices", json=big, headers=headers)
        assert response.status_code == 413, response.text
        assert "2000" in response.json()["detail"]
        small = {"id": "c-1", "device_type": "cctv-dome"}
        assert client.post("/api/v1/devices", json=small, headers=headers).status_code == 201
        # The rows limit too: four rows where three are allowed.
        rows = "id,device_type\n" + "".join(f"c-{n},cctv-dome\n" for n in range(2, 6))
        imported = client.post(
            "/api/v1/devices/import",
            content=rows,
            headers={**headers, "Content-Type": "text/csv"},
        )
        assert imported.status_code == 422, imported.text
        assert "more than 3 rows" in imported.json()["detail"]


def test_limits_must_be_positive() -> None:
    for name in ("max_body_bytes", "max_import_bytes", "max_import_rows"):
        with pytest.raises(ValidationError, match=name):
            RegistrySettings.model_validate({name: 0})
    defaults = RegistrySettings()
    assert (defaults.max_body_bytes, defaults.max_import_bytes, defaults.max_import_rows) == (
        1048576,
        10485760,
        20000,
    )
