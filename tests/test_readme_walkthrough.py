"""The README's first-device walkthrough, run line by line as a new user types it.

The lines between the README's ``walkthrough start`` and ``walkthrough end`` markers run
in a shell against ``kotahub run`` on the session's broker and InfluxDB. Only what a
user's machine gives differently is substituted: the ports (the test stack's are free
ports, not the defaults), the database name, and the password that ``devices add``
printed. A renamed command, a changed option or a wrong query in the README fails here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import RunningStack, free_port

README = Path(__file__).resolve().parent.parent / "README.md"
PASSWORD = re.compile(r"^\s*password:\s+(\S+)\s*$", re.MULTILINE)


def walkthrough_lines() -> list[str]:
    """The shell lines of the README's walkthrough block, comments and blanks left out."""
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- walkthrough start", 1)[1].split("<!-- walkthrough end", 1)[0]
    body = block.split("```sh\n", 1)[1].split("```", 1)[0]
    return [ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_walkthrough_block_is_where_the_test_expects_it() -> None:
    lines = walkthrough_lines()
    assert any(ln.startswith("kotahub devices add ") for ln in lines)
    assert any(ln.startswith("mosquitto_pub ") and "<password>" in ln for ln in lines)
    assert any(ln.startswith("curl ") for ln in lines)


def test_readme_walkthrough_works_as_written(
    running_stack: RunningStack, influx_db: str, unique_id: str, tmp_path: Path
) -> None:
    api_port = free_port()
    config = tmp_path / "kotahub.toml"  # found in the working folder, as a user's would be
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f"[mqtt]\nport = {running_stack.mqtt_port}\n"
        f"tls_port = {running_stack.settings.mqtt.resolved_tls_port}\n"
        f'password = "{running_stack.mqtt_password}"\n'
        f'[influx]\nurl = "{running_stack.settings.influx.url}"\n'
        f'database = "{influx_db}"\nretention_policy = "autogen"\n'
        f'[ingest]\nclient_id = "{unique_id}-hub"\nshared_group = ""\nmetrics_port = 0\n'
        f"batch_interval_s = 0.2\n"
        f"[registry]\napi_port = {api_port}\n"
    )
    influx_port = str(httpx.URL(running_stack.settings.influx.url).port)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    hub = subprocess.Popen(
        [sys.executable, "-m", "hub", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    transcript: list[str] = []
    try:
        _wait_for_api(api_port)
        password = ""
        for line in walkthrough_lines():
            if line.startswith(("source ", "sleep ")):
                continue  # the venv is on PATH already; the query below waits for itself
            command = (
                line.replace("<password>", password)
                .replace("-p 11883", f"-p {running_stack.mqtt_port}")
                .replace("127.0.0.1:18086", f"127.0.0.1:{influx_port}")
                .replace("db=kotahub", f"db={influx_db}")
            )
            done = _run_until(command, tmp_path, env, want="1.2" if "curl" in line else None)
            transcript.append(f"$ {line}\n{done.stdout}{done.stderr}")
            assert done.returncode == 0, "\n".join(transcript)
            if line.startswith("kotahub devices add "):
                found = PASSWORD.search(done.stdout)
                assert found, "devices add printed no password:\n" + done.stdout
                password = found.group(1)
                # The hub reloads the registry every second; a human takes longer than
                # that to copy the password (a publish within that second is dead-lettered).
                time.sleep(2)
            if line.startswith("curl "):
                for expected in ('"level_m"', "1.2", "gauge-banger-01", "Semarang Timur"):
                    assert expected in done.stdout, done.stdout
    finally:
        hub.send_signal(signal.SIGTERM)
        output = hub.communicate(timeout=60)[0]
        print("\n".join(transcript), output)  # shown by pytest when the test fails
    assert hub.returncode == 0, output


def _wait_for_api(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"kotahub run's API on port {port} did not come up")


def _run_until(
    command: str, cwd: Path, env: dict[str, str], *, want: str | None
) -> subprocess.CompletedProcess[str]:
    """Run a README line in bash; a query line is repeated until its answer holds ``want``."""
    deadline = time.monotonic() + 30
    while True:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if want is None or want in done.stdout or time.monotonic() > deadline:
            return done
        time.sleep(0.5)
