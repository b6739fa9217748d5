"""The [ingest] settings section: defaults, environment, and the derived WAL folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.ingest.ingest_service import subscription_topics, wal_directory
from hub.settings import ConfigError, load_settings


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load_settings(None, state_dir=tmp_path)
    assert settings.ingest.client_id == "kotahub-hub-1"
    assert settings.ingest.batch_lines == 5000
    # One worker on a plain subscription unless scale-out asks for a group.
    assert settings.ingest.shared_group is None
    assert settings.ingest.mqtt_protocol == "3.1.1"
    assert wal_directory(settings) == tmp_path / "wal" / "kotahub-hub-1"
    assert subscription_topics("kotahub")[0] == "$share/kotahub/kota/v1/dev/+/telemetry"
    assert len(subscription_topics(None)) == 6
    monkeypatch.setenv("KOTAHUB_INGEST__SHARED_GROUP", "")
    monkeypatch.setenv("KOTAHUB_INGEST__MQTT_PROTOCOL", "5")
    monkeypatch.setenv("KOTAHUB_INGEST__BATCH_LINES", "100")
    monkeypatch.setenv("KOTAHUB_INGEST__CLIENT_ID", "hub-7")
    settings = load_settings(None, state_dir=tmp_path)
    assert settings.ingest.shared_group is None
    assert settings.ingest.batch_lines == 100
    assert settings.ingest.mqtt_protocol == "5"
    assert wal_directory(settings) == tmp_path / "wal" / "hub-7"


def test_bad_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ingest\.batch_lines"):
        load_settings(None, state_dir=tmp_path, ingest={"batch_lines": 0})
    with pytest.raises(ConfigError, match=r"ingest\.client_id"):
        load_settings(None, state_dir=tmp_path, ingest={"client_id": "has space"})


def test_mqtt_protocol_takes_text_or_number(tmp_path: Path) -> None:
    config = tmp_path / "kotahub.toml"
    config.write_text('[ingest]\nmqtt_protocol = 5\nshared_group = "kotahub"\n')
    settings = load_settings(config, state_dir=tmp_path)
    assert settings.ingest.mqtt_protocol == "5"
    assert settings.ingest.shared_group == "kotahub"
    with pytest.raises(ConfigError, match=r"ingest\.mqtt_protocol"):
        load_settings(None, state_dir=tmp_path, ingest={"mqtt_protocol": "3.1"})
