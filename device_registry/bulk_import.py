"""Bulk import and export of devices: CSV and GeoJSON, dry run, idempotent upsert by id.

An import first validates every row (types, references, area hierarchy, duplicates) and
reports each problem with its line (CSV) or feature number (GeoJSON) and field. Then,
unless it is a dry run, it writes in ONE transaction: with ``all_or_nothing`` any error
means nothing is written; otherwise the valid rows are written and the bad ones reported.
A row's columns set those fields; columns absent from the file leave fields untouched,
and an empty CSV cell clears an optional field. Importing the same file twice changes
nothing the second time. A CSV line whose first cell starts with ``#`` is a comment.

A file that cannot be taken as a whole (unknown column, a cell over the csv module's
131,072 characters, JSON nested too deeply) raises ``ImportFileError`` (the API's 422);
a row that references a rejected row, or closes a parent or gateway cycle, is a row error.
The CSV export neutralises formula cells (``=``, ``+``, ``-``, ``@``, tab, carriage return
at the start, and a leading ``'``, get a ``'`` in front) and the import removes that ``'``
again, so an export re-imports unchanged and a spreadsheet opening it runs nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy import delete, insert, select, update

from device_registry.models import AuditEntry, Device, DeviceType, MqttIdentity, Site, Team, utc_now
from device_registry.registry_service import (
    RegistryService,
    credentials_public,
    device_filters,
    device_public,
    plan_identity_change,
)
from device_registry.schemas import CrossFieldError, DeviceCreate, DeviceQuery, MqttCredentials

ImportFormat = Literal["csv", "geojson"]
# The columns a reader looks for first lead; the rest follow the model's order.
_LEADING: tuple[str, ...] = ("id", "device_type", "state")
CSV_FIELDS: tuple[str, ...] = (
    *_LEADING,
    *(n for n in DeviceCreate.model_fields if n not in (*_LEADING, "tags", "driver_config")),
)
EXPORT_COLUMNS: tuple[str, ...] = (*CSV_FIELDS, "driver_config")
TAG_PREFIX = "tag."
COMMENT = "#"
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Marks a neutralised cell in the export; the import removes one leading quote.
TEXT_MARK = "'"
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
# What a field's value must look like, shown beside a rejected value.
EXPECTED_FORMAT: dict[str, str] = {
    "install_date": "a date YYYY-MM-DD",
    "latitude": "decimal degrees from -90 to 90",
    "longitude": "decimal degrees from -180 to 180",
    "rw": "1 to 3 digits",
    "rt": "1 to 3 digits",
    "state": "planned, active or maintenance",
    "owner_kind": "city, corporate or community",
    "driver_config": "a JSON object",
    "tags": "tag.<key> columns; keys of letters, digits and _",
    **dict.fromkeys(
        ("id", "device_type", "gateway_id", "parent_id", "site_id", "team_id"),
        "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
}
# A parse problem found before validation: (field, message) under this key of a row.
ROW_ERROR = "__error__"
# The field named when a problem is about the row as a whole (its shape, not a field).
WHOLE_ROW = "(row)"
# An import that writes this many rows refreshes the query planner's statistics.
ANALYZE_AFTER_ROWS = 500
# Written into the audit log as one entry per row; the report says how many.
Progress = Callable[[int, int], None]


class RowError(BaseModel):
    """One rejected row: its CSV line (or GeoJSON feature number), the field and why."""

    line: int
    field: str
    message: str


class ImportReport(BaseModel):
    """What an import did, or would do in a dry run."""

    rows: int
    created: int
    updated: int
    unchanged: int
    errors: list[RowError]
    dry_run: bool
    applied: bool
    credentials: list[MqttCredentials] = []


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row of an input file with the line it came from."""

    line: int
    data: dict[str, Any]


class ImportFileError(ValueError):
    """The file as a whole cannot be taken (not CSV/GeoJSON, unknown columns...)."""


def _check_header(header: list[str], line: int) -> None:
    unknown = [h for h in header if h not in EXPORT_COLUMNS and not h.startswith(TAG_PREFIX)]
    if unknown:
        raise ImportFileError(
            f"line {line}: unknown column(s) {unknown}; the known columns are "
            f"{', '.join(EXPORT_COLUMNS)}, and {TAG_PREFIX}<key> for each tag "
            f"(e.g. {TAG_PREFIX}river)"
        )
    if "id" not in header:
        raise ImportFileError(f"line {line}: the CSV needs an 'id' column")


def _unmarked(cell: str) -> str:
    """A cell without the export's formula-neutralising quote."""
    return cell[1:] if cell.startswith(TEXT_MARK) else cell


def _too_many(max_rows: int, where: str) -> ImportFileError:
    return ImportFileError(
        f"{where}: more than {max_rows:,} rows in one import; split the file into parts"
    )


def parse_csv(text: str, *, max_rows: int | None = None) -> list[SourceRow]:
    """Rows of a device CSV; empty cells are None, ``tag.<key>`` columns become tags.

    ``max_rows`` stops the parse at the first row past it (ImportFileError).
    """
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[SourceRow] = []
    try:
        for cells in reader:
            line = reader.line_num
            if not cells or cells[0].lstrip().startswith(COMMENT):
                continue
            if header is None:
                header = [h.strip() for h in cells]
                _check_header(header, line)
                continue
            if max_rows is not None and len(rows) >= max_rows:
                raise _too_many(max_rows, f"line {line}")
            rows.append(SourceRow(line, _csv_row(header, cells)))
    except csv.Error as err:
        reason = str(err)
        if "field larger than field limit" in reason:
            reason = f"a cell is longer than {csv.field_size_limit():,} characters"
        raise ImportFileError(f"line {reader.line_num}: {reason}") from err
    if header is None:
        raise ImportFileError("line 1: the CSV has no header row")
    return rows


def _csv_row(header: list[str], cells: list[str]) -> dict[str, Any]:
    if len(cells) > len(header):
        return {ROW_ERROR: (WHOLE_ROW, "more cells than header columns")}
    # A short row leaves its missing cells empty, as csv.DictReader does.
    raw: dict[str, str | None] = dict.fromkeys(header)
    raw.update(zip(header, cells, strict=False))
    data: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for key, value in raw.items():
        cell = _unmarked(value.strip()) if isinstance(value, str) else value
        if key.startswith(TAG_PREFIX):
            if cell:
                tags[key[len(TAG_PREFIX) :]] = cell
        elif key == "driver_config":
            try:
                data[key] = json.loads(cell) if cell else {}
            except (ValueError, RecursionError):
                data[ROW_ERROR] = ("driver_config", f"not valid JSON: {_shown(cell)}")
        else:
            data[key] = cell if cell else None
    if any(h.startswith(TAG_PREFIX) for h in header):
        data["tags"] = tags
    return data


def _shown(value: Any) -> str:
    """A rejected value as a row error shows it: quoted, at most about 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def parse_geojson(text: str, *, max_rows: int | None = None) -> list[SourceRow]:
    """Rows of a GeoJSON FeatureCollection of Points; ``line`` is the feature number."""
    try:
        document = json.loads(text)
    except ValueError as err:
        raise ImportFileError(f"not valid JSON: {err}") from err
    except RecursionError as err:
        raise ImportFileError("JSON nested too deeply") from err
    if not isinstance(document, dict) or document.get("type") != "FeatureCollection":
        raise ImportFileError("expected a GeoJSON FeatureCollection")
    features = document.get("features")
    if not isinstance(features, list):
        raise ImportFileError("FeatureCollection has no 'features' list")
    if max_rows is not None and len(features) > max_rows:
        raise _too_many(max_rows, f"feature {max_rows + 1}")
    rows = []
    for number, feature in enumerate(features, start=1):
        if not isinstance(feature, dict) or not isinstance(feature.get("properties"), dict):
            rows.append(SourceRow(number, {ROW_ERROR: ("properties", "feature without an object")}))
            continue
        data = dict(feature["properties"])
        geometry = feature.get("geometry")
        if isinstance(geometry, dict):
            coords = geometry.get("coordinates")
            if geometry.get("type") != "Point" or not isinstance(coords, list) or len(coords) < 2:
                data[ROW_ERROR] = ("geometry", "expected a Point [longitude, latitude]")
            else:
                data["longitude"], data["latitude"] = coords[0], coords[1]
        rows.append(SourceRow(number, data))
    return rows


def parse_file(
    text: str, file_format: ImportFormat, *, max_rows: int | None = None
) -> list[SourceRow]:
    """Parse CSV or GeoJSON text (at most ``max_rows`` rows, when given)."""
    if file_format == "csv":
        return parse_csv(text, max_rows=max_rows)
    return parse_geojson(text, max_rows=max_rows)


def _stored_fields(service: RegistryService) -> dict[str, dict[str, Any]]:
    names = [n for n in DeviceCreate.model_fields if n in _COMPARED]
    with service.database.session() as session:
        rows = session.execute(select(*(getattr(Device, n) for n in names))).all()
    fields = [{k: v for k, v in zip(names, row, strict=True) if v is not None} for row in rows]
    return {item["id"]: item for item in fields}


def _field_of(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, CrossFieldError):
        # A whole-row check (latitude without longitude, rw without kelurahan...): name
        # the fields it is about, not the row.
        return cause.field, str(cause)
    field = ".".join(str(part) for part in first["loc"]) or WHOLE_ROW
    message = first["msg"]
    # The value as given and what it should look like: "2026-31-12" says little without it.
    if first["type"] != "missing" and len(first["loc"]) == 1:
        message += f" (got {_shown(first.get('input'))})"
    hint = EXPECTED_FORMAT.get(str(first["loc"][0])) if first["loc"] else None
    if hint:
        message += f"; expected {hint}"
    return field, message


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def import_devices(
    service: RegistryService,
    rows: list[SourceRow],
    *,
    actor: str,
    dry_run: bool = False,
    all_or_nothing: bool = False,
    issue_credentials: bool = True,
    progress: Progress | None = None,
) -> ImportReport:
    """Validate and (unless dry run) upsert devices by id in one transaction."""
    errors: list[RowError] = []
    valid: list[tuple[SourceRow, DeviceCreate, dict[str, Any]]] = []
    seen: dict[str, int] = {}
    total = len(rows)
    # A row for a known device may carry only the columns it changes: it is validated
    # as the stored device with those columns applied.
    stored = _stored_fields(service)
    for index, row in enumerate(rows, start=1):
        if ROW_ERROR in row.data:
            field, message = row.data[ROW_ERROR]
            errors.append(RowError(line=row.line, field=field, message=message))
            continue
        current = stored.get(str(row.data.get("id")))
        if current is not None and current["state"] == "retired":
            errors.append(RowError(line=row.line, field="id", message="device is retired"))
            continue
        try:
            model = DeviceCreate.model_validate({**(current or {}), **row.data})
        except ValidationError as err:
            field, message = _field_of(err)
            errors.append(RowError(line=row.line, field=field, message=message))
            continue
        if model.id in seen:
            errors.append(
                RowError(line=row.line, field="id", message=f"duplicate of line {seen[model.id]}")
            )
            continue
        seen[model.id] = row.line
        valid.append((row, model, model.model_dump(exclude_unset=True)))
        if progress and index % 1000 == 0:
            progress(index // 2, total)

    with service.write_transaction() as (session, pending, issued):
        types = {t.name: t for t in session.scalars(select(DeviceType))}
        sites = set(session.scalars(select(Site.id)))
        teams = set(session.scalars(select(Team.id)))
        columns = [getattr(Device, c) for c in _COMPARED]
        existing: dict[str, dict[str, Any]] = {
            r[0]: dict(zip(_COMPARED, r, strict=True))
            for r in session.execute(select(*columns)).all()
        }
        identity_kinds: dict[str, str] = {
            device_id: kind
            for device_id, kind in session.execute(
                select(MqttIdentity.device_id, MqttIdentity.kind)
            )
        }
        gateways = {
            key
            for key, row in existing.items()
            if types[row["device_type"]].is_gateway and row["state"] != "retired"
        }
        gateways |= {
            m.id
            for _r, m, _v in valid
            if m.device_type in types and types[m.device_type].is_gateway
        }
        live_ids = {k for k, r in existing.items() if r["state"] != "retired"} | set(seen)
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        unchanged = 0
        now = utc_now()
        checked = []
        for row, model, values in valid:
            problem = _check_row(model, values, existing, types, sites, teams, gateways, live_ids)
            if problem:
                errors.append(RowError(line=row.line, field=problem[0], message=problem[1]))
                continue
            checked.append((row, model, values))
        for _row, model, values in _sound_references(checked, existing, errors):
            old = existing.get(model.id)
            if old is None:
                record: dict[str, Any] = dict.fromkeys(_COMPARED)
                record.update(owner_kind="city", state="planned", tags={}, driver_config={})
                record.update(model.model_dump(exclude_none=True))
                record.update(
                    family=types[model.device_type].family, created_at=now, updated_at=now
                )
                inserts.append(record)
                audits.append(_audit(actor, "import_create", model.id, None, record))
                new_state, device_type = record["state"], model.device_type
                gateway = record["gateway_id"]
            else:
                merged = {**old, **values}
                merged["family"] = types[merged["device_type"]].family
                if merged == old:
                    unchanged += 1
                    continue
                updates.append({**merged, "updated_at": now})
                audits.append(_audit(actor, "import_update", model.id, old, merged))
                new_state, device_type = merged["state"], merged["device_type"]
                gateway = merged["gateway_id"]
            # The same rule as a single update: leaving service, moving behind a gateway
            # or changing kind revokes the identity; coming into service creates one.
            change = plan_identity_change(
                device_id=model.id,
                state=new_state,
                gateway_id=gateway,
                device_type=types[device_type],
                existing_kind=identity_kinds.get(model.id),
                issue_credentials=issue_credentials,
            )
            if change.revoke is not None:
                pending.revoke.append(change.revoke)
            if change.create is not None:
                pending.create.append(change.create)
        errors.sort(key=lambda e: e.line)
        report = ImportReport(
            rows=total,
            created=len(inserts),
            updated=len(updates),
            unchanged=unchanged,
            errors=errors,
            dry_run=dry_run,
            applied=False,
        )
        if dry_run or (all_or_nothing and errors):
            pending.create.clear()
            pending.revoke.clear()
            session.rollback()
            return report
        if pending.revoke:
            revoked = [spec.device_id for spec in pending.revoke]
            session.execute(delete(MqttIdentity).where(MqttIdentity.device_id.in_(revoked)))
        for wave in _waves(inserts):
            session.execute(insert(Device), wave)
        if updates:
            session.execute(update(Device), updates)
        if audits:
            session.execute(insert(AuditEntry), audits)
        if inserts or updates:
            service.bump_revision(session)
        if progress:
            progress(total, total)
    report.applied = True
    if len(inserts) + len(updates) >= ANALYZE_AFTER_ROWS:
        service.database.analyze()
    report.credentials = [credentials_public(item) for item in issued]
    return report


_COMPARED: tuple[str, ...] = tuple(
    c.key for c in Device.__table__.columns if c.key not in ("created_at", "updated_at")
)


def _audit(
    actor: str, action: str, key: str, before: dict[str, Any] | None, after: dict[str, Any]
) -> dict[str, Any]:
    clean = {k: _jsonable(v) for k, v in after.items() if k not in ("created_at", "updated_at")}
    return {
        "at": utc_now(),
        "actor": actor,
        "action": action,
        "entity_kind": "device",
        "entity_id": key,
        "before": {k: _jsonable(v) for k, v in before.items()} if before else None,
        "after": clean,
    }


def _check_row(
    model: DeviceCreate,
    values: dict[str, Any],
    existing: dict[str, dict[str, Any]],
    types: dict[str, DeviceType],
    sites: set[str],
    teams: set[str],
    gateways: set[str],
    live_ids: set[str],
) -> tuple[str, str] | None:
    old = existing.get(model.id)
    if old is not None and old["state"] == "retired":
        return "id", f"device {model.id!r} is retired"
    merged = {**(old or {}), **values}
    if merged.get("device_type") not in types:
        return "device_type", f"unknown device type {merged.get('device_type')!r}"
    if merged.get("site_id") and merged["site_id"] not in sites:
        return "site_id", f"unknown site {merged['site_id']!r}"
    if merged.get("team_id") and merged["team_id"] not in teams:
        return "team_id", f"unknown team {merged['team_id']!r}"
    if merged.get("parent_id") and merged["parent_id"] not in live_ids:
        return "parent_id", f"unknown or retired device {merged['parent_id']!r}"
    if merged.get("gateway_id") and merged["gateway_id"] not in gateways:
        return "gateway_id", f"{merged['gateway_id']!r} is not a registered gateway"
    return None


REFERENCES: tuple[str, ...] = ("gateway_id", "parent_id")
Checked = tuple[SourceRow, DeviceCreate, dict[str, Any]]


def _sound_references(
    checked: list[Checked], existing: Mapping[str, dict[str, Any]], errors: list[RowError]
) -> list[Checked]:
    """Drop rows that reference a rejected new row or close a gateway/parent cycle.

    Dropping a row can strand the rows that reference it, so this repeats until stable.
    """
    while True:
        accepted = {model.id: (row, model, values) for row, model, values in checked}
        merged = {key: {**existing.get(key, {}), **entry[2]} for key, entry in accepted.items()}
        bad: dict[str, tuple[str, str]] = {}
        for key, values in merged.items():
            for name in REFERENCES:
                target = values.get(name)
                if target and target not in existing and target not in accepted:
                    bad[key] = (name, f"device {target!r} is not written: its own row is rejected")
        for name in REFERENCES:
            links = {key: row.get(name) for key, row in existing.items()}
            links.update({key: row.get(name) for key, row in merged.items()})
            for key, cycle in _cycles(links, accepted).items():
                bad.setdefault(key, (name, "reference cycle: " + " -> ".join(cycle)))
        if not bad:
            return checked
        for key, (name, message) in bad.items():
            errors.append(RowError(line=accepted[key][0].line, field=name, message=message))
        checked = [entry for entry in checked if entry[1].id not in bad]


def _cycles(links: Mapping[str, str | None], starts: Collection[str]) -> dict[str, list[str]]:
    """Each start on a cycle of ``links`` (id -> next id), with the cycle; linear time."""
    done: set[str] = set()
    found: dict[str, list[str]] = {}
    for start in starts:
        path: list[str] = []
        index: dict[str, int] = {}
        node: str | None = start
        while node is not None and node not in done and node not in index:
            index[node] = len(path)
            path.append(node)
            node = links.get(node)
        if node is not None and node in index:
            cycle = [*path[index[node] :], node]
            for member in cycle[:-1]:
                found[member] = cycle
        done.update(path)
    return {key: cycle for key, cycle in found.items() if key in starts}


def _waves(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Inserts ordered so that a gateway or parent is written before its devices."""
    remaining = {row["id"]: row for row in rows}
    while remaining:
        wave = [
            row
            for row in remaining.values()
            if row.get("gateway_id") not in remaining and row.get("parent_id") not in remaining
        ]
        if not wave:
            raise ValueError("gateway/parent references form a cycle")
        for row in wave:
            del remaining[row["id"]]
        yield wave


# -- export ---------------------------------------------------------------------------
def _all_devices(service: RegistryService, query: DeviceQuery) -> list[dict[str, Any]]:
    with service.database.session() as session:
        stmt = select(Device).order_by(Device.id)
        rows = session.scalars(device_filters(stmt, query)).all()
        return [device_public(d, None).model_dump(mode="json") for d in rows]


def safe_cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a formula start (or a quote) gets a ``'`` in front.

    Plain numbers (a negative latitude) stay as they are: a spreadsheet runs nothing there.
    """
    if value.startswith((*FORMULA_STARTS, TEXT_MARK)) and not _PLAIN_NUMBER.fullmatch(value):
        return TEXT_MARK + value
    return value


def csv_template() -> str:
    """An example import CSV: every column, a ``tag.`` column, and a commented example row."""
    example = {
        "id": "smg-flood-bkt-01",
        "device_type": "vegapuls_c21",  # seeded by `kotahub registry types seed`
        "state": "planned",
        "vendor": "VEGA",
        "model": "VEGAPULS C 21",
        "serial": "48213377",
        "firmware_version": "1.4.2",
        "protocol_address": "10.20.0.11:502",
        "latitude": "-6.9712",
        "longitude": "110.4563",
        "site_id": "bkt-01",
        "kota": "Semarang",
        "kecamatan": "Gayamsari",
        "kelurahan": "Sawah Besar",
        "rw": "3",
        "rt": "7",
        "team_id": "dpu-drainage",
        "owner_kind": "city",
        "install_date": "2026-11-30",
        "driver_config": json.dumps({"unit_id": 246}),
        "tag.river": "Banjir Kanal Timur",
    }
    header = [*EXPORT_COLUMNS, f"{TAG_PREFIX}river"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    out.write(
        "# Lines starting with # are skipped. Remove the # of the example row to use it.\n"
        "# id device_type and state first; an empty cell clears an optional field;"
        " a column left out leaves the field as it is.\n"
        "# install_date YYYY-MM-DD; state planned or active or maintenance;"
        " owner_kind city or corporate or community; latitude and longitude decimal degrees;"
        " rw and rt 1 to 3 digits; driver_config a JSON object;"
        " site_id team_id gateway_id parent_id name registered ids;"
        " tag.<key> one column per tag.\n"
    )
    row = [example.get(column, "") for column in header]
    row[0] = COMMENT + row[0]
    writer.writerow(row)
    return out.getvalue()


def export_csv(service: RegistryService, query: DeviceQuery | None = None) -> str:
    """Devices as CSV in the import format (``id`` first, ``tag.<key>`` columns for tags).

    Formula cells are neutralised (``safe_cell``); the import reads them back unchanged.
    """
    devices = _all_devices(service, query or DeviceQuery())
    tag_keys = sorted({key for d in devices for key in d["tags"]})
    header = [*EXPORT_COLUMNS, *(TAG_PREFIX + k for k in tag_keys)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for d in devices:
        cells = [d.get(c) for c in CSV_FIELDS]
        cells.append(json.dumps(d["driver_config"]) if d["driver_config"] else "")
        cells += [d["tags"].get(k, "") for k in tag_keys]
        writer.writerow(["" if c is None else safe_cell(str(c)) for c in cells])
    return out.getvalue()


def export_geojson(service: RegistryService, query: DeviceQuery | None = None) -> str:
    """Devices as a GeoJSON FeatureCollection (devices without a position have no geometry)."""
    features = []
    for d in _all_devices(service, query or DeviceQuery()):
        lat, lon = d.pop("latitude"), d.pop("longitude")
        properties = {k: v for k, v in d.items() if k in DeviceCreate.model_fields}
        geometry = {"type": "Point", "coordinates": [lon, lat]} if lat is not None else None
        features.append({"type": "Feature", "geometry": geometry, "properties": properties})
    return json.dumps({"type": "FeatureCollection", "features": features})
