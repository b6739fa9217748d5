"""Families declare their device types; a type's metrics are rows of the family's table."""

from __future__ import annotations

from pathlib import Path

import pytest

import drivers
from device_registry.directory import load_device_file
from drivers.contract import KIND_OF_TYPE
from drivers.flood.device_types import published_metrics
from drivers.framework import (
    DeviceTypeSpec,
    DriverConfig,
    DriverFamily,
    Metric,
    discover_families,
)


def test_every_family_declares_types_from_its_own_table() -> None:
    families = discover_families()
    assert {"flood", "ble", "gps"} <= set(families)
    for family in families.values():
        assert family.device_types, family.name
        for spec in family.device_types:
            # A type with a measurement of its own (atcs detectors) declares from that table.
            table = {m.key: m for m in family.type_table(spec)}
            assert set(spec.metrics) <= set(table), (family.name, spec.name)
            wanted = [key for key in table if key in spec.metrics]
            assert wanted, (family.name, spec.name)
            for key in wanted:
                assert table[key].kind == KIND_OF_TYPE[table[key].type]


def test_a_type_cannot_declare_a_metric_its_family_lacks() -> None:
    with pytest.raises(ValueError, match=r"declares \['flow_m3s'\], which the family's metric"):
        DriverFamily(
            name="pumps",
            description="",
            protocols=("x",),
            metrics=(Metric(key="level_m", unit="m", type="float", description=""),),
            config_model=DriverConfig,
            device_types=(
                DeviceTypeSpec(
                    name="p", protocol="x", expected_interval_s=60, metrics=("flow_m3s",)
                ),
            ),
        )


def test_flood_types_follow_the_register_maps() -> None:
    flood = discover_families()["flood"]
    names = [spec.name for spec in flood.device_types]
    assert names == list(flood.models)
    # An invalid-flag register publishes sensor_status = "invalid", not a metric of its own.
    assert published_metrics("vegapuls_c21") == ("level_m", "sensor_status", "signal_quality_db")
    assert flood.device_type("pump_station_plc").metrics == (
        "pump_on",
        "pumps_running",
        "basin_level_m",
        "pump_run_hours",
        "sensor_status",
    )
    assert flood.metric_schema(["pumps_running", "pump_on"]) == {
        "pump_on": "boolean",
        "pumps_running": "integer",
    }
    assert set(flood.device_type("user_defined").metrics) == {m.key for m in flood.metrics}


@pytest.mark.parametrize("family_name", ["flood", "ble", "gps"])
def test_sample_device_files_carry_their_types_schema(family_name: str) -> None:
    family = discover_families()[family_name]
    path = Path(drivers.__file__).parent / family_name / "sample_config.json"
    for record in load_device_file(path):
        expected = family.metric_schema(family.device_type(record.device_type).metrics)
        assert dict(record.metrics) == expected, record.device_id
