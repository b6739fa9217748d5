"""The cctv family as the agent and the registry see it: discovery, types, the sample file."""

from __future__ import annotations

from pathlib import Path

import drivers
from device_registry.directory import load_device_file
from drivers.cctv import FAMILY
from drivers.framework import DeviceSpec, discover_families


def test_family_is_discovered_with_both_protocols() -> None:
    family = discover_families()["cctv"]
    assert family is FAMILY
    assert set(family.protocols) == {"onvif", "isapi"}
    assert {t.name for t in family.device_types} == {
        "rt_camera",
        "atcs_camera",
        "corporate_camera",
        "hikvision_isapi_camera",
        "nvr_4ch",
    }
    # Every camera is health-checked within 5 minutes.
    assert all(t.expected_interval_s <= 300 for t in family.device_types)


def test_sample_file_carries_each_types_schema_and_validates() -> None:
    path = Path(drivers.__file__).parent / "cctv" / "sample_config.json"
    records = load_device_file(path)
    assert len(records) == 4
    for record in records:
        expected = FAMILY.metric_schema(FAMILY.device_type(record.device_type).metrics)
        assert dict(record.metrics) == expected, record.device_id
        FAMILY.validate(
            DeviceSpec(
                device_id=record.device_id,
                device_type=record.device_type,
                protocol=record.protocol or "",
                address=record.address,
                driver_config=record.driver_config,
            )
        )
