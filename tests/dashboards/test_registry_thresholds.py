"""Gauge stages from the real registry reach the real InfluxDB, and follow a change there."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from dashboards.grafana.board_queries import load_boards
from dashboards.grafana.grafana_interpolation import (
    ALL,
    Interpolator,
    TimeRange,
    board_targets,
    board_variables,
)
from device_registry.database import open_database
from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceUpdate
from hub.influxql import InfluxQL
from hub.registry_thresholds import (
    MEASUREMENT,
    ThresholdWriter,
    influx_writer,
    start_threshold_writer,
)
from hub.settings import Settings
from tests.conftest import RunningStack
from tests.registry.conftest import seed_catalog

STAGES = {"siaga4_m": "1.2", "siaga3_m": "1.6", "siaga2_m": "2.0", "siaga1_m": "2.4"}


def _stages(influx: InfluxQL, database: str) -> dict[str, dict[str, float]]:
    rows = influx.rows(
        'SELECT last("siaga4_m") AS "siaga4_m", last("siaga3_m") AS "siaga3_m", '
        'last("siaga2_m") AS "siaga2_m", last("siaga1_m") AS "siaga1_m" '
        f'FROM "{MEASUREMENT}" GROUP BY "device_id", "kecamatan"',
        database=database,
    )
    return {
        str(r["device_id"]): {k: r[k] for k in ("kecamatan", *STAGES) if r.get(k) is not None}
        for r in rows
    }


@pytest.fixture
def service(tmp_path: Path) -> RegistryService:
    """A SQLite registry with the test catalogue, two gauges and a camera."""
    service = RegistryService(open_database(f"sqlite:///{tmp_path / 'registry.db'}"))
    seed_catalog(service)
    for device_id, tags in (("g-1", STAGES), ("g-2", {"siaga4_m": "0.5"}), ("cam-1", STAGES)):
        service.create_device(
            DeviceCreate(
                id=device_id,
                device_type="cctv-dome" if device_id.startswith("cam") else "flood-gauge",
                state="active",
                kota="Semarang",
                kecamatan="Genuk",
                tags=tags,
            ),
            actor="t",
            issue_credentials=False,
        )
    return service


def test_a_stage_changed_in_the_registry_is_written_again(
    service: RegistryService, test_settings: Settings, running_stack: RunningStack
) -> None:
    directory = DatabaseDeviceDirectory(service.database)
    writer = ThresholdWriter(directory, influx_writer(test_settings))
    database = test_settings.influx.database

    assert writer.sync() == 2  # on start: both gauges, not the camera
    assert _stages(running_stack.influx, database) == {
        "g-1": {"kecamatan": "Genuk", **{k: float(v) for k, v in STAGES.items()}},
        "g-2": {"kecamatan": "Genuk", "siaga4_m": 0.5},
    }
    assert writer.sync(refresh=True) == 0  # nothing changed: nothing written

    service.update_device(
        "g-1", DeviceUpdate(tags={**STAGES, "siaga1_m": "3.1"}), actor="t", issue_credentials=False
    )
    assert writer.sync(refresh=True) == 1  # only the gauge that changed
    now = _stages(running_stack.influx, database)
    assert now["g-1"]["siaga1_m"] == 3.1
    assert now["g-1"]["siaga4_m"] == 1.2
    assert now["g-2"] == {"kecamatan": "Genuk", "siaga4_m": 0.5}
    # The Flood board's own queries, filled as Grafana fills them, see the new stage.
    for title, device in (
        ("Stages per gauge (registry)", ALL),
        ("Level and stages: $gauge", ["g-1"]),
    ):
        rows = _panel_rows(running_stack.influx, database, title, device)
        assert {r["device_id"]: r["siaga1_m"] for r in rows}["g-1"] == 3.1, title


def _panel_rows(
    influx: InfluxQL, database: str, title: str, device: str | list[str]
) -> list[dict[str, Any]]:
    """The rows of the committed Flood board's flood_threshold target of a panel."""
    board = load_boards()["kotahub-flood"]
    (target,) = [
        t for p, t in board_targets(board) if p["title"] == title and MEASUREMENT in t["query"]
    ]
    all_values = {
        str(v["name"]): str(v["allValue"]) for v in board_variables(board) if "allValue" in v
    }
    now_ms = int(time.time() * 1000)
    statement = Interpolator(
        time_range=TimeRange(from_ms=now_ms - 3_600_000, to_ms=now_ms),
        values={"kecamatan": ALL, "device": ALL, "gauge": device},
        all_values=all_values,
    ).fill(str(target["query"]))
    return influx.rows(statement, database=database)


def test_a_failed_write_is_retried_on_the_next_sync(service: RegistryService) -> None:
    directory = DatabaseDeviceDirectory(service.database)
    batches: list[list[str]] = []
    failing = [True]

    def write(lines: list[str]) -> None:
        if failing[0]:
            raise OSError("InfluxDB down")
        batches.append(lines)

    writer = ThresholdWriter(directory, write)
    with pytest.raises(OSError):
        writer.sync()
    failing[0] = False
    assert writer.sync() == 2
    assert [line.split(",", 1)[0] for line in batches[0]] == [MEASUREMENT, MEASUREMENT]
    assert "siaga1_m=2.4" in batches[0][0]


def test_the_hub_thread_writes_on_start_and_stops(
    service: RegistryService, test_settings: Settings, running_stack: RunningStack
) -> None:
    thread = start_threshold_writer(test_settings, DatabaseDeviceDirectory(service.database))
    assert thread is not None
    try:
        deadline = time.monotonic() + 10
        found: dict[str, dict[str, float]] = {}
        while time.monotonic() < deadline and len(found) < 2:
            found = _stages(running_stack.influx, test_settings.influx.database)
            time.sleep(0.2)
        assert set(found) == {"g-1", "g-2"}
    finally:
        thread.stop()
    v2 = test_settings.model_copy(
        update={"influx": test_settings.influx.model_copy(update={"api": "v2"})}
    )
    assert start_threshold_writer(v2, DatabaseDeviceDirectory(service.database)) is None
