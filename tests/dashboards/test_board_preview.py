"""A board drawn to PNG from its queries' real answers (what make previews does)."""

from __future__ import annotations

from pathlib import Path

from dashboards.grafana.board_preview import render_board
from dashboards.grafana.board_queries import load_boards, run_board
from dashboards.grafana.city_figures import load_figures
from dashboards.grafana.grafana_interpolation import TimeRange
from tests.dashboards.conftest import CityDb

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_flood_and_overview_boards_render(city_db: CityDb, tmp_path: Path) -> None:
    tr = TimeRange(from_ms=city_db.start_ms, to_ms=city_db.end_ms)
    figures = load_figures()
    for uid in ("kotahub-flood", "kotahub-overview"):
        board = load_boards()[uid]
        results = list(run_board(board, city_db.stack.influx, city_db.name, tr))
        out = render_board(board, results, tmp_path / f"{uid}.png", gazetteer=figures.kecamatan)
        data = out.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 30_000  # panels drawn, not an empty frame
