"""The committed board JSON is what the Python generates, and has what Grafana needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboards.grafana import generate
from dashboards.grafana.board_queries import load_boards
from dashboards.grafana.city_figures import DEFAULT_FIGURES, FiguresError, load_figures
from dashboards.grafana.grafana_interpolation import board_targets, board_variables
from dashboards.grafana.influxql_query import DATASOURCE_UID


def test_committed_json_is_what_generation_gives() -> None:
    files = generate.render(load_figures())
    stale = generate.stale_files(files)
    assert not stale, f"regenerate with python -m dashboards.grafana.generate: {stale}"
    assert generate.main(["--check"]) == 0


def test_check_fails_when_a_file_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = generate.render(load_figures())
    board_file = next(p for p in files if p.parent == generate.JSON_DIR)
    copy = tmp_path / board_file.name
    copy.write_text(files[board_file].replace("Water", "Wasser").replace("Kotahub", "K"))
    assert generate.stale_files({copy: files[board_file]}) == [copy]


def test_every_board_has_variables_annotation_and_our_datasource() -> None:
    for uid, board in load_boards().items():
        names = {v["name"] for v in board_variables(board)}
        if uid != "kotahub-indicators":
            assert names & {"kecamatan", "team", "hub"}, uid
        annotation = board["annotations"]["list"][0]
        assert annotation["datasource"]["uid"] == DATASOURCE_UID
        assert 'FROM "alert"' in annotation["target"]["query"]
        targets = list(board_targets(board))
        assert targets, uid
        for panel, target in targets:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert target["rawQuery"] is True
        assert board["schemaVersion"] == generate.SCHEMA_VERSION
    flood = load_boards()["kotahub-flood"]
    assert {"kecamatan", "device", "rollup"} <= {v["name"] for v in board_variables(flood)}


def test_each_gauge_is_drawn_against_its_registry_stages() -> None:
    flood = load_boards()["kotahub-flood"]
    panel = next(p for p in flood["panels"] if p.get("title") == "Level and stages: $gauge")
    assert panel["repeat"] == "gauge"  # one panel per gauge, so each has its own lines
    level, stages = panel["targets"]
    assert '"device_id" =~ /^$gauge$/' in level["query"]
    assert 'FROM "flood_threshold"' in stages["query"]
    assert "$timeFilter" not in stages["query"]  # written on change only: the newest counts
    (config,) = panel["transformations"]
    assert config["id"] == "configFromData"
    assert config["options"]["configRefId"] == stages["refId"]
    assert config["options"]["applyTo"]["options"] == level["refId"]
    assert [m["fieldName"] for m in config["options"]["mappings"]] == [
        "siaga4_m",
        "siaga3_m",
        "siaga2_m",
        "siaga1_m",
    ]
    assert {m["handlerKey"] for m in config["options"]["mappings"]} == {"threshold1"}


def test_the_citys_stages_are_the_all_gauges_panels_thresholds(tmp_path: Path) -> None:
    data = json.loads(DEFAULT_FIGURES.read_text())
    data["flood_stages"] = {"siaga4_m": 0.7, "siaga3_m": 1.1, "siaga2_m": 1.9, "siaga1_m": 2.6}
    other = tmp_path / "figures.json"
    other.write_text(json.dumps(data))
    flood = json.loads(
        generate.render(load_figures(other))[generate.JSON_DIR / "kotahub-flood.json"]
    )
    for title in ("Water level per gauge", "Level now against stage (last hour)"):
        panel = next(p for p in flood["panels"] if p.get("title") == title)
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [None, 0.7, 1.1, 1.9, 2.6], title


def test_per_gauge_stages_in_the_figures_are_refused(tmp_path: Path) -> None:
    """A gauge's stages belong to the registry, where the alert rule reads them."""
    data = json.loads(DEFAULT_FIGURES.read_text())
    stages = data["flood_stages"]
    data["flood_stages"] = {"_default": stages, "smg-bkt-01": stages}
    path = tmp_path / "figures.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FiguresError, match="flood_stages"):
        load_figures(path)


def test_indicators_take_denominators_from_the_figures(tmp_path: Path) -> None:
    data = json.loads(DEFAULT_FIGURES.read_text())
    data["population"] = 123_456
    data["signalised_intersections"] = 41
    other = tmp_path / "figures.json"
    other.write_text(json.dumps(data))
    files = generate.render(load_figures(other))
    text = files[generate.JSON_DIR / "kotahub-indicators.json"]
    assert "* 100000 / 123456" in text
    assert "* 100 / 41" in text


@given(
    st.dictionaries(
        st.sampled_from(
            ["population", "area_km2", "kelurahan_count", "flood_stages", "map_center"]
        ),
        st.one_of(
            st.none(),
            st.integers(-5, 0),
            st.text(alphabet="abxyz -", max_size=5),  # not "1": it would be coerced
            st.lists(st.integers(), min_size=3),  # not 2: a valid map_center
        ),
        min_size=1,
    )
)
def test_bad_figures_are_one_clear_error(
    tmp_path_factory: pytest.TempPathFactory, bad: dict[str, object]
) -> None:
    data = json.loads(DEFAULT_FIGURES.read_text())
    data.update(bad)
    path = tmp_path_factory.mktemp("figures") / "figures.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FiguresError) as caught:
        load_figures(path)
    assert str(path) in str(caught.value)


def test_provisioning_files_match_the_boards() -> None:
    import yaml

    from dashboards.grafana.grafana_interpolation import MIN_INTERVAL_MS, duration_ms

    root = generate.HERE / "provisioning"
    source = yaml.safe_load((root / "datasources" / "kotahub-influxdb.yaml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["uid"] == DATASOURCE_UID
    assert datasource["type"] == "influxdb"
    assert datasource["jsonData"]["version"] == "InfluxQL"
    assert datasource["jsonData"]["dbName"] == "kotahub"
    # the interpolation the query tests use assumes the data source's minimum interval
    assert duration_ms(datasource["jsonData"]["timeInterval"]) == MIN_INTERVAL_MS
    provider = yaml.safe_load((root / "dashboards" / "kotahub.yaml").read_text())
    (files,) = provider["providers"]
    assert files["type"] == "file"
    assert files["options"]["path"].endswith("/kotahub")
