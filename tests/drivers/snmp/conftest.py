"""Fixtures for the SNMP families: simulated agents and Debian's snmpd on free ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from drivers.snmp.client import close_family_clients
from drivers.snmp.simulated_agent import SimulatedAgents
from tests.conftest import free_port

V3_USER = "kotahub"
V3_AUTH = "auth-pass-12345"
V3_PRIV = "priv-pass-67890"
COMMUNITY = "kota-ro"


@pytest_asyncio.fixture
async def agents() -> AsyncIterator[SimulatedAgents]:
    """Simulated SNMP agents on loopback; the family clients of the test's loop closed after."""
    served = SimulatedAgents()
    yield served
    served.close()
    close_family_clients()


@dataclass(frozen=True, slots=True)
class Snmpd:
    """A running Debian snmpd: its port, community and v3 user."""

    port: int
    community: str
    user: str
    auth_key: str
    priv_key: str

    @property
    def address(self) -> str:
        """host:port."""
        return f"127.0.0.1:{self.port}"


def free_udp_port() -> int:
    """A UDP port nobody holds now (free_port gives TCP ones; check UDP too)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free UDP port")


@pytest.fixture
def snmpd(tmp_path: Path) -> Iterator[Snmpd]:
    """Debian's snmpd with its own config, port and persistent dir: v2c and v3 authPriv."""
    binary = shutil.which("snmpd") or "/usr/sbin/snmpd"
    port = free_udp_port()
    persistent = tmp_path / "snmpd-state"
    persistent.mkdir()
    conf = tmp_path / "snmpd.conf"
    conf.write_text(
        f"agentAddress udp:127.0.0.1:{port}\n"
        f"rocommunity {COMMUNITY} 127.0.0.1\n"
        f'createUser {V3_USER} SHA "{V3_AUTH}" AES "{V3_PRIV}"\n'
        f"rouser {V3_USER} priv\n"
        "sysLocation Semarang test rack\n"
        "sysContact ops@example.invalid\n"
    )
    log = tmp_path / "snmpd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                "-f",
                "-Lo",
                "-C",
                "-c",
                str(conf),
                "-p",
                str(tmp_path / "snmpd.pid"),
                f"--persistentDir={persistent}",
                "-I",
                "-smux,mteTrigger,mteTriggerConf",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_answering(port, process, log)
        yield Snmpd(port, COMMUNITY, V3_USER, V3_AUTH, V3_PRIV)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_until_answering(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    snmpget = shutil.which("snmpget") or "/usr/bin/snmpget"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"snmpd exited: {log.read_text()[-2000:]}")
        answer = subprocess.run(
            [
                snmpget,
                "-v2c",
                "-c",
                COMMUNITY,
                "-t",
                "0.5",
                "-r",
                "0",
                "-On",
                f"127.0.0.1:{port}",
                "1.3.6.1.2.1.1.3.0",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if answer.returncode == 0:
            return
    raise RuntimeError(f"snmpd did not answer on {port}: {log.read_text()[-2000:]}")
