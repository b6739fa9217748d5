"""The control channel between ``kotahub demo fault ...`` and the running demo.

The running demo listens on a loopback TCP port and writes the port and a random token to
``<state_dir>/demo/control.json`` (mode 0600, so only its owner can read the token). A
command is one JSON line (``{"token", "command", ...}``) and its answer one JSON line
(``{"ok": bool, "message": str}``). Fault names and arguments are checked here, before
anything is sent, so that a typo is one line and exit code 2 even with no demo running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTROL_FILE = "control.json"
MAX_LINE_BYTES = 64 * 1024
REPLY_TIMEOUT_S = 30.0
# What each fault takes: None for no argument, else what the argument names.
FAULTS: dict[str, str | None] = {
    "device-dies": "a device id",
    "gateway-cut": "a gateway id",
    "flood-rises": "an area (kecamatan name or slug)",
    "broker-restart": None,
    "influx-outage": "a duration such as 60s, 2m or 90",
}
MAX_OUTAGE_S = 3600.0
_DURATION = re.compile(r"([0-9]{1,5}(?:\.[0-9]{1,3})?)\s*(s|m|min)?")
_TARGET = re.compile(r"[\w .\-]{1,128}")


class ControlError(Exception):
    """A demo command cannot be sent or was refused: one line that says why."""


class NoDemoRunningError(ControlError):
    """No demo answers on this state folder."""


@dataclass(frozen=True, slots=True)
class FaultRequest:
    """One checked fault: its name and its argument (an id, an area or seconds)."""

    name: str
    target: str | None = None
    duration_s: float | None = None

    def as_message(self) -> dict[str, Any]:
        """The request as sent over the channel (without the token)."""
        return {
            "command": "fault",
            "fault": self.name,
            "target": self.target,
            "duration_s": self.duration_s,
        }


def parse_duration_s(text: str) -> float:
    """``60s``, ``2m`` or ``90`` (seconds) as seconds, 1 s to 1 h; ControlError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ControlError(f"influx-outage: {text!r} is not a duration (60s, 2m or 90)")
    seconds = float(match.group(1)) * (60 if match.group(2) in ("m", "min") else 1)
    if not 1 <= seconds <= MAX_OUTAGE_S:
        raise ControlError(f"influx-outage: {text!r} must last from 1 s to {MAX_OUTAGE_S:.0f} s")
    return seconds


def parse_fault(name: str, argument: str | None) -> FaultRequest:
    """Check a fault's name and argument; ControlError names what is wrong and what fits."""
    wanted = FAULTS.get(name)
    if name not in FAULTS:
        raise ControlError(f"unknown fault {name!r}: expected one of {', '.join(FAULTS)}")
    if wanted is None:
        if argument is not None:
            raise ControlError(f"{name} takes no argument (got {argument!r})")
        return FaultRequest(name)
    if argument is None or not argument.strip():
        raise ControlError(f"{name} needs {wanted}: kotahub demo fault {name} ARG")
    if name == "influx-outage":
        return FaultRequest(name, duration_s=parse_duration_s(argument))
    target = argument.strip()
    if _TARGET.fullmatch(target) is None:
        raise ControlError(f"{name}: {argument[:60]!r} is not {wanted}")
    return FaultRequest(name, target=target)


def fault_from_message(message: dict[str, Any]) -> FaultRequest:
    """The fault a channel message asks for, checked again (the sender may be anything)."""
    name = str(message.get("fault", ""))
    if name == "influx-outage":
        duration = message.get("duration_s")
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise ControlError("influx-outage: duration_s must be a number of seconds")
        return parse_fault(name, f"{duration:g}")
    target = message.get("target")
    return parse_fault(name, None if target is None else str(target))


def control_file(state_dir: Path) -> Path:
    """Where the running demo says how to reach it."""
    return state_dir / "demo" / CONTROL_FILE


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    """The running demo's end: answers one JSON line per connection."""

    def __init__(self, state_dir: Path, handler: Handler) -> None:
        self.path = control_file(state_dir)
        self.handler = handler
        self.token = secrets.token_urlsafe(24)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on a free loopback port and write the control file (0600)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_LINE_BYTES)
        port = self._server.sockets[0].getsockname()[1]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": os.getpid(), "port": port, "token": self.token}, handle)
        os.replace(tmp, self.path)

    async def close(self) -> None:
        """Stop listening and remove the control file (only if it is still ours)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), 10)
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
            except (ValueError, asyncio.LimitOverrunError, TimeoutError) as err:
                reply: dict[str, Any] = {"ok": False, "message": f"bad request: {err}"}
            else:
                token = request.pop("token", "")
                if not isinstance(token, str) or not secrets.compare_digest(token, self.token):
                    reply = {"ok": False, "message": "wrong control token"}
                else:
                    try:
                        reply = await self.handler(request)
                    except ControlError as err:
                        reply = {"ok": False, "message": str(err)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def send_command(
    state_dir: Path, message: dict[str, Any], *, timeout_s: float = REPLY_TIMEOUT_S
) -> dict[str, Any]:
    """Send one command to the demo running on ``state_dir``; return its answer.

    NoDemoRunningError when there is no control file or nothing answers on its port;
    ControlError when the demo refused the command (the message says why).
    """
    path = control_file(state_dir)
    try:
        info = json.loads(path.read_text())
        port, token = int(info["port"]), str(info["token"])
    except FileNotFoundError:
        raise NoDemoRunningError(
            f"no demo is running on {state_dir} (start one: kotahub demo)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ControlError(f"{path}: cannot read the demo's control file: {err}") from err
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(json.dumps({"token": token, **message}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n") and len(data) < MAX_LINE_BYTES:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except ConnectionRefusedError:
        raise NoDemoRunningError(
            f"no demo is running on {state_dir} (its control file is left from one that "
            "stopped; start one: kotahub demo)"
        ) from None
    except OSError as err:
        raise ControlError(f"the demo on port {port} did not answer: {err}") from err
    try:
        reply = json.loads(data)
    except ValueError as err:
        raise ControlError(f"the demo's answer is not JSON: {data[:80]!r}") from err
    if not isinstance(reply, dict):
        raise ControlError(f"the demo's answer is not an object: {data[:80]!r}")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("message", "refused")))
    return reply
