"""`kotahub devices add` on first use: the state it defaults to and when the MQTT secret is shown.

In-process CLI (the fixtures of test_cli.py) on a SQLite registry and the session's real
Mosquitto, so a printed password is tried against the real broker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app
from tests.conftest import RunningStack
from tests.registry.test_cli import Cli, mqtt_login, seed, write_config


@pytest.fixture
def cli(tmp_path: Path, running_stack: RunningStack) -> Cli:
    """An in-process CLI on a SQLite registry in a fresh state folder and the real broker."""
    config = write_config(tmp_path / "kotahub.toml", running_stack, None)
    url = f"sqlite:///{(tmp_path / 'state' / 'registry.sqlite3').resolve()}"
    return Cli(config=config, database_url=url, runner=CliRunner())


def test_the_state_option_names_its_default() -> None:
    helped = CliRunner().invoke(
        app, ["devices", "add", "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"}
    )
    assert helped.exit_code == 0, helped.stdout
    text = " ".join(helped.stdout.split())
    assert "default: active" in text
    assert "printed once" in text


def test_a_new_mqtt_device_is_active_with_its_secret_printed_once(
    cli: Cli, running_stack: RunningStack, unique_id: str
) -> None:
    seed(cli)
    gauge = f"{unique_id}-fg"
    # No --state: what a technician registering a gauge in the field types.
    added = cli.run("devices", "add", gauge, "--type", "gauge").stdout
    assert cli.device(gauge)["state"] == "active"
    assert cli.device(gauge)["mqtt_username"] == gauge
    password = added.split("password:")[1].split()[0]
    assert mqtt_login(running_stack, gauge, password) == "Success"
    flat = " ".join(added.split())
    assert "will not be shown again" in flat
    assert f"kotahub devices rotate-credentials {gauge}" in flat
    # ... and only then: showing the device never prints it.
    assert password not in cli.run("devices", "show", gauge).stdout


def test_no_secret_says_why_and_how_to_get_it(
    cli: Cli, running_stack: RunningStack, unique_id: str
) -> None:
    seed(cli)
    planned = f"{unique_id}-planned"
    out = " ".join(cli.run("devices", "add", planned, "--type", "gauge", "--state", "planned")
                   .stdout.split())  # fmt: skip
    assert "password:" not in out
    assert f"kotahub devices update {planned} --state active" in out
    assert "prints its secret once" in out
    # The advice works: activation prints the secret, and it logs in on the broker.
    activated = cli.run("devices", "update", planned, "--state", "active").stdout
    password = activated.split("password:")[1].split()[0]
    assert mqtt_login(running_stack, planned, password) == "Success"

    # --no-credentials alone: planned, and the same one-command advice.
    skipped = f"{unique_id}-nocred"
    out = " ".join(cli.run("devices", "add", skipped, "--type", "gauge", "--no-credentials")
                   .stdout.split())  # fmt: skip
    assert cli.device(skipped)["state"] == "planned"
    assert f"kotahub devices update {skipped} --state active" in out
    made = cli.run("devices", "update", skipped, "--state", "active").stdout
    assert mqtt_login(running_stack, skipped, made.split("password:")[1].split()[0]) == "Success"

    # Active without an identity: the advice (via planned) really makes one.
    bare = f"{unique_id}-bare"
    out = " ".join(cli.run("devices", "add", bare, "--type", "gauge", "--state", "active",
                           "--no-credentials").stdout.split())  # fmt: skip
    assert "--no-credentials" in out
    assert f"kotahub devices update {bare} --state planned" in out
    cli.run("devices", "update", bare, "--state", "planned")
    made = cli.run("devices", "update", bare, "--state", "active").stdout
    assert mqtt_login(running_stack, bare, made.split("password:")[1].split()[0]) == "Success"

    camera = f"{unique_id}-cam"
    out = " ".join(cli.run("devices", "add", camera, "--type", "cctv").stdout.split())
    assert cli.device(camera)["state"] == "active"
    assert "speaks onvif, not MQTT" in out
