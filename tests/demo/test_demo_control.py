"""The demo's control channel and fault arguments: one-line errors, exit code 2, no demo needed."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from hub.cli import app
from hub.demo.control import (
    FAULTS,
    ControlError,
    ControlServer,
    NoDemoRunningError,
    control_file,
    parse_duration_s,
    parse_fault,
    send_command,
)


def run_cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run ``kotahub demo ARGS`` on a state folder of this test; exit code and stderr."""
    result = CliRunner().invoke(
        app, ["demo", *args], env={"KOTAHUB_STATE_DIR": str(tmp_path / "state")}
    )
    return result.exit_code, result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fault", "meteor-strike"], "unknown fault 'meteor-strike'"),
        (["fault", "device-dies"], "device-dies needs a device id"),
        (["fault", "influx-outage", "soon"], "is not a duration"),
        (["fault", "influx-outage", "0s"], "must last from 1 s"),
        (["fault", "broker-restart", "now"], "broker-restart takes no argument"),
        (["fault", "device-dies", "flood-001"], "no demo is running"),
        (["heal"], "no demo is running"),
        (["status"], "no demo is running"),
    ],
)
def test_bad_fault_arguments_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    """A typo, a missing argument or no running demo: one line naming it, exit code 2."""
    code, output = run_cli(tmp_path, *args)
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert expected in lines[0]


def test_a_control_file_left_by_a_stopped_demo_says_none_runs(tmp_path: Path) -> None:
    """A demo killed with -9 leaves its file: the command says no demo runs, exit 2."""
    path = control_file(tmp_path / "state")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": 1, "port": 1, "token": "x"}))
    code, output = run_cli(tmp_path, "heal")
    assert code == 2
    assert "no demo is running" in output
    assert "left from one that stopped" in output


@given(st.sampled_from(sorted(FAULTS)), st.one_of(st.none(), st.text(max_size=200)))
def test_parse_fault_accepts_or_names_the_problem(name: str, argument: str | None) -> None:
    """Any argument either parses into a request or raises ControlError (never another error)."""
    try:
        request = parse_fault(name, argument)
    except ControlError as err:
        refusal = str(err)
    else:
        refusal = ""
    if refusal:
        assert "\n" not in refusal
        return
    assert request.name == name
    if name == "influx-outage":
        assert request.duration_s is not None
        assert 1 <= request.duration_s <= 3600
    elif FAULTS[name] is None:
        assert request.target is None
    else:
        assert request.target
        assert request.target == request.target.strip()


@given(st.text(max_size=40))
def test_parse_duration_never_raises_anything_else(text: str) -> None:
    """Durations: a number of seconds within bounds, or one ControlError line."""
    try:
        seconds: float | None = parse_duration_s(text)
    except ControlError as err:
        seconds, refusal = None, str(err)
    if seconds is None:
        assert "\n" not in refusal
    else:
        assert 1 <= seconds <= 3600


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("2m", 120), ("90", 90), ("1.5m", 90)])
def test_durations(text: str, seconds: float) -> None:
    """The forms the docs show."""
    assert parse_duration_s(text) == seconds


@pytest.mark.asyncio
async def test_channel_round_trip_token_and_refusal(tmp_path: Path) -> None:
    """A command reaches the handler; a refusal comes back as ControlError; the file is 0600."""
    seen: list[dict[str, Any]] = []

    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        if request.get("command") == "heal":
            return {"ok": True, "message": "healed"}
        raise ControlError("unknown device 'x'")

    server = ControlServer(tmp_path, handler)
    await server.start()
    try:
        mode = stat.S_IMODE(os.stat(control_file(tmp_path)).st_mode)
        assert mode == 0o600
        reply = await asyncio.to_thread(send_command, tmp_path, {"command": "heal"})
        assert reply["message"] == "healed"
        with pytest.raises(ControlError, match="unknown device 'x'"):
            await asyncio.to_thread(send_command, tmp_path, {"command": "fault"})
        # A wrong token is refused before the handler sees anything.
        info = json.loads(control_file(tmp_path).read_text())
        control_file(tmp_path).write_text(json.dumps({**info, "token": "guess"}))
        with pytest.raises(ControlError, match="wrong control token"):
            await asyncio.to_thread(send_command, tmp_path, {"command": "heal"})
        control_file(tmp_path).write_text(json.dumps(info))
    finally:
        await server.close()
    assert [r["command"] for r in seen] == ["heal", "fault"]
    assert not control_file(tmp_path).exists()
    with pytest.raises(NoDemoRunningError):
        send_command(tmp_path, {"command": "heal"})
