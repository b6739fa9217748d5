"""``kotahub dashboards push`` with grafana-client against a recording Grafana stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app
from hub.dashboards_cli import BOARDS_DIR, FOLDER_UID, PushError, load_board_files, push_boards
from tests.conftest import free_port
from tests.dashboards.grafana_stand_in import GrafanaStandIn


@pytest.fixture
def grafana() -> Iterator[GrafanaStandIn]:
    stand_in = GrafanaStandIn()
    stand_in.start()
    yield stand_in
    stand_in.stop()


def _push(grafana: GrafanaStandIn, *extra: str, token: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["dashboards", "push", "--url", grafana.url, "--token", token or grafana.token, *extra],
    )
    return result.exit_code, result.output


def test_push_uploads_every_board_into_the_folder(grafana: GrafanaStandIn) -> None:
    code, output = _push(grafana)
    assert code == 0, output
    boards = load_board_files(BOARDS_DIR)
    assert set(grafana.dashboards) == {b["uid"] for b in boards}
    assert grafana.folders == {FOLDER_UID: "Kotahub"}
    posts = [r for r in grafana.requests if r.path == "/api/dashboards/db"]
    assert all(r.body["folderUid"] == FOLDER_UID for r in posts)
    assert all(r.body["overwrite"] is False for r in posts)
    assert all(r.headers["Authorization"] == f"Bearer {grafana.token}" for r in posts)
    assert "pushed kotahub-flood" in output
    # a second push finds the folder and bumps versions
    code, output = _push(grafana)
    assert code == 0
    assert grafana.dashboards["kotahub-flood"]["version"] == 2
    assert sum(r.path == "/api/folders" for r in grafana.requests) == 1


def test_refused_token_is_one_clear_line(grafana: GrafanaStandIn) -> None:
    code, output = _push(grafana, token="wrong")
    assert code == 1
    assert "refused the token (401)" in output
    assert "service account token" in output
    assert "Traceback" not in output


def test_version_conflict_names_the_board_and_the_way_out(grafana: GrafanaStandIn) -> None:
    grafana.conflicts.add("kotahub-hub")
    code, output = _push(grafana)
    assert code == 1
    assert "version conflict (412)" in output
    assert "kotahub-hub" in output
    assert "--overwrite" in output
    code, output = _push(grafana, "--overwrite")
    assert code == 0, output
    assert "kotahub-hub" in grafana.dashboards


def test_unreachable_grafana_says_so() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PushError, match=f"cannot reach Grafana at {url}"):
        push_boards(url, "t", load_board_files(BOARDS_DIR), timeout_s=2)
    result = CliRunner().invoke(app, ["dashboards", "push", "--url", url, "--token", "t"])
    assert result.exit_code == 1
    assert "cannot reach Grafana" in result.output


def test_bad_url_and_bad_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["dashboards", "push", "--url", "grafana:3000", "--token", "t"]
    )
    assert result.exit_code == 2
    assert "--url must start with http" in result.output
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(PushError, match=r"x\.json"):
        load_board_files(tmp_path)
    with pytest.raises(PushError, match="no board JSON"):
        load_board_files(tmp_path / "empty")
