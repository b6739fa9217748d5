"""``kotahub demo`` as a user runs it: SIGINT stops everything it started (the stack too, no
process left behind), and a second run starts cleanly and keeps the registered fleet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hub.demo.control import ControlError, control_file, send_command
from tests.conftest import free_port
from tests.demo.conftest import small_fleet

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def demo_env(state_dir: Path) -> dict[str, str]:
    """A demo of its own: state folder and every port free."""
    return {
        **os.environ,
        "KOTAHUB_STATE_DIR": str(state_dir),
        "KOTAHUB_MQTT__PORT": str(free_port()),
        "KOTAHUB_MQTT__TLS_PORT": str(free_port()),
        "KOTAHUB_INFLUX__URL": f"http://127.0.0.1:{free_port()}",
        "KOTAHUB_STACK__INFLUX_RPC_PORT": str(free_port()),
        "KOTAHUB_INGEST__METRICS_PORT": "0",
        "KOTAHUB_REGISTRY__API_PORT": str(free_port()),
    }


def start_demo(
    env: dict[str, str], fleet: Path, first_port: int, out: Path
) -> subprocess.Popen[bytes]:
    """``kotahub demo --plain`` in the background, output to a file."""
    argv = [sys.executable, "-m", "hub", "demo", "--plain", "--speed", "300"]
    argv += ["--fleet-file", str(fleet), "--first-port", str(first_port)]
    with out.open("wb") as handle:
        return subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdout=handle, stderr=handle)


def wait_running(proc: subprocess.Popen[bytes], state_dir: Path, out: Path) -> dict[str, object]:
    """Wait until the demo answers and its hub has written something; its summary."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"demo exited {proc.returncode}:\n{out.read_text()[-3000:]}")
        if control_file(state_dir).exists():
            try:
                reply = send_command(state_dir, {"command": "status"}, timeout_s=10)
            except ControlError:
                reply = {}
            snapshot = reply.get("snapshot")
            if isinstance(snapshot, dict) and int(snapshot.get("lines_written", 0)) > 0:
                return snapshot
        time.sleep(0.3)
    pytest.fail(f"demo not running within 90 s:\n{out.read_text()[-3000:]}")


def descendants(proc: subprocess.Popen[bytes], state_dir: Path) -> list[psutil.Process]:
    """The demo's child processes and the stack's servers (by their PID records)."""
    found = psutil.Process(proc.pid).children(recursive=True)
    for record in (state_dir / "run").glob("*.json"):
        import json

        found.append(psutil.Process(int(json.loads(record.read_text())["pid"])))
    return found


def stop_and_check(
    proc: subprocess.Popen[bytes], state_dir: Path, out: Path, sig: signal.Signals
) -> None:
    """Signal the demo; it exits 0 and leaves no process and no control file behind."""
    started = descendants(proc, state_dir)
    assert {p.name() for p in started} >= {"mosquitto", "influxd"}
    proc.send_signal(sig)
    try:
        code = proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"demo did not stop on {sig.name}:\n{out.read_text()[-3000:]}")
    assert code == 0, out.read_text()[-3000:]
    _gone, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"
    assert not control_file(state_dir).exists()
    assert "stack parts stopped: influxdb, mosquitto" in out.read_text()


def test_ctrl_c_stops_everything_and_a_second_run_keeps_the_fleet(tmp_path: Path) -> None:
    """Run, SIGINT, nothing left; run again: the fleet is kept, not registered again; SIGTERM."""
    state_dir = tmp_path / "state"
    env = demo_env(state_dir)
    fleet = small_fleet(tmp_path / "fleet.json")
    first_port = free_port()  # the same both times: the fleet keeps its addresses
    first_out = tmp_path / "first.log"
    proc = start_demo(env, fleet, first_port, first_out)
    try:
        first = wait_running(proc, state_dir, first_out)
        stop_and_check(proc, state_dir, first_out, signal.SIGINT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "(registered now)" in first_out.read_text()

    second_out = tmp_path / "second.log"
    proc = start_demo(env, fleet, first_port, second_out)
    try:
        second = wait_running(proc, state_dir, second_out)
        assert second["devices_total"] == first["devices_total"]
        assert "(already registered, kept)" in second_out.read_text()
        stop_and_check(proc, state_dir, second_out, signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
