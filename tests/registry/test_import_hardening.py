"""Import and export hardening (issues 12 and 13): bad files are 422 with the reason, never
500; the CSV export runs nothing in a spreadsheet; the template, column order and messages."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from device_registry.bulk_import import (
    EXPORT_COLUMNS,
    csv_template,
    export_csv,
    import_devices,
    parse_csv,
    safe_cell,
)
from device_registry.registry_service import RegistryService
from device_registry.schemas import ROLES, DeviceCreate, DeviceQuery, DeviceUpdate
from device_registry.web_api import create_app
from hub.cli import app as kotahub
from tests.registry.conftest import seed_catalog
from tests.registry.test_web_api import Api


@pytest.fixture
def api(service: RegistryService) -> Iterator[Api]:
    """The real API on both databases, with one token per role."""
    from device_registry.api_tokens import create_token

    seed_catalog(service)
    tokens = {
        role: create_token(service.database, name=f"{role}-t", role=role, actor="t").token
        for role in ROLES
    }
    # raise_server_exceptions: a 500 would surface here as the exception itself.
    with TestClient(create_app(service)) as client:
        yield Api(client, service, tokens)


def post_import(api: Api, body: str, fmt: str = "csv", **params: Any) -> Any:
    """POST a file to the import route as a provisioner."""
    query = "&".join(f"{k}={str(v).lower()}" for k, v in {"format": fmt, **params}.items())
    return api.client.post(
        f"/api/v1/devices/import?{query}", content=body.encode(), headers=api.headers("provisioner")
    )


def problem(response: Any, *words: str) -> str:
    """The 422 problem's detail, holding every word."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail: str = response.json()["detail"]
    for word in words:
        assert word in detail, detail
    return detail


# -- bad files: 422, never 500 ------------------------------------------------------------
def test_a_cell_over_131072_characters_is_a_422_naming_the_line(api: Api) -> None:
    body = "id,device_type,vendor\ncam-1,cctv-dome,ok\ncam-2,cctv-dome," + "v" * 131_073 + "\n"
    problem(post_import(api, body), "line 3", "longer than 131,072 characters")


def test_a_parent_cycle_in_the_file_is_reported_by_row(api: Api) -> None:
    body = (
        "id,device_type,parent_id\ncam-a,cctv-dome,cam-b\ncam-b,cctv-dome,cam-a\ncam-c,cctv-dome,\n"
    )
    report = post_import(api, body, dry_run=False)
    assert report.status_code == 200, report.text
    errors = {e["line"]: e for e in report.json()["errors"]}
    assert set(errors) == {2, 3}
    assert errors[2]["field"] == "parent_id"
    assert "reference cycle" in errors[2]["message"]
    assert "cam-a -> cam-b -> cam-a" in errors[2]["message"]
    assert [d.id for d in api.service.list_devices(DeviceQuery()).items] == ["cam-c"]


def test_a_cycle_through_stored_devices_is_refused_by_import_and_by_patch(api: Api) -> None:
    service = api.service
    service.create_device(DeviceCreate(id="nvr-1", device_type="nvr-4ch"), actor="t")
    service.create_device(
        DeviceCreate(id="cam-1", device_type="cctv-dome", parent_id="nvr-1"), actor="t"
    )
    report = post_import(api, "id,parent_id\nnvr-1,cam-1\n", dry_run=False).json()
    assert report["errors"][0]["field"] == "parent_id", report
    assert "nvr-1 -> cam-1 -> nvr-1" in report["errors"][0]["message"]
    patched = api.client.patch(
        "/api/v1/devices/nvr-1", json={"parent_id": "cam-1"}, headers=api.headers("admin")
    )
    problem(patched, "reference cycle")
    assert patched.json()["field"] == "parent_id"
    assert service.get_device("nvr-1").parent_id is None


def test_a_row_whose_parent_row_is_rejected_is_reported_not_a_500(api: Api) -> None:
    # nvr-1's row fails (unknown site); cam-1 names it as parent: the insert must not be
    # tried (it would break the foreign key).
    body = "id,device_type,site_id,parent_id\nnvr-1,nvr-4ch,nowhere,\ncam-1,cctv-dome,,nvr-1\n"
    report = post_import(api, body, dry_run=False)
    assert report.status_code == 200, report.text
    errors = {e["line"]: e for e in report.json()["errors"]}
    assert errors[2]["field"] == "site_id"
    assert errors[3]["field"] == "parent_id"
    assert "its own row is rejected" in errors[3]["message"]
    assert api.service.list_devices(DeviceQuery()).total == 0


def test_deeply_nested_geojson_is_a_422(api: Api) -> None:
    depth = 100_000
    body = '{"type": "FeatureCollection", "features": [' + "[" * depth + "]" * depth + "]}"
    problem(post_import(api, body, fmt="geojson"), "nested too deeply")


def test_deep_driver_config_is_a_row_error_in_geojson_csv_and_json(api: Api) -> None:
    deep: Any = 1
    for _ in range(40):
        deep = {"a": deep}
    feature = {"type": "Feature", "geometry": None, "properties": {"id": "cam-1",
               "device_type": "cctv-dome", "driver_config": deep}}  # fmt: skip
    geo = post_import(api, json.dumps({"type": "FeatureCollection", "features": [feature]}),
                      fmt="geojson")  # fmt: skip
    assert geo.json()["errors"][0]["field"] == "driver_config", geo.text
    assert "nested deeper than 16" in geo.json()["errors"][0]["message"]
    cell = json.dumps(deep).replace('"', '""')
    flat = post_import(api, f'id,device_type,driver_config\ncam-1,cctv-dome,"{cell}"\n')
    assert flat.json()["errors"][0]["field"] == "driver_config", flat.text
    # A JSON body nested past Python's recursion limit: 422, not a bare 400 or a 500.
    body = "[" * 100_000 + "]" * 100_000
    bulk = api.client.post(
        "/api/v1/devices/bulk",
        content=body.encode(),
        headers={**api.headers("admin"), "Content-Type": "application/json"},
    )
    problem(bulk, "nested too deeply")


# -- export: formula cells ------------------------------------------------------------------
def test_safe_cell() -> None:
    for formula in ("=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx", "'=x"):
        assert safe_cell(formula) == "'" + formula
    for plain in ("-6.97", "+62", "110.45", "1e5", "abc", ""):
        assert safe_cell(plain) == plain


def test_the_csv_export_neutralises_formula_cells_and_reimports_unchanged(api: Api) -> None:
    service = api.service
    service.create_device(
        DeviceCreate(
            id="cam-1",
            device_type="cctv-dome",
            vendor='=HYPERLINK("http://evil","x")',
            model="@SUM(1+1)",
            serial="-2+3",
            firmware_version="+1.2.0",
            protocol_address="'=quoted",
            latitude=-6.97,
            longitude=110.45,
            tags={"zone": "=cmd|' /C calc'!A0", "pole": "P-1"},
        ),
        actor="t",
    )
    text = api.client.get("/api/v1/devices/export", headers=api.headers("viewer")).text
    rows = list(csv.DictReader(io.StringIO(text)))
    cells = rows[0]
    assert cells["vendor"] == '\'=HYPERLINK("http://evil","x")'
    assert cells["model"] == "'@SUM(1+1)"
    assert cells["serial"] == "'-2+3"
    assert cells["firmware_version"] == "'+1.2.0"
    assert cells["protocol_address"] == "''=quoted"
    assert cells["tag.zone"] == "'=cmd|' /C calc'!A0"
    assert cells["tag.pole"] == "P-1"
    assert cells["latitude"] == "-6.97"  # a plain number runs nothing
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")) or value == "-6.97"
    again = import_devices(service, parse_csv(text), actor="t")
    assert (again.errors, again.unchanged, again.updated) == ([], 1, 0)


def test_tag_values_influxdb_cannot_store_are_row_errors_on_import(api: Api) -> None:
    body = 'id,device_type,tag.path\ncam-1,cctv-dome,C:\\cams\\\ncam-2,cctv-dome,"a\nb"\n'
    errors = post_import(api, body).json()["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [(2, "tags"), (4, "tags")]
    assert "backslash" in errors[0]["message"]
    assert "newlines" in errors[1]["message"]
    with pytest.raises(ValueError, match="backslash"):
        DeviceUpdate(tags={"path": "x\\"})


# -- issue 13 item 7: template, column order, messages --------------------------------------
def test_the_export_puts_id_first(api: Api) -> None:
    api.service.create_device(DeviceCreate(id="cam-1", device_type="cctv-dome"), actor="t")
    header = export_csv(api.service).splitlines()[0].split(",")
    assert header[:3] == ["id", "device_type", "state"]
    assert header == list(EXPORT_COLUMNS)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_template_has_every_column_and_a_commented_example(
    service: RegistryService, tmp_path: Path
) -> None:
    target = tmp_path / "devices.csv"
    result = CliRunner().invoke(kotahub, ["devices", "import", "--template", str(target)])
    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8")
    assert text == csv_template()
    lines = text.splitlines()
    assert lines[0].split(",") == [*EXPORT_COLUMNS, "tag.river"]
    example = [line for line in lines if line.startswith("#smg-")]
    assert len(example) == 1
    assert "YYYY-MM-DD" in text
    assert parse_csv(text) == []  # comments only: nothing to import as it stands
    seed_catalog(service)  # the example's site and team
    service.seed_types(actor="t")  # its type, vegapuls_c21, as a fresh install seeds it
    report = import_devices(service, parse_csv(text.replace("#smg-", "smg-")), actor="t",
                            dry_run=True)  # fmt: skip
    assert (report.errors, report.created) == ([], 1)
    uncommented = csv.DictReader(io.StringIO(text.replace("#smg-", "smg-")))
    filled = next(row for row in uncommented if row["id"].startswith("smg-"))
    assert all(
        filled[c] for c in EXPORT_COLUMNS if not c.endswith("_id") and c != "credentials_ref"
    )


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("install_date", "31/12/2026", ("'31/12/2026'", "YYYY-MM-DD")),
        ("latitude", "north", ("'north'", "-90 to 90")),
        ("state", "broken", ("'broken'", "planned, active or maintenance")),
        ("rw", "12345", ("'12345'", "1 to 3 digits")),
    ],
)
def test_a_row_error_shows_the_value_and_the_expected_format(
    api: Api, column: str, value: str, words: tuple[str, ...]
) -> None:
    report = post_import(api, f"id,device_type,{column}\ncam-1,cctv-dome,{value}\n").json()
    error = report["errors"][0]
    assert error["field"] == column
    for word in words:
        assert word in error["message"], error


def test_an_unknown_column_lists_the_known_ones_and_is_not_unreadable(api: Api) -> None:
    response = post_import(api, "id,colour\nx,red\n")
    detail = problem(response, "unknown column(s) ['colour']", "tag.<key>", "device_type")
    assert "unreadable" not in (detail + response.json()["title"]).lower()
    assert response.json()["title"] == "Invalid import file"
