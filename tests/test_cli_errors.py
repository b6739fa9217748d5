"""Expected failures of the hub's commands come out as one line and a non-zero exit.

Each case runs the real CLI as a subprocess (``python -m hub``) against the session's
Mosquitto and InfluxDB, and asserts one line on stderr and no traceback (issue 13,
item 10: a second ``kotahub run`` printed 64 lines of traceback first).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from device_registry import cli as dr_cli
from hub import cli
from hub.agent.agent import AgentFatalError
from hub.start_checks import lock_holder
from tests.conftest import RunningStack, free_port
from tests.test_one_machine import wait_until


def kotahub(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line on stderr (the assertion shows everything when there are more)."""
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def write_config(
    path: Path,
    stack: RunningStack,
    *,
    state: Path,
    database: str,
    client_id: str,
    api_port: int,
    metrics_port: int,
) -> Path:
    """A kotahub.toml on the session stack; WARNING so start-up INFO lines stay out of stderr."""
    path.write_text(
        f'state_dir = "{state}"\nlog_level = "WARNING"\n'
        f"[mqtt]\nport = {stack.mqtt_port}\n"
        f'password = "{stack.mqtt_password}"\n'
        f'[influx]\nurl = "{stack.settings.influx.url}"\n'
        f'database = "{database}"\nretention_policy = "autogen"\n'
        f'[ingest]\nclient_id = "{client_id}"\nshared_group = ""\n'
        f"metrics_port = {metrics_port}\n"
        f"[registry]\napi_port = {api_port}\nmqtt_identities = false\n"
    )
    return path


@pytest.fixture
def config(running_stack: RunningStack, influx_db: str, unique_id: str, tmp_path: Path) -> Path:
    """Settings for one hub of this test's own."""
    return write_config(
        tmp_path / "kotahub.toml",
        running_stack,
        state=tmp_path / "state",
        database=influx_db,
        client_id=f"{unique_id}-hub",
        api_port=free_port(),
        metrics_port=free_port(),
    )


@pytest.fixture
def listening() -> Iterator[int]:
    """A port another program holds (a listening socket of the test's own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def test_a_running_hub_is_in_stack_status_and_a_second_one_names_its_pid(
    config: Path, tmp_path: Path
) -> None:
    first = subprocess.Popen(
        [sys.executable, "-m", "hub", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        metrics_port = int(config.read_text().split("metrics_port = ")[1].split()[0])

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{metrics_port}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s=90)
        # `stack status` shows the hub and the API that run on this state's ports.
        status = subprocess.run(
            [sys.executable, "-m", "hub", "stack", "status", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
            check=False,
        )
        rows = {
            cells[0]: cells[1:]
            for line in status.stdout.splitlines()
            if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 6
        }
        api_port = int(config.read_text().split("api_port = ")[1].split()[0])
        assert rows["hub"][:4] == ["running", str(metrics_port), "-", str(first.pid)], status
        assert rows["registry API"][:4] == ["running", str(api_port), "-", str(first.pid)]
        assert rows["mosquitto"][0] == "stopped"  # not this state's stack: exit 1
        assert status.returncode == 1

        second = kotahub("run", "--config", str(config))
        line = one_line(second)
        assert second.returncode == 2
        assert line.startswith(f"kotahub run cannot start: another hub (pid {first.pid})"), line
        assert "ingest.client_id" in line

        hub_only = kotahub("hub", "run", "--config", str(config))
        line = one_line(hub_only)
        assert hub_only.returncode == 1
        assert line.startswith(f"hub failed: another hub (pid {first.pid})"), line
    finally:
        first.send_signal(signal.SIGTERM)
        output = first.communicate(timeout=30)[0]
        print(output)
    assert first.returncode == 0, output
    status = kotahub("stack", "status", "--config", str(config))
    assert "│ hub" not in status.stdout, status.stdout  # shown only while it runs


def test_api_port_taken_is_one_line(config: Path, listening: int) -> None:
    text = config.read_text()
    api_port = text.split("api_port = ")[1].split()[0]
    config.write_text(text.replace(f"api_port = {api_port}", f"api_port = {listening}"))
    result = kotahub("run", "--config", str(config))
    assert result.returncode == 2
    assert one_line(result) == (
        f"kotahub run cannot start: registry.api_port {listening} on 127.0.0.1 is already in "
        "use (another kotahub, or another program): stop it or choose another port"
    )


def test_metrics_port_taken_is_one_line(config: Path, listening: int) -> None:
    text = config.read_text()
    port = text.split("metrics_port = ")[1].split()[0]
    config.write_text(text.replace(f"metrics_port = {port}", f"metrics_port = {listening}"))
    result = kotahub("hub", "run", "--config", str(config))
    assert result.returncode == 1
    assert one_line(result).startswith(
        f"hub failed: ingest.metrics_port {listening} on 127.0.0.1 is already in use"
    )


def test_wrong_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "kotahub.toml"
    bad.write_text("state_dir = \n")
    for command in (["run"], ["stack", "status"]):
        result = kotahub(*command, "--config", str(bad))
        assert result.returncode == 2
        assert one_line(result).startswith(f"configuration error: {bad}: not valid TOML")


def test_invalid_settings_are_a_line_each(tmp_path: Path) -> None:
    bad = tmp_path / "kotahub.toml"
    bad.write_text('[mqtt]\nport = "x"\n[ingest]\nbatch_lines = 0\n')
    result = kotahub("hub", "run", "--config", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    head, *settings = result.stderr.strip().splitlines()
    assert head == f"configuration error: {bad}: 2 invalid setting(s)"
    assert [line.split(":")[0].strip() for line in settings] == [
        "mqtt.port",
        "ingest.batch_lines",
    ]


def test_agent_fatal_error_in_the_task_group_is_one_line(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: the agent's fatal error is raised from inside run_one_machine's TaskGroup.

    Only run_one_machine is replaced (by a TaskGroup whose task raises, as the agent's
    does); the CLI's handling is the real one.
    """
    import hub.one_machine

    async def agent_dies(*_args: object, **_kwargs: object) -> None:
        async def agent() -> None:
            raise AgentFatalError("agent gw-1 stopped: task publisher failed: outbox is damaged")

        async with asyncio.TaskGroup() as group:
            group.create_task(agent())

    monkeypatch.setattr(hub.one_machine, "run_one_machine", agent_dies)
    result = CliRunner().invoke(cli.app, ["run", "--no-api", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == (
        "kotahub run stopped: agent gw-1 stopped: task publisher failed: outbox is damaged"
    )


def test_lock_holder_reads_the_pid_from_proc_locks(tmp_path: Path) -> None:
    path = tmp_path / "LOCK"
    with path.open("a") as handle:
        assert lock_holder(path) is None
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock_holder(path) == os.getpid()


def test_stack_not_up_adds_the_hint(tmp_path: Path, running_stack: RunningStack) -> None:
    """The hub's 30 s wait for a broker ends in one line that says the stack is not up.

    The wait itself is the ingest service's (30 s, too long for a test); what the CLI
    adds to its IngestError is checked against a port where nothing listens, and against
    the session's running broker, where a hint would mislead.
    """
    from hub.ingest.ingest_service import IngestError
    from hub.settings import load_settings

    port = free_port()
    down = load_settings(None, state_dir=tmp_path, mqtt={"port": port})
    error = IngestError(f"not subscribed to 127.0.0.1:{port} within 30.0 s")
    assert cli._broker_hint(down, error) == (
        f" (nothing answers on 127.0.0.1:{port}: is the stack up? `kotahub stack up`)"
    )
    up = load_settings(None, state_dir=tmp_path, mqtt={"port": running_stack.mqtt_port})
    assert cli._broker_hint(up, error) == ""
    assert cli._broker_hint(down, OSError("other")) == ""


def registry_config(path: Path, state: Path, *, extra: str = "") -> Path:
    """Settings for registry commands only, on a state directory of the test's own."""
    path.write_text(f'state_dir = "{state}"\nlog_level = "WARNING"\n{extra}')
    return path


def registry_with_type(state: Path, protocol: str) -> Path:
    """A registry database with one device type, ``gauge``; returns the database's path."""
    from device_registry.database import open_database
    from device_registry.registry_service import RegistryService
    from device_registry.registry_settings import DATABASE_FILE
    from device_registry.schemas import DeviceTypeCreate, MetricSpec

    state.mkdir(parents=True, exist_ok=True)
    path = state / DATABASE_FILE
    database = open_database(f"sqlite:///{path}")
    RegistryService(database).create_type(
        DeviceTypeCreate(
            name="gauge",
            family="flood",
            protocol=protocol,
            expected_interval_s=60,
            metrics=[MetricSpec(name="level_m", unit="m")],
        ),
        actor="test",
    )
    database.close()
    return path


def device_ids(path: Path) -> list[str]:
    """The devices in a registry database file, read with the standard library."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM devices")]


def test_a_locked_registry_database_is_one_line(tmp_path: Path) -> None:
    """Another process holding SQLite's write lock: one line naming the file, no SQL.

    Before, ``devices add`` printed five lines ending in the INSERT statement and the
    device's whole row. The wait is the database's busy timeout (10 s, not a setting).
    """
    state = tmp_path / "state"
    path = registry_with_type(state, "modbus_tcp")
    config = registry_config(
        tmp_path / "kotahub.toml", state, extra="[registry]\nmqtt_identities = false\n"
    )
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = kotahub("devices", "add", "g-locked", "--type", "gauge", "-c", str(config))
    finally:
        holder.close()
    assert result.returncode == 1, result.stderr
    line = one_line(result)
    assert re.fullmatch(
        rf"database error: the registry database {re.escape(str(path))} is locked by another"
        r" process \(waited \d+ s\): try again when it is free",
        line,
    ), line
    assert "INSERT" not in result.stderr + result.stdout
    assert device_ids(path) == []


def test_other_database_errors_are_one_line_without_the_statement() -> None:
    """Any other SQLAlchemy error: the driver's message only, on one line."""
    from sqlalchemy.exc import OperationalError

    error = OperationalError(
        "INSERT INTO devices (id) VALUES (?)", ("g-1",), sqlite3.OperationalError("disk I/O error")
    )
    assert "[SQL:" in str(error)
    line = dr_cli.database_error_line(error, "sqlite:////x/registry.sqlite3", 0.1)
    assert line == "disk I/O error"


def test_adding_an_mqtt_device_with_the_broker_down_is_one_line(tmp_path: Path) -> None:
    """The broker is unreachable: one line says so and that the device was not created."""
    state = tmp_path / "state"
    path = registry_with_type(state, "mqtt")
    port = free_port()
    config = registry_config(
        tmp_path / "kotahub.toml", state, extra=f'[mqtt]\nport = {port}\npassword = "x"\n'
    )
    result = kotahub(
        "devices", "add", "g-mqtt", "--type", "gauge", "--state", "active", "-c", str(config)
    )
    assert result.returncode == 1, result.stderr
    line = one_line(result)
    assert line.startswith(f"error: cannot reach the MQTT broker at 127.0.0.1:{port}:"), line
    assert "device g-mqtt was not created" in line, line
    assert device_ids(path) == []
