"""Settings: one TOML file, KOTAHUB_ environment overrides, clear errors, secrets hidden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hub.settings import ConfigError, load_settings, redacted


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KOTAHUB_CONFIG", raising=False)
    settings = load_settings()
    assert settings.mqtt.port == 11883
    assert settings.influx.database == "kotahub"
    assert settings.state_dir == Path(".kotahub")


def test_file_values_and_environment_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(tmp_path / "k.toml", '[mqtt]\nport = 1884\n[influx]\ndatabase = "semarang"\n')
    monkeypatch.setenv("KOTAHUB_MQTT__PORT", "1999")
    settings = load_settings(cfg)
    assert settings.mqtt.port == 1999  # environment wins over the file
    assert settings.influx.database == "semarang"


def test_bad_value_names_key_and_reason(tmp_path: Path) -> None:
    cfg = write(tmp_path / "k.toml", '[mqtt]\nport = 70000\n[influx]\napi = "v9"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    text = str(info.value)
    assert "mqtt.port" in text
    assert "65535" in text
    assert "influx.api" in text
    assert "'v1' or 'v2'" in text


def test_unknown_key_is_a_typo_not_ignored(tmp_path: Path) -> None:
    cfg = write(tmp_path / "k.toml", "[mqtt]\nprot = 1884\n")
    with pytest.raises(ConfigError, match=r"mqtt\.prot: Extra inputs are not permitted"):
        load_settings(cfg)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path / "k.toml", "[mqtt\nport = 1\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_secrets_never_printed(tmp_path: Path) -> None:
    cfg = write(tmp_path / "k.toml", '[mqtt]\npassword = "hunter2-secret"\n')
    settings = load_settings(cfg)
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(redacted(settings))
    shown = subprocess.run(
        [sys.executable, "-m", "hub", "config", "show", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "hunter2-secret" not in shown.stdout + shown.stderr
    assert "**********" in shown.stdout


def test_cli_stops_on_bad_file_with_message(tmp_path: Path) -> None:
    cfg = write(tmp_path / "k.toml", "[influx]\nretention = 'forever'\n")
    result = subprocess.run(
        [sys.executable, "-m", "hub", "stack", "status", "--config", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "influx.retention" in result.stderr
