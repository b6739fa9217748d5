"""``kotahub dashboards push``: upload the generated boards to a Grafana over its HTTP API.

For operators who cannot mount the provisioning files. It reads the committed JSON
(``dashboards/grafana/json/``), puts the boards in a ``Kotahub`` folder, and never replaces
a board someone changed in Grafana unless told to (``--overwrite``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import niquests
import typer
from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaTimeoutError,
    GrafanaUnauthorizedError,
)
from rich.console import Console

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BOARDS_DIR = PROJECT_ROOT / "dashboards" / "grafana" / "json"
FOLDER_UID = "kotahub"
FOLDER_TITLE = "Kotahub"

dashboards_app = typer.Typer(help="Grafana boards: upload them.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


class PushError(Exception):
    """Grafana refused or could not be reached; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Pushed:
    """One board uploaded."""

    uid: str
    title: str
    version: int | None


def load_board_files(directory: Path) -> list[dict[str, Any]]:
    """The boards' JSON, or PushError naming the file that is not a board."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise PushError(f"no board JSON in {directory} (python -m dashboards.grafana.generate)")
    boards = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PushError(f"{path}: {err}") from err
        if not isinstance(data, dict) or not data.get("uid") or "panels" not in data:
            raise PushError(f"{path}: not a Grafana board (no uid or panels)")
        boards.append(data)
    return boards


def _explain(err: Exception, url: str, what: str) -> PushError:
    """One line for an operator: what failed and what to do."""
    if isinstance(err, GrafanaUnauthorizedError) or (
        isinstance(err, GrafanaClientError) and err.status_code == 403
    ):
        return PushError(
            f"Grafana at {url} refused the token ({err.status_code}) while {what}: use a "
            "service account token with the Editor role (Administration > Service accounts)"
        )
    if isinstance(err, GrafanaClientError) and err.status_code == 412:
        return PushError(
            f"version conflict (412) while {what}: the board was changed in Grafana since it "
            "was pushed; keep those changes in the Python boards, or push with --overwrite"
        )
    if isinstance(err, GrafanaTimeoutError):
        return PushError(f"Grafana at {url} did not answer in time while {what}")
    if (isinstance(err, GrafanaException) and err.status_code == 0) or isinstance(
        err, niquests.exceptions.RequestException
    ):
        return PushError(f"cannot reach Grafana at {url} while {what}: {err}")
    if isinstance(err, GrafanaException):
        return PushError(f"Grafana at {url} answered {err.status_code} while {what}: {err.message}")
    return PushError(f"{what}: {err}")


def push_boards(
    url: str,
    token: str,
    boards: Iterable[dict[str, Any]],
    *,
    overwrite: bool = False,
    timeout_s: float = 10.0,
) -> list[Pushed]:
    """Create the folder if missing, then upload each board; PushError on the first refusal."""
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        try:
            api.folder.get_folder(FOLDER_UID)
        except GrafanaClientError as err:
            if err.status_code != 404:
                raise
            api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
    except (GrafanaException, niquests.exceptions.RequestException) as err:
        raise _explain(err, url, f"preparing folder {FOLDER_TITLE}") from err
    pushed = []
    for board in boards:
        payload = {
            "dashboard": {**board, "id": None},
            "folderUid": FOLDER_UID,
            "overwrite": overwrite,
            "message": "kotahub dashboards push",
        }
        try:
            answer = api.dashboard.update_dashboard(payload)
        except (GrafanaException, niquests.exceptions.RequestException) as err:
            raise _explain(err, url, f"pushing {board['uid']}") from err
        version = answer.get("version") if isinstance(answer, dict) else None
        pushed.append(Pushed(str(board["uid"]), str(board.get("title", "")), version))
    return pushed


@dashboards_app.command("push")
def push(
    url: Annotated[str, typer.Option("--url", help="Grafana's address, http(s)://host:port.")],
    token: Annotated[
        str,
        typer.Option("--token", help="Service account token (Editor).", envvar="GRAFANA_TOKEN"),
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace boards changed in Grafana.")
    ] = False,
    directory: Annotated[Path, typer.Option("--from", help="Folder of board JSON.")] = BOARDS_DIR,
) -> None:
    """Upload the boards to Grafana (folder Kotahub)."""
    if not url.startswith(("http://", "https://")):
        err_console.print(f"--url must start with http:// or https://, not {url!r}")
        raise typer.Exit(2)
    try:
        pushed = push_boards(url, token, load_board_files(directory), overwrite=overwrite)
    except PushError as err:
        err_console.print(f"[red]error[/red]: {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from err
    for board in pushed:
        console.print(
            f"pushed {board.uid} ({board.title}), version {board.version}", highlight=False
        )
