"""Generate the boards' JSON (``python -m dashboards.grafana.generate [--check]``).

The JSON under ``dashboards/grafana/json/`` is committed: Grafana's file provisioning
reads it, and ``--check`` (and tests/dashboards) fails when regenerating would change it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards.grafana.board_kit import ALERT_QUERY, ALERT_TAGS
from dashboards.grafana.boards import (
    cctv,
    fleet,
    flood,
    hub_health,
    indicators,
    overview,
    traffic,
    wifi,
)
from dashboards.grafana.city_figures import DEFAULT_FIGURES, CityFigures, FiguresError, load_figures
from dashboards.grafana.influxql_query import DATASOURCE_UID

HERE = Path(__file__).resolve().parent
JSON_DIR = HERE / "json"
GAZETTEER_FILE = HERE / "gazetteer" / "kotahub-kecamatan.json"
BOARDS: tuple[ModuleType, ...] = (
    overview,
    flood,
    traffic,
    cctv,
    wifi,
    fleet,
    hub_health,
    indicators,
)
# Grafana's dashboard schema version of the 11.x line the SDK (11.6 branch) writes for.
SCHEMA_VERSION = 41


def alert_annotation() -> dict[str, object]:
    """Alerts (raise / ack / clear) from the ``alert`` measurement, on every time panel."""
    target = {
        "refId": "Alerts",
        "query": ALERT_QUERY,
        "rawQuery": True,
        "fromAnnotations": True,
        "textColumn": "message",
        "tagsColumn": ALERT_TAGS,
    }
    return {
        "name": "Alerts",
        "datasource": {"type": "influxdb", "uid": DATASOURCE_UID},
        "enable": True,
        "iconColor": "red",
        # The pre-10 layout too: Grafana's InfluxDB plugin migrates it into ``target``.
        "query": ALERT_QUERY,
        "textColumn": "message",
        "tagsColumn": ALERT_TAGS,
        "target": target,
    }


def compact(panels: list[dict[str, Any]]) -> None:
    """Move each panel up while nothing is in the way, as Grafana's grid does on load.

    The SDK flows panels left to right and starts a new line below the tallest one; the
    committed positions are the ones Grafana would show, so previews match.
    """
    placed: list[dict[str, int]] = []

    def collides(pos: dict[str, int], y: int) -> bool:
        return any(
            pos["x"] < o["x"] + o["w"]
            and o["x"] < pos["x"] + pos["w"]
            and y < o["y"] + o["h"]
            and o["y"] < y + pos["h"]
            for o in placed
        )

    for panel in sorted(panels, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        pos = panel["gridPos"]
        y = pos["y"]
        while y > 0 and not collides(pos, y - 1):
            y -= 1
        pos["y"] = y
        placed.append(pos)


def board_json(builder: dash.Dashboard) -> dict[str, object]:
    """One board as the JSON dict Grafana reads, with the alert annotation added."""
    encoded = json.loads(JSONEncoder(sort_keys=True).encode(builder.build()))
    assert isinstance(encoded, dict)
    encoded["annotations"] = {"list": [alert_annotation()]}
    compact(encoded["panels"])
    encoded["schemaVersion"] = SCHEMA_VERSION
    encoded["id"] = None
    return encoded


def gazetteer(figures: CityFigures) -> list[dict[str, object]]:
    """The geomap's lookup file: each kecamatan's centre."""
    return [
        {"key": name, "latitude": lat, "longitude": lon}
        for name, (lat, lon) in sorted(figures.kecamatan.items())
    ]


def _dump(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render(figures: CityFigures) -> dict[Path, str]:
    """Every generated file and its text."""
    files: dict[Path, str] = {}
    for module in BOARDS:
        build: Callable[[CityFigures], dash.Dashboard] = module.build
        files[JSON_DIR / f"{module.UID}.json"] = _dump(board_json(build(figures)))
    files[GAZETTEER_FILE] = _dump(gazetteer(figures))
    return files


def stale_files(files: dict[Path, str]) -> list[Path]:
    """Files whose committed text differs from what generation gives, or are missing."""
    return [
        path
        for path, text in files.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    """Write the JSON, or with --check say which files are out of date."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--figures", type=Path, default=DEFAULT_FIGURES, help="city figures")
    parser.add_argument("--check", action="store_true", help="fail if the JSON is out of date")
    args = parser.parse_args(argv)
    try:
        figures = load_figures(args.figures)
    except FiguresError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    files = render(figures)
    stale = stale_files(files)
    if args.check:
        for path in stale:
            print(f"out of date: {path} (run python -m dashboards.grafana.generate)")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path], encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
