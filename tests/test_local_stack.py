"""`kotahub stack up | status | down` as a user runs it, on a state folder of its own."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from hub.local_stack import LocalStack, StackError
from hub.settings import load_settings
from tests.conftest import free_port


def kotahub(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_config(folder: Path) -> Path:
    cfg = folder / "kotahub.toml"
    cfg.write_text(
        f'state_dir = "{folder / "state"}"\n'
        f"[mqtt]\nport = {free_port()}\ntls_port = {free_port()}\n"
        f'[influx]\nurl = "http://127.0.0.1:{free_port()}"\n'
        f"[stack]\ninflux_rpc_port = {free_port()}\n"
        # Ports of its own for the hub and the API too: `stack status` probes them, and a
        # demo running on the defaults beside the tests must not show up here.
        f"[ingest]\nmetrics_port = {free_port()}\n"
        f"[registry]\napi_port = {free_port()}\n"
    )
    return cfg


def recorded_pids(state: Path) -> list[int]:
    return [json.loads(p.read_text())["pid"] for p in sorted((state / "run").glob("*.json"))]


def test_up_status_down_twice_leaves_nothing_behind(tmp_path: Path) -> None:
    write_config(tmp_path)  # picked up as ./kotahub.toml, as a user would
    for _round in range(2):
        up = kotahub("stack", "up", cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        pids = recorded_pids(tmp_path / "state")
        assert len(pids) == 2
        assert all(psutil.pid_exists(pid) for pid in pids)

        again = kotahub("stack", "up", cwd=tmp_path)  # idempotent: same processes
        assert again.returncode == 0, again.stderr
        assert recorded_pids(tmp_path / "state") == pids

        status = kotahub("stack", "status", cwd=tmp_path)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("running") == 2
        assert "2.0" in status.stdout
        assert "1.6" in status.stdout

        down = kotahub("stack", "down", cwd=tmp_path)
        assert down.returncode == 0, down.stderr
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert recorded_pids(tmp_path / "state") == []

    stopped = kotahub("stack", "status", cwd=tmp_path)
    assert stopped.returncode == 1
    assert stopped.stdout.count("stopped") == 2


def test_database_and_retention_policy_created(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    stack = LocalStack(load_settings(cfg))
    stack.up()
    try:
        from hub.influxql import InfluxQL

        client = InfluxQL(stack.settings.influx.url)
        assert "kotahub" in client.first_column("SHOW DATABASES")
        policies = client.rows('SHOW RETENTION POLICIES ON "kotahub"')
        raw = next(p for p in policies if p["name"] == "raw")
        assert raw["default"] is True
        assert raw["duration"] == "720h0m0s"
    finally:
        stack.down()


def test_missing_binary_names_the_package(tmp_path: Path) -> None:
    settings = load_settings(
        None, state_dir=tmp_path / "s", stack={"influxd_bin": "influxd-not-installed"}
    )
    with pytest.raises(StackError, match=r"Debian package 'influxdb'.*apt-get install influxdb"):
        LocalStack(settings).up()


def test_port_taken_by_someone_else_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = load_settings(None, state_dir=tmp_path / "s", mqtt={"port": port})
        with pytest.raises(StackError, match=rf"mqtt.port {port} .* already in use"):
            LocalStack(settings).up()
    assert not (tmp_path / "s" / "run" / "mosquitto.json").exists()


def test_down_never_stops_a_process_it_did_not_start(tmp_path: Path) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "s" / "run"
        run.mkdir(parents=True)
        # A record whose PID was recycled: same PID, different start time.
        (run / "mosquitto.json").write_text(
            json.dumps({"pid": bystander.pid, "create_time": 1.0, "version": "2.0"})
        )
        lines = LocalStack(load_settings(None, state_dir=tmp_path / "s")).down()
        assert any("stale record removed" in line for line in lines)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
