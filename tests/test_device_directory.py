"""The registry's read interface, file-backed: validation and refresh on change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from device_registry.directory import (
    DeviceDirectory,
    DeviceRecord,
    DirectoryError,
    FileDeviceDirectory,
    save_device_file,
)


def test_round_trip_and_lookups(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    save_device_file(
        path,
        [
            DeviceRecord(
                device_id="flood-001",
                family="flood",
                device_type="vegapuls-c21",
                gateway_id="gw-1",
                expected_interval_s=60,
                tags={"kecamatan": "Semarang Utara", "team": "bpbd", "site": ""},
                metrics={"level_m": "number", "pumps_running": "integer"},
            ),
            DeviceRecord(device_id="bus-7", family="gps", device_type="gps", state="retired"),
        ],
    )
    directory = FileDeviceDirectory(path)
    assert isinstance(directory, DeviceDirectory)
    flood = directory.get("flood-001")
    assert flood is not None
    assert flood.influx_tags() == {
        "device_id": "flood-001",
        "family": "flood",
        "kecamatan": "Semarang Utara",
        "team": "bpbd",
    }
    assert [d.device_id for d in directory.devices_for_gateway("gw-1")] == ["flood-001"]
    assert dict(flood.metrics) == {"level_m": "number", "pumps_running": "integer"}
    bus = directory.get("bus-7")
    assert bus is not None
    assert not bus.accepts_data
    assert dict(bus.metrics) == {}  # absent: the type declares none
    assert directory.get("nope") is None


def test_refresh_picks_up_changes_and_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text(json.dumps([{"device_id": "a", "family": "ble", "device_type": "t"}]))
    directory = FileDeviceDirectory(path)
    generation = directory.generation
    assert directory.refresh() is False

    path.write_text(
        json.dumps(
            [
                {"device_id": "a", "family": "ble", "device_type": "t"},
                {"device_id": "b", "family": "ble", "device_type": "t"},
            ]
        )
    )
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    assert directory.refresh() is True
    assert directory.get("b") is not None
    assert directory.generation > generation

    path.write_text('[{"device_id": "c", "family": "ble"}]')
    with pytest.raises(DirectoryError, match=r"entry 0: field 'device_type'"):
        directory.refresh()
    assert directory.get("b") is not None  # the last good snapshot still serves


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{}", "expected a JSON list"),
        ("[1]", "entry 0: expected an object"),
        ('[{"device_id": "x", "family": "f", "device_type": "t", "colour": 1}]', "unknown"),
        ('[{"device_id": "x", "family": "f", "device_type": "t", "state": "gone"}]', "state"),
        (
            '[{"device_id": "x", "family": "f", "device_type": "t", "expected_interval_s": 0}]',
            "expected_interval_s",
        ),
        ("not json", "not a readable JSON"),
        (
            '[{"device_id": "x", "family": "f", "device_type": "t", "metrics": ["level_m"]}]',
            "field 'metrics' must be an object",
        ),
        (
            '[{"device_id": "x", "family": "f", "device_type": "t", "metrics": {"Level": "bool"}}]',
            "'Level' is not an allowed metric name",
        ),
        (
            '[{"device_id": "x", "family": "f", "device_type": "t", "metrics": {"site": "x"}}]',
            "'site' is not an allowed metric name",
        ),
        (
            '[{"device_id": "x", "family": "f", "device_type": "t", "metrics": {"n": "float"}}]',
            r"metrics\.n: kind must be one of number, integer, boolean, string",
        ),
    ],
)
def test_bad_files_name_the_reason(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "devices.json"
    path.write_text(content)
    with pytest.raises(DirectoryError, match=reason):
        FileDeviceDirectory(path)
