"""Bulk import/export on both databases: dry run, per-line errors, all-or-nothing, idempotence."""

from __future__ import annotations

import json

import pytest

from device_registry.bulk_import import (
    ROW_ERROR,
    ImportFileError,
    export_csv,
    export_geojson,
    import_devices,
    parse_csv,
    parse_geojson,
)
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceQuery
from tests.registry.conftest import seed_catalog

GOOD_AND_BAD = """id,device_type,state,gateway_id,parent_id,kota,kecamatan,kelurahan,rw,rt,tag.zone
nvr-1,nvr-4ch,active,,,Semarang,Tugu,Mangkang Wetan,1,2,west
cam-1,cctv-dome,active,,nvr-1,Semarang,Tugu,Mangkang Wetan,1,2,west
cam-2,cctv-dome,active,,nvr-1,Semarang,Tugu,,1,2,west
cam-3,no-such-type,active,,,Semarang,Tugu,,,,
cam-1,cctv-dome,active,,,Semarang,Tugu,,,,
cam-4,cctv-dome,active,cam-1,,Semarang,Tugu,,,,
cam-5,cctv-dome,active,,,Semarang,Tugu,,,,east
"""


def test_dry_run_reports_each_bad_line_and_writes_nothing(service: RegistryService) -> None:
    seed_catalog(service)
    before = service.revision()
    report = import_devices(service, parse_csv(GOOD_AND_BAD), actor="t", dry_run=True)
    lines = {e.line: e for e in report.errors}
    assert set(lines) == {4, 5, 6, 7}
    assert "rw is set but kelurahan is not" in lines[4].message
    assert lines[5].field == "device_type"
    assert lines[6].field == "id"
    assert "duplicate of line 3" in lines[6].message
    assert lines[7].field == "gateway_id"
    assert (report.created, report.applied) == (3, False)
    assert service.revision() == before
    assert service.list_devices(DeviceQuery()).total == 0


def test_all_or_nothing_then_partial_then_idempotent(service: RegistryService) -> None:
    seed_catalog(service)
    rows = parse_csv(GOOD_AND_BAD)
    strict = import_devices(service, rows, actor="t", all_or_nothing=True)
    assert not strict.applied
    assert service.list_devices(DeviceQuery()).total == 0
    partial = import_devices(service, rows, actor="t")
    assert partial.applied
    assert partial.created == 3
    assert len(partial.errors) == 4
    ids = [d.id for d in service.list_devices(DeviceQuery()).items]
    assert ids == ["cam-1", "cam-5", "nvr-1"]
    assert service.get_device("cam-1").tags == {"zone": "west"}
    assert service.get_device("cam-1").parent_id == "nvr-1"
    revision = service.revision()
    again = import_devices(service, rows, actor="t")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert service.revision() == revision
    changed = import_devices(service, parse_csv("id,kelurahan\ncam-5,Tugurejo\n"), actor="bulk")
    assert changed.updated == 1
    assert service.get_device("cam-5").kelurahan == "Tugurejo"
    assert service.get_device("cam-5").kecamatan == "Tugu"  # absent column: untouched
    audit, _ = service.history("cam-5")
    assert [a.action for a in audit] == ["import_update", "import_create"]


def test_export_round_trips_through_csv_and_geojson(service: RegistryService) -> None:
    seed_catalog(service)
    source = (
        "id,device_type,latitude,longitude,kota,tag.zone\n"
        "g1,flood-gauge,-6.95,110.42,Semarang,north\n"
    )
    assert import_devices(service, parse_csv(source), actor="t").created == 1
    exported = export_csv(service)
    assert import_devices(service, parse_csv(exported), actor="t").unchanged == 1
    geo = export_geojson(service)
    feature = json.loads(geo)["features"][0]
    assert feature["geometry"] == {"type": "Point", "coordinates": [110.42, -6.95]}
    assert import_devices(service, parse_geojson(geo), actor="t").unchanged == 1


def test_unreadable_files_are_refused_whole() -> None:
    with pytest.raises(ImportFileError, match="unknown column"):
        parse_csv("id,colour\nx,red\n")
    with pytest.raises(ImportFileError, match="FeatureCollection"):
        parse_geojson('{"type": "Feature"}')
    rows = parse_geojson(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", '
        '"geometry": {"type": "LineString", "coordinates": []}, '
        '"properties": {"id": "a"}}]}'
    )
    assert rows[0].data[ROW_ERROR][0] == "geometry"


def test_whole_row_problems_name_the_fields_at_fault(service: RegistryService) -> None:
    seed_catalog(service)
    source = (
        "id,device_type,latitude,longitude,kota,kecamatan,kelurahan,rw,parent_id,driver_config\n"
        "p-1,flood-gauge,-6.9,,,,,,,\n"
        "p-2,flood-gauge,,110.4,,,,,,\n"
        "p-3,flood-gauge,,,Semarang,Tugu,,3,,\n"
        "p-4,flood-gauge,,,,,,,p-4,\n"
        "p-5,flood-gauge,,,,,,,,{not json\n"
        "p-6,flood-gauge,,,,,,,,,one cell too many\n"
        "p-7,flood-gauge,-6.9,110.4,Semarang,Tugu,,,,\n"
    )
    report = import_devices(service, parse_csv(source), actor="t", dry_run=True)
    found = {e.line: (e.field, e.message) for e in report.errors}
    assert {line: field for line, (field, _m) in found.items()} == {
        2: "latitude,longitude",
        3: "longitude,latitude",
        4: "rw,kelurahan",
        5: "parent_id",
        6: "driver_config",
        7: "(row)",  # the row's shape, not any one field
    }
    assert found[2][1] == "latitude is given but longitude is not: they come together"
    assert found[4][1].startswith("rw is set but kelurahan is not")
    assert report.created == 1
    geo = parse_geojson(
        '{"type": "FeatureCollection", "features": ['
        '{"type": "Feature", "geometry": {"type": "LineString", "coordinates": []}, '
        '"properties": {"id": "a", "device_type": "flood-gauge"}}, "not a feature"]}'
    )
    geo_report = import_devices(service, geo, actor="t", dry_run=True)
    assert [(e.line, e.field) for e in geo_report.errors] == [(1, "geometry"), (2, "properties")]
