"""The registry's command line: devices, import/export, teams, sites, device types.

Most tests drive the real ``kotahub`` Typer app in-process (typer's CliRunner: CLI
start-up costs ~1.5 s per process); ``test_cli_as_a_process`` runs ``python -m hub`` as
a subprocess for the credential lifecycle. Every command works on a registry database
named in a kotahub.toml (SQLite in the state folder, or PostgreSQL by URL) and, where
credentials are involved, on the session's real Mosquitto.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.testing
from sqlalchemy import select
from typer._click import Context
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from device_registry.database import open_database
from device_registry.models import MqttIdentity
from device_registry.mqtt_identities import secret_hash
from device_registry.schemas import DeviceCreate, DeviceQuery, DeviceUpdate
from hub.cli import app
from tests.conftest import MqttTestClient, RunningStack

ROOT = Path(__file__).resolve().parents[2]
# Wide enough that no table cell is wrapped or cut.
ENV = {"COLUMNS": "220", "NO_COLOR": "1", "KOTAHUB_CONFIG": None}


def write_config(path: Path, stack: RunningStack, database_url: str | None) -> Path:
    """A kotahub.toml: state folder in tmp, the session's broker, the given database."""
    lines = [
        f'state_dir = "{path.parent / "state"}"',
        "[mqtt]",
        f'host = "{stack.mqtt_host}"',
        f"port = {stack.mqtt_port}",
        f'password = "{stack.mqtt_password}"',
        "[registry]",
    ]
    if database_url:
        lines.append(f'database_url = "{database_url}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Cli:
    """Runs ``kotahub`` commands in-process against one config file."""

    config: Path
    database_url: str
    runner: CliRunner

    def run(self, *args: str, code: int = 0) -> Result:
        """Run a command; assert its exit code; return the result."""
        result = self.runner.invoke(app, [*args, "--config", str(self.config)], env=ENV)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, (args, result.stdout, result.stderr)
        return result

    def json(self, *args: str) -> Any:
        """Run a command with --json and parse its output."""
        return json.loads(self.run(*args, "--json").stdout)

    def device(self, device_id: str) -> dict[str, Any]:
        """A device as `devices show --json` prints it."""
        shown: dict[str, Any] = self.json("devices", "show", device_id)["device"]
        return shown

    def audit_count(self) -> int:
        """Audit entries so far (bad input must add none)."""
        database = open_database(self.database_url)
        try:
            from device_registry.registry_service import RegistryService

            return len(RegistryService(database).audit_log(limit=10_000))
        finally:
            database.close()


@pytest.fixture(autouse=True)
def build_the_command_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """CliRunner rebuilds the click command tree (~0.13 s) on every invoke; build it once.

    ``typer.testing._get_command`` is private: if it moves, the tests only get slower.
    """
    monkeypatch.setattr(
        typer.testing, "_get_command", functools.cache(typer.main.get_command), raising=False
    )


@pytest.fixture
def cli(database_url: str, tmp_path: Path, running_stack: RunningStack) -> Cli:
    """An in-process CLI on a fresh database (SQLite and PostgreSQL) and the real broker."""
    url = database_url
    if url.startswith("sqlite"):
        url = ""  # the default: a SQLite file in the state folder
    config = write_config(tmp_path / "kotahub.toml", running_stack, url or None)
    resolved = url or f"sqlite:///{(tmp_path / 'state' / 'registry.sqlite3').resolve()}"
    return Cli(config=config, database_url=resolved, runner=CliRunner())


def seed(cli: Cli) -> None:
    """Types, a site and a team, through the CLI itself."""
    cli.run("registry", "types", "add", "cctv", "--family", "cctv", "--protocol", "onvif",
            "--interval", "60", "--metric", "stream_ok::boolean")  # fmt: skip
    cli.run("registry", "types", "add", "agent", "--family", "gateway", "--protocol", "mqtt",
            "--interval", "60", "--gateway")  # fmt: skip
    cli.run("registry", "types", "add", "gauge", "--family", "flood", "--protocol", "mqtt",
            "--interval", "300", "--metric", "level_m:m")  # fmt: skip
    cli.run("sites", "add", "bkt-01", "Banjir Kanal Timur", "--lat", "-6.97", "--lon", "110.45")
    cli.run("teams", "add", "dpu", "DPU drainage", "--channel", "telegram=@dpu")


def mqtt_login(stack: RunningStack, username: str, password: str) -> str:
    """Connect with a device's identity (client id = username); the broker's reason."""
    client = MqttTestClient(stack.mqtt_host, stack.mqtt_port, username, password, username)
    try:
        return client.connect()
    finally:
        client.close()


def table_rows(text: str) -> list[list[str]]:
    """Cells of the body rows of the rich tables in some output."""
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in text.splitlines()
        if line.startswith("│")
    ]


def test_every_device_field_is_a_cli_option() -> None:
    command = typer.main.get_command(app)
    assert isinstance(command, TyperGroup)
    devices = command.get_command(Context(command), "devices")  # a lazy group: loaded here
    assert isinstance(devices, TyperGroup)
    for name, model in (("update", DeviceUpdate), ("add", DeviceCreate)):
        params = {p.name for p in devices.commands[name].params}
        wanted = set(model.model_fields) - {"tags", "id"} | {"tag"}
        assert wanted <= params, (name, wanted - params)
    listing = {p.name for p in devices.commands["list"].params}
    assert set(DeviceQuery.model_fields) <= listing


def test_devices_lifecycle(cli: Cli, running_stack: RunningStack, unique_id: str) -> None:
    seed(cli)
    gw, cam = f"{unique_id}-gw", f"{unique_id}-cam"
    # A live gateway gets an MQTT identity; its secret is printed once.
    added = cli.run("devices", "add", gw, "--type", "agent", "--state", "active",
                    "--kota", "Semarang", "--kecamatan", "Gayamsari").stdout  # fmt: skip
    assert "shown once" in added
    password = added.split("password:")[1].split()[0]
    assert mqtt_login(running_stack, gw, password) == "Success"
    assert password not in cli.run("devices", "show", gw).stdout
    database = open_database(cli.database_url)
    try:
        with database.session() as session:
            stored = session.scalars(select(MqttIdentity)).all()
        assert [(i.device_id, i.secret_sha256) for i in stored] == [(gw, secret_hash(password))]
    finally:
        database.close()

    # A camera behind it: no identity of its own.
    out = cli.run("devices", "add", cam, "--type", "cctv", "--gateway", gw, "--state", "active",
                  "--kota", "Semarang", "--kecamatan", "Gayamsari", "--kelurahan", "Sawah Besar",
                  "--rw", "3", "--rt", "7", "--team", "dpu", "--serial", "SN-1",
                  "--tag", "pole=P-17").stdout  # fmt: skip
    assert "shown once" not in out
    cli.run("devices", "add", f"{unique_id}-g2", "--type", "gauge", "--no-credentials",
            "--kota", "Semarang", "--kecamatan", "Tugu")  # fmt: skip

    # list: a readable table, filters narrow it.
    rows = table_rows(cli.run("devices", "list").stdout)
    assert [r[0] for r in rows] == sorted([gw, cam, f"{unique_id}-g2"])
    cam_row = next(r for r in rows if r[0] == cam)
    assert cam_row == [cam, "cctv", "active", "Gayamsari", "Sawah Besar", "3/7", "dpu",
                       gw, "SN-1"]  # fmt: skip
    assert "Devices 1-3 of 3" in cli.run("devices", "list").stdout
    assert [r[0] for r in table_rows(cli.run("devices", "list", "--kecamatan", "Tugu").stdout)] == [
        f"{unique_id}-g2"
    ]
    assert cli.json("devices", "list", "--state", "active", "--family", "cctv")["total"] == 1

    # update: every field the API can change, in one command.
    gw2 = f"{unique_id}-gw2"
    cli.run("devices", "add", gw2, "--type", "agent", "--no-credentials")
    before = cli.audit_count()
    cli.run("devices", "update", cam, "--vendor", "Hikvision", "--model", "DS-2CD",
            "--serial", "SN-2", "--firmware", "5.7.1", "--protocol-address", "10.0.0.9:80",
            "--credentials-ref", "vault:cam/7", "--gateway", gw2, "--parent", gw,
            "--lat", "-6.98", "--lon", "110.41", "--site", "bkt-01", "--kota", "Semarang",
            "--kecamatan", "Genuk", "--kelurahan", "Banjardowo", "--rw", "4", "--rt", "9",
            "--owner", "community", "--install-date", "2024-05-01", "--state", "maintenance",
            "--tag", "mount=wall", "--remove-tag", "pole",
            "--driver-config", '{"stream": "main"}')  # fmt: skip
    device = cli.device(cam)
    expected = {
        "vendor": "Hikvision", "model": "DS-2CD", "serial": "SN-2", "firmware_version": "5.7.1",
        "protocol_address": "10.0.0.9:80", "credentials_ref": "vault:cam/7", "gateway_id": gw2,
        "parent_id": gw, "latitude": -6.98, "longitude": 110.41, "site_id": "bkt-01",
        "kecamatan": "Genuk", "kelurahan": "Banjardowo", "rw": "4", "rt": "9",
        "owner_kind": "community", "install_date": "2024-05-01", "state": "maintenance",
        "tags": {"mount": "wall"}, "driver_config": {"stream": "main"}, "team_id": "dpu",
    }  # fmt: skip
    assert {k: device[k] for k in expected} == expected
    assert cli.audit_count() == before + 1
    # The type can change too (family follows), and an optional field can be emptied.
    cli.run("devices", "update", cam, "--type", "gauge", "--clear", "gateway", "--clear", "site",
            "--no-credentials")  # fmt: skip
    device = cli.device(cam)
    assert (device["device_type"], device["family"]) == ("gauge", "flood")
    assert device["gateway_id"] is None
    assert device["site_id"] is None

    # Bad input: exit 2 naming the option and the field; nothing written.
    before = cli.audit_count()
    bad = cli.run("devices", "update", cam, "--lat", "95", "--lon", "110", code=2)
    assert "--lat (latitude)" in bad.stderr
    assert "less than or equal to 90" in bad.stderr
    bad = cli.run("devices", "update", cam, "--site", "nowhere", code=2)
    assert "site_id" in bad.stderr
    assert "unknown site 'nowhere'" in bad.stderr
    bad = cli.run("devices", "update", cam, "--rw", "12345", code=2)
    assert "--rw (rw)" in bad.stderr
    bad = cli.run("devices", "update", cam, "--driver-config", "{oops", code=2)
    assert "--driver-config" in bad.stderr
    assert "JSON" in bad.stderr
    bad = cli.run("devices", "add", f"{unique_id}-x", "--type", "cctv", "--kecamatan", "Tugu",
                  code=2)  # fmt: skip
    assert "kecamatan is set but kota is not" in bad.stderr
    missing = cli.run("devices", "update", "no-such-device", "--serial", "1", code=1)
    assert "device 'no-such-device' not found" in missing.stderr
    duplicate = cli.run("devices", "add", gw, "--type", "agent", code=1)
    assert "already exists" in duplicate.stderr
    assert cli.audit_count() == before
    assert cli.device(cam)["latitude"] == -6.98

    # rotate-credentials: new secret shown once, the old one is dead at once.
    rotated = cli.run("devices", "rotate-credentials", gw).stdout
    new_password = rotated.split("password:")[1].split()[0]
    assert new_password != password
    assert mqtt_login(running_stack, gw, password) != "Success"
    assert mqtt_login(running_stack, gw, new_password) == "Success"
    no_identity = cli.run("devices", "rotate-credentials", cam, code=1)
    assert "has no MQTT identity" in no_identity.stderr

    # retire: refused while a device is behind it; then the identity is gone.
    cli.run("devices", "update", cam, "--parent", gw2, "--type", "cctv", "--gateway", gw)
    refused = cli.run("devices", "retire", gw, code=1)
    assert "gateway or parent of 1 live device" in refused.stderr
    cli.run("devices", "retire", cam, "--reason", "pole knocked down")
    cli.run("devices", "retire", gw)
    assert mqtt_login(running_stack, gw, new_password) != "Success"
    history = [row[2] for row in table_rows(cli.run("devices", "show", gw).stdout) if len(row) == 3]
    assert history == ["retire", "rotate_credentials", "create"]
    shown = cli.json("devices", "show", cam)
    assert shown["device"]["state"] == "retired"
    assert [h["action"] for h in shown["history"]][:1] == ["retire"]
    assert "is retired" in cli.run("devices", "update", cam, "--serial", "9", code=1).stderr


CSV_HEADER = "id,device_type,state,kota,kecamatan,latitude,longitude,tag.pole\n"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_import_csv_reports_bad_rows_by_line(cli: Cli, tmp_path: Path) -> None:
    seed(cli)
    bad = tmp_path / "cameras.csv"
    bad.write_text(
        CSV_HEADER
        + "cam-a,cctv,active,Semarang,Genuk,-6.95,110.45,P1\n"
        + "cam-b,cctv,active,Semarang,Genuk,-96.0,110.45,P2\n"  # line 3: latitude
        + "cam-c,nope,active,Semarang,Genuk,-6.95,110.46,P3\n",  # line 4: device_type
        encoding="utf-8",
    )
    # Dry run (the default): errors listed by line, nothing written.
    dry = cli.run("devices", "import", str(bad), code=1)
    rejected = {r[0]: r[1:] for r in table_rows(dry.stdout) if r[0].isdigit() and len(r) == 3}
    assert set(rejected) == {"3", "4"}
    assert rejected["3"][0] == "latitude"
    assert rejected["4"][0] == "device_type"
    assert "unknown device type 'nope'" in rejected["4"][1]
    assert "dry run, nothing written" in dry.stdout
    # --all-or-nothing --apply: still nothing written.
    refused = cli.run("devices", "import", str(bad), "--apply", "--all-or-nothing", code=1)
    assert "NOT applied" in refused.stdout
    assert cli.json("devices", "list")["total"] == 0
    # Without --all-or-nothing the good row goes in and the bad ones are reported.
    partial = cli.run("devices", "import", str(bad), "--apply", code=1)
    counts = table_rows(partial.stdout)[0]
    assert counts == ["3", "1", "0", "0", "2"]  # rows, created, updated, unchanged, errors
    assert [d["id"] for d in cli.json("devices", "list")["items"]] == ["cam-a"]

    good = tmp_path / "fixed.csv"
    good.write_text(
        CSV_HEADER
        + "cam-a,cctv,active,Semarang,Genuk,-6.95,110.45,P1\n"
        + "cam-b,cctv,active,Semarang,Genuk,-6.96,110.45,P2\n",
        encoding="utf-8",
    )
    assert "all rows are valid" in cli.run("devices", "import", str(good), "--dry-run").stdout
    applied = cli.run("devices", "import", str(good), "--apply")
    assert table_rows(applied.stdout)[0] == ["2", "1", "0", "1", "0"]
    assert "importing" in applied.stderr  # the progress bar
    again = cli.run("devices", "import", str(good), "--apply")
    assert table_rows(again.stdout)[0] == ["2", "0", "0", "2", "0"]
    unreadable = tmp_path / "odd.csv"
    unreadable.write_text("id,colour\nx,red\n", encoding="utf-8")
    assert "unknown column(s) ['colour']" in cli.run("devices", "import", str(unreadable),
                                                     code=2).stderr  # fmt: skip


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_export_geojson_round_trip(
    cli: Cli, tmp_path: Path, running_stack: RunningStack, unique_id: str
) -> None:
    seed(cli)
    nvr = f"{unique_id}-nvr"
    cli.run("devices", "add", nvr, "--type", "cctv", "--state", "active", "--kota", "Semarang",
            "--kecamatan", "Genuk", "--lat", "-6.95", "--lon", "110.45",
            "--team", "dpu")  # fmt: skip
    cli.run("devices", "add", f"{unique_id}-c1", "--type", "cctv", "--parent", nvr,
            "--state", "maintenance", "--site", "bkt-01", "--tag", "pole=P-1",
            "--install-date", "2023-02-01", "--driver-config", '{"channel": 2}')  # fmt: skip
    cli.run("devices", "add", f"{unique_id}-c2", "--type", "cctv", "--owner", "corporate")
    exported = tmp_path / "devices.geojson"
    cli.run("devices", "export", str(exported))
    document = json.loads(exported.read_text(encoding="utf-8"))
    assert len(document["features"]) == 3
    first = document["features"][0]  # ids sort: -c1, -c2, -nvr
    assert first["properties"]["tags"] == {"pole": "P-1"}

    # Into a fresh registry: the same catalogue, then the file; export again: identical.
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    fresh = Cli(
        config=write_config(fresh_dir / "kotahub.toml", running_stack, None),
        database_url=f"sqlite:///{fresh_dir / 'state' / 'registry.sqlite3'}",
        runner=cli.runner,
    )
    seed(fresh)
    fresh.run("devices", "import", str(exported), "--apply", "--all-or-nothing")
    again = fresh_dir / "again.geojson"
    fresh.run("devices", "export", str(again))
    assert json.loads(again.read_text(encoding="utf-8")) == document
    # Re-importing the export into the original changes nothing.
    unchanged = cli.run("devices", "import", str(exported), "--apply")
    assert table_rows(unchanged.stdout)[0] == ["3", "0", "0", "3", "0"]
    # CSV export with a filter, to stdout.
    text = cli.run("devices", "export", "-", "--format", "csv", "--state", "maintenance").stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["id"], r["tag.pole"], r["driver_config"]) for r in rows] == [
        (f"{unique_id}-c1", "P-1", '{"channel": 2}')
    ]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_teams_members_and_channels(cli: Cli) -> None:
    seed(cli)
    cli.run("devices", "add", "cam-t", "--type", "cctv", "--team", "dpu")
    before = cli.audit_count()
    cli.run("teams", "add-member", "dpu", "Budi Santoso", "--role", "technician",
            "--phone", "+62 812 555 0101")  # fmt: skip
    cli.run("teams", "add-member", "dpu", "Sri Wahyuni", "--email", "sri@example.org")
    cli.run("teams", "add-channel", "dpu", "whatsapp=+62 812 555 0199")
    assert cli.audit_count() == before + 3
    shown = cli.run("teams", "show", "dpu").stdout
    rows = table_rows(shown)
    assert ["name", "DPU drainage"] in rows
    assert ["devices", "1"] in rows
    assert ["Budi Santoso", "technician", "+62 812 555 0101", "-"] in rows
    assert ["Sri Wahyuni", "-", "-", "sri@example.org"] in rows
    assert ["telegram", "@dpu"] in rows
    assert ["whatsapp", "+62 812 555 0199"] in rows

    # Bad input and unknown names: clear errors, nothing written.
    before = cli.audit_count()
    dup = cli.run("teams", "add-member", "dpu", "Budi Santoso", code=2)
    assert "members" in dup.stderr
    assert "already has a member 'Budi Santoso'" in dup.stderr
    phone = cli.run("teams", "add-member", "dpu", "Eko", "--phone", "call me", code=2)
    assert "phone" in phone.stderr
    gone = cli.run("teams", "remove-member", "dpu", "Nobody", code=2)
    assert "has no member 'Nobody'" in gone.stderr
    kind = cli.run("teams", "add-channel", "dpu", "pager=123", code=2)
    assert "kind" in kind.stderr
    assert "team 'nope' not found" in cli.run("teams", "show", "nope", code=1).stderr
    assert cli.audit_count() == before

    cli.run("teams", "remove-member", "dpu", "Budi Santoso")
    cli.run("teams", "remove-channel", "dpu", "telegram=@dpu")
    cli.run("teams", "update", "dpu", "--name", "DPU drainage east")
    team = cli.json("teams", "show", "dpu")
    assert [m["name"] for m in team["members"]] == ["Sri Wahyuni"]
    assert team["contact_channels"] == [{"kind": "whatsapp", "address": "+62 812 555 0199"}]
    assert team["name"] == "DPU drainage east"
    listed = table_rows(cli.run("teams", "list").stdout)
    assert listed == [["dpu", "DPU drainage east", "Sri Wahyuni", "whatsapp:+62 812 555 0199"]]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sites_and_types(cli: Cli) -> None:
    seed(cli)
    cli.run("sites", "add", "pump-2", "Pompa Kali Semarang", "--address", "Jl. Pemuda",
            "--kecamatan", "Semarang Tengah")  # fmt: skip
    cli.run("devices", "add", "g-1", "--type", "gauge", "--site", "pump-2")
    rows = table_rows(cli.run("sites", "show", "pump-2").stdout)
    assert ["name", "Pompa Kali Semarang"] in rows
    assert ["devices", "1"] in rows
    assert ["address", "Jl. Pemuda"] in rows
    cli.run("sites", "update", "pump-2", "--lat", "-6.98", "--lon", "110.42", "--clear", "address")
    site = cli.json("sites", "show", "pump-2")
    assert (site["latitude"], site["longitude"], site["address"]) == (-6.98, 110.42, "")
    assert "--lat (latitude)" in cli.run("sites", "update", "pump-2", "--lat", "91",
                                         code=2).stderr  # fmt: skip
    listed = [r[0] for r in table_rows(cli.run("sites", "list").stdout)]
    assert listed == ["bkt-01", "pump-2"]
    assert "site 'x' not found" in cli.run("sites", "show", "x", code=1).stderr

    types = table_rows(cli.run("registry", "types", "list").stdout)
    assert ["gauge", "flood", "mqtt", "300", "-", "level_m [m]"] in types
    assert ["agent", "gateway", "mqtt", "60", "yes", "-"] in types
    cli.run("registry", "types", "update", "gauge", "--interval", "600")
    assert ["expected_interval_s", "600.0"] in table_rows(
        cli.run("registry", "types", "show", "gauge").stdout
    )
    bad = cli.run("registry", "types", "add", "x", "--family", "Bad Family", "--protocol", "mqtt",
                  "--interval", "5", code=2)  # fmt: skip
    assert "--family (family)" in bad.stderr


def test_commands_without_the_broker_need_no_broker_login(tmp_path: Path) -> None:
    # No [mqtt] password and no `stack up` credentials file in this state folder.
    config = tmp_path / "kotahub.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    cli = Cli(config=config, database_url="", runner=CliRunner())
    cli.run("registry", "types", "add", "agent", "--family", "gateway", "--protocol", "mqtt",
            "--interval", "60", "--gateway")  # fmt: skip
    cli.run("devices", "add", "gw-1", "--type", "agent", "--no-credentials")
    assert [r[0] for r in table_rows(cli.run("devices", "list").stdout)] == ["gw-1"]
    needs_broker = cli.run("devices", "add", "gw-2", "--type", "agent", "--state", "active", code=2)
    assert "mqtt.password" in needs_broker.stderr
    rows = tmp_path / "gateways.csv"
    rows.write_text("id,device_type,state\ngw-3,agent,active\n", encoding="utf-8")
    assert "all rows are valid" in cli.run("devices", "import", str(rows)).stdout
    assert "mqtt.password" in cli.run("devices", "import", str(rows), "--apply", code=2).stderr
    assert cli.json("devices", "list")["total"] == 1


@pytest.fixture
def process_env() -> dict[str, str]:
    """Environment for `python -m hub` subprocesses (no KOTAHUB_ settings leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOTAHUB_")}
    return {**env, "COLUMNS": "200", "NO_COLOR": "1"}


def test_cli_as_a_process(
    tmp_path: Path, running_stack: RunningStack, unique_id: str, process_env: dict[str, str]
) -> None:
    config = write_config(tmp_path / "kotahub.toml", running_stack, None)

    def kotahub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hub", *args, "--config", str(config)],
            cwd=ROOT,
            env=process_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    # The catalogue in-process (a subprocess costs ~1.5 s of start-up each).
    Cli(config=config, database_url="", runner=CliRunner()).run(
        "registry", "types", "add", "gauge", "--family", "flood", "--protocol", "mqtt",
        "--interval", "300",
    )  # fmt: skip
    gauge = f"{unique_id}-gauge"
    added = kotahub("devices", "add", gauge, "--type", "gauge", "--state", "active")
    assert added.returncode == 0, added.stderr
    password = added.stdout.split("password:")[1].split()[0]
    assert mqtt_login(running_stack, gauge, password) == "Success"
    assert (tmp_path / "state" / "registry.sqlite3").is_file()
    bad = kotahub("devices", "update", gauge, "--lat", "north")
    assert bad.returncode == 2
    assert "--lat" in bad.stderr
    assert "'north' is not a valid" in bad.stderr  # click: number; typer 0.28's copy: float
    retired = kotahub("devices", "retire", gauge)
    assert retired.returncode == 0, retired.stderr
    assert f"retired {gauge}" in retired.stdout
    assert mqtt_login(running_stack, gauge, password) != "Success"


def test_cli_seeds_types(cli: Cli) -> None:
    seed(cli)
    rows = table_rows(cli.run("registry", "types", "seed").stdout)
    assert ["vegapuls_c21", "flood", "level_m, sensor_status, signal_quality_db", "created"] in rows
    again = table_rows(cli.run("registry", "types", "seed").stdout)
    # Rows with a name (a long metric list wraps onto continuation rows without one).
    assert {row[-1] for row in again if row[0]} == {"unchanged"}
    refused = cli.run("registry", "types", "add", "radar", "--family", "flood", "--protocol",
                      "mqtt", "--interval", "300", "--metric", "flow_m3s", code=2)  # fmt: skip
    assert "flow_m3s" in refused.stderr
