"""Checks before ``kotahub run`` / ``kotahub hub run`` start: one line for each expected failure.

A second hub on the same state, a port another program holds: each would otherwise come
out as a traceback from deep in the start-up (the write-ahead log's lock, a bind in the
metrics server or uvicorn). These checks run first and say what is wrong and what to do.
They are advisory (the parts still check for themselves), so a race between the check
and the start only brings back the parts' own messages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

from hub.ingest.ingest_service import wal_directory
from hub.local_stack import port_in_use
from hub.settings import Settings

WAL_LOCK_FILE = "LOCK"  # hub/ingest/write_ahead_log.py locks <wal_dir>/LOCK with flock


class StartError(Exception):
    """The hub cannot start; the message is one line saying why and what to do."""


def lock_holder(path: Path) -> int | None:
    """PID of the process holding a ``flock`` on ``path`` (from ``/proc/locks``), if known."""
    try:
        info = path.stat()
        with open("/proc/locks") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 28509 fe:00:2150782 0 EOF"; blocked waiters ("->")
        # are not holders.
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None


def check_wal_free(settings: Settings) -> None:
    """Raise StartError when another process holds this hub's write-ahead log."""
    lock_path = wal_directory(settings) / WAL_LOCK_FILE
    try:
        handle = lock_path.open("rb")
    except FileNotFoundError:
        return  # never opened: nothing can hold it
    except OSError:
        return  # the WAL itself will say what is wrong with its folder
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = lock_holder(lock_path)
            who = f"another hub (pid {pid})" if pid else "another hub process"
            raise StartError(
                f"{who} is running on this state: its write-ahead log {lock_path.parent} is "
                "in use; stop it first, or give this hub its own ingest.client_id "
                "(or ingest.wal_dir)"
            ) from None
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def check_port_free(host: str, port: int, setting: str) -> None:
    """Raise StartError when ``host:port`` is taken (a listener, or no bind possible)."""
    if port == 0:
        return
    if port_in_use(host, port):
        raise StartError(
            f"{setting} {port} on {host} is already in use (another kotahub, or another "
            "program): stop it or choose another port"
        )


def bind_listener(host: str, port: int, setting: str) -> socket.socket:
    """A listening TCP socket on host:port for the API server, or StartError saying why.

    Bound here rather than by uvicorn, whose bind failure exits the process from inside a
    task (a SystemExit and a traceback).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise StartError(
                f"{setting} {port} on {host} is already in use (another kotahub run?): "
                "stop it or choose another port"
            ) from err
        raise StartError(f"{setting}: cannot listen on {host}:{port}: {err.strerror}") from err
    sock.set_inheritable(True)
    return sock


def check_before_start(settings: Settings, *, with_api: bool) -> None:
    """Everything a start would trip over that can be seen without starting."""
    check_wal_free(settings)
    ingest = settings.ingest
    check_port_free(ingest.metrics_host, ingest.metrics_port, "ingest.metrics_port")
    if with_api:
        check_port_free(settings.registry.api_host, settings.registry.api_port, "registry.api_port")
