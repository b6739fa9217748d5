"""A real RabbitMQ (Debian ``rabbitmq-server`` 3.10) with its MQTT plugin, for the tests.

Started as a process of the test's own: node name, ports, data and log folders, config
and plugin list all under a temp folder, and an epmd of its own on a free port, so it
never meets a system RabbitMQ. It needs about 20-25 s to start on the 2-core machine;
start-up is bounded (``START_TIMEOUT_S``) and fails with the node's log tail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port

START_TIMEOUT_S = 60.0
SERVER_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server"
USERNAME = PASSWORD = "guest"  # the default user; loopback_users = none lets it in


@dataclass(frozen=True, slots=True)
class RabbitMq:
    """Where the test's RabbitMQ listens for MQTT, and its credentials."""

    host: str
    port: int
    username: str
    password: str
    log_dir: Path


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _log_tail(log_dir: Path, lines: int = 30) -> str:
    text = ""
    for path in sorted(log_dir.glob("*.log")):
        text += f"--- {path.name}\n" + "\n".join(
            path.read_text(errors="replace").splitlines()[-lines:]
        )
    return text


@contextlib.contextmanager
def running_rabbitmq(folder: Path) -> Iterator[RabbitMq]:
    """Start RabbitMQ with rabbitmq_mqtt under ``folder``; stop it (and its epmd) after."""
    server = Path(SERVER_BIN)
    if not server.exists() and shutil.which("rabbitmq-server") is None:
        raise RuntimeError(
            "RabbitMQ is not installed: `apt-get install -y rabbitmq-server` (make system-deps)"
        )
    mqtt_port, node_port, dist_port, epmd_port = (free_port() for _ in range(4))
    (folder / "mnesia").mkdir(parents=True)
    log_dir = folder / "log"
    log_dir.mkdir()
    config = folder / "rabbitmq.conf"
    config.write_text(
        f"listeners.tcp.default = {node_port}\n"
        f"mqtt.listeners.tcp.default = {mqtt_port}\n"
        "mqtt.allow_anonymous = false\n"
        "loopback_users = none\n"
    )
    plugins = folder / "enabled_plugins"
    plugins.write_text("[rabbitmq_mqtt].\n")
    env = {
        **os.environ,
        "HOME": str(folder),
        "RABBITMQ_NODENAME": f"kotahub-test-{mqtt_port}@localhost",
        "RABBITMQ_NODE_PORT": str(node_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(log_dir),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_PID_FILE": str(folder / "rabbitmq.pid"),
    }
    command = [str(server) if server.exists() else "rabbitmq-server"]
    with (folder / "stdout.log").open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _listening(mqtt_port):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq-server exited with {proc.returncode}:\n{_log_tail(log_dir)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"RabbitMQ's MQTT listener not up within {START_TIMEOUT_S:g} s:\n"
                    f"{_log_tail(log_dir)}"
                )
            time.sleep(0.25)
        yield RabbitMq("127.0.0.1", mqtt_port, USERNAME, PASSWORD, log_dir)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        # The epmd this node started on its own port (it daemonizes out of the group).
        subprocess.run(
            ["epmd", "-kill"],
            env={**os.environ, "ERL_EPMD_PORT": str(epmd_port)},
            check=False,
            capture_output=True,
            timeout=10,
        )
