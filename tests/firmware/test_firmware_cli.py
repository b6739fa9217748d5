"""`kotahub firmware keygen | sign | trust | upload | list` as an operator runs them.

In-process through the real command tree (``hub.cli.app``), from the operator's working
folder, so that ``kotahub.toml`` is found as it would be.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


Kotahub = Callable[..., Ran]


@pytest.fixture
def kotahub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kotahub:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    runner = CliRunner()

    def run(*args: str, cwd: Path) -> Ran:
        assert cwd == tmp_path
        result = runner.invoke(app, list(args))
        return Ran(result.exit_code, result.stdout, result.stderr)

    return run


def test_keygen_sign_trust_upload_list(tmp_path: Path, kotahub: Kotahub) -> None:
    (tmp_path / "kotahub.toml").write_text(
        f'state_dir = "{tmp_path / "state"}"\n[registry]\nmqtt_identities = false\n'
    )
    made = kotahub("firmware", "keygen", "--out", "keys", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    private = tmp_path / "keys" / "kotahub-firmware.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    secret_body = private.read_text().splitlines()[1]
    assert secret_body not in made.stdout + made.stderr  # never printed

    image = tmp_path / "gauge.bin"
    image.write_bytes(b"\x7fELF" + bytes(range(256)) * 64)
    signed = kotahub(
        "firmware", "sign", "gauge.bin", "--version", "1.2.0",
        "--device-type", "vegapuls_c21", "--key", str(private), cwd=tmp_path,
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert (tmp_path / "gauge.bin.kfw.json").exists()

    refused = kotahub("firmware", "upload", "gauge.bin", cwd=tmp_path)
    assert refused.returncode == 1
    assert "does not trust" in refused.stderr
    assert "Traceback" not in refused.stderr

    trusted = kotahub("firmware", "trust", "keys/kotahub-firmware.pub", cwd=tmp_path)
    assert trusted.returncode == 0, trusted.stderr
    # The registry's seeded types come from the driver families: vegapuls_c21 is one.
    seeded = kotahub("registry", "types", "seed", cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    stored = kotahub("firmware", "upload", "gauge.bin", cwd=tmp_path)
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.startswith("stored: 1.2.0 for vegapuls_c21")

    listed = kotahub("firmware", "list", cwd=tmp_path)
    assert "1.2.0" in listed.stdout
    assert "vegapuls_c21" in listed.stdout

    image.write_bytes(image.read_bytes() + b"!")  # changed after signing
    tampered = kotahub("firmware", "upload", "gauge.bin", cwd=tmp_path)
    assert tampered.returncode == 1
    assert "does not match its manifest" in tampered.stderr
