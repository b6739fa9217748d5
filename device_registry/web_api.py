"""The registry's REST API (FastAPI; OpenAPI at ``/docs``), under ``/api/v1``.

Every route but the documentation needs a bearer token whose role grants the route's
permission (see ``api_tokens.PERMISSIONS``); the token and role are checked before the
request body is read (``api_auth``), so an unauthenticated caller learns nothing from a
body's errors. Request bodies are bounded while they arrive (``BodyLimit``: 413 past the
limit). Errors are RFC 9457 problem details (``application/problem+json``) with a ``field``
member naming the field at fault and, for validation errors, an ``errors`` list with every
field.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from device_registry.api_auth import (
    Admin,
    AuthFirstRoute,
    Bulk,
    Caller,
    Catalog,
    GatewayReader,
    Reader,
    Rotator,
    StatusWriter,
    Writer,
)
from device_registry.api_tokens import (
    PERMISSIONS,
    create_token,
    list_tokens,
    revoke_token,
)
from device_registry.bulk_import import (
    ImportFileError,
    ImportReport,
    SourceRow,
    export_csv,
    export_geojson,
    import_devices,
    parse_file,
)
from device_registry.database import DatabaseError
from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.device_info_api import device_info_router
from device_registry.directory import DeviceRecord, DirectoryError, record_row
from device_registry.errors import ConflictError, CredentialsError, FieldError, NotFoundError
from device_registry.registry_service import RegistryService
from device_registry.schemas import (
    AuditPublic,
    DeviceCreate,
    DevicePublic,
    DeviceQuery,
    DeviceReplace,
    DeviceStatusPublic,
    DeviceStatusUpdate,
    DeviceTypeCreate,
    DeviceTypePublic,
    DeviceTypeUpdate,
    DeviceUpdate,
    DeviceWritten,
    Page,
    ReplacementPublic,
    SiteCreate,
    SitePublic,
    SiteUpdate,
    TeamCreate,
    TeamPublic,
    TeamUpdate,
    TokenCreate,
    TokenCreated,
    TokenPublic,
)
from device_registry.technician_page import TileSettings

# The auth names are re-exported: importable from here as before api_auth existed.
__all__ = [
    "BULK_PATHS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_IMPORT_BYTES",
    "DEFAULT_MAX_IMPORT_ROWS",
    "MIB",
    "PREFIX",
    "PROBLEM_JSON",
    "Admin",
    "AuthFirstRoute",
    "BodyLimit",
    "BodyTooLarge",
    "Bulk",
    "Caller",
    "Catalog",
    "DeviceHistory",
    "ExportQuery",
    "GatewayReader",
    "Reader",
    "ReadingsSource",
    "RetireRequest",
    "Rotator",
    "StatusWriter",
    "TimedReadings",
    "Writer",
    "create_app",
    "problem",
]

logger = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
PREFIX = "/api/v1"


@dataclass(frozen=True, slots=True)
class TimedReadings:
    """A readings source's answer with each metric's time: ``values`` and ``times`` by metric."""

    values: dict[str, Any]
    times: dict[str, dt.datetime]


# The hub may plug in a live source of last readings (e.g. from InfluxDB); without one
# the status endpoint serves what the hub last pushed to PUT /api/v1/status. A source
# answers values only (``{metric: value}``) or ``TimedReadings`` when it knows each
# metric's time; None or an empty answer keeps the pushed readings.
ReadingsSource = Callable[[str], dict[str, Any] | TimedReadings | None]
MIB = 1024 * 1024
# Request body limits: a file import (and the JSON bulk routes) may be large, anything else
# is a small JSON document. A 50 MB import took the API from 99 to 815 MB of memory.
DEFAULT_MAX_BODY_BYTES = 1 * MIB
DEFAULT_MAX_IMPORT_BYTES = 10 * MIB
# Rows of one file import, as many as one JSON bulk upsert takes. Bytes alone do not bound
# memory: a 9.9 MiB CSV of 144,180 short rows peaked at 885 MB (about 5 kB per row).
DEFAULT_MAX_IMPORT_ROWS = 20_000
BULK_PATHS: frozenset[str] = frozenset(
    {f"{PREFIX}/devices/import", f"{PREFIX}/devices/bulk", f"{PREFIX}/status"}
)


class RetireRequest(BaseModel):
    """Why a device is retired."""

    model_config = {"extra": "forbid"}
    reason: str = Field(default="", max_length=500)


class ExportQuery(DeviceQuery):
    """Device filters plus the export format."""

    format: Literal["csv", "geojson"] = "csv"


class DeviceHistory(BaseModel):
    """A device's audit trail and unit replacements."""

    audit: list[AuditPublic]
    replacements: list[ReplacementPublic]


def problem(
    status: int, title: str, detail: str, *, field: str | None = None, **extra: Any
) -> JSONResponse:
    """An RFC 9457 problem details response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


class BodyTooLarge(HTTPException):
    """A request body passed its limit (413); FastAPI re-raises its own HTTP exceptions."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes (the limit here)")
        self.limit = limit


class BodyLimit:
    """ASGI middleware: refuse a body over its path's limit while it arrives, never buffered.

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    without one (chunked) is counted chunk by chunk and refused at the chunk that passes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_import_bytes: int,
        bulk_paths: frozenset[str],
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_import_bytes = max_import_bytes
        self.bulk_paths = bulk_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a receive channel that counts the body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.max_import_bytes if path in self.bulk_paths else self.max_body_bytes
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = problem(413, "Content too large", BodyTooLarge(limit).detail, field="body")
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _device_id(record: DeviceRecord) -> str:
    return record.device_id


def create_app(
    service: RegistryService,
    *,
    readings_source: ReadingsSource | None = None,
    title: str = "Kotahub device registry",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_import_bytes: int = DEFAULT_MAX_IMPORT_BYTES,
    max_import_rows: int = DEFAULT_MAX_IMPORT_ROWS,
    tiles: TileSettings | None = None,
) -> FastAPI:
    """The registry API over a service (database + optional MQTT identities).

    ``max_import_bytes`` bounds the body of an import, a bulk upsert and a status push,
    ``max_body_bytes`` every other request body; ``max_import_rows`` the rows of an import.
    ``tiles``: the technician page's map (``[registry] map_tile_url``); None means
    KOTAHUB_TECHNICIAN_TILE_URL, or no tiles.
    """
    app = FastAPI(title=title, version="1", docs_url="/docs", openapi_url="/openapi.json")
    app.router.route_class = AuthFirstRoute
    app.add_middleware(
        BodyLimit,
        max_body_bytes=max_body_bytes,
        max_import_bytes=max_import_bytes,
        bulk_paths=BULK_PATHS,
    )
    app.state.registry_database = database = service.database

    # -- error handlers -----------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        # A JSON syntax error's location ends in a character offset, not a field.
        errors = [
            {"field": "body" if e["type"] == "json_invalid" else _loc(e["loc"]), "detail": e["msg"]}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "(request)", "detail": "invalid"}
        return problem(
            422,
            "Invalid request",
            f"{first['field']}: {first['detail']}",
            field=first["field"],
            errors=errors,
        )

    @app.exception_handler(ValidationError)
    async def _invalid_model(_r: Request, exc: ValidationError) -> JSONResponse:
        errors = [{"field": _loc(e["loc"]), "detail": e["msg"]} for e in exc.errors()]
        return problem(
            422,
            "Invalid request",
            f"{errors[0]['field']}: {errors[0]['detail']}",
            field=errors[0]["field"],
            errors=errors,
        )

    @app.exception_handler(FieldError)
    async def _field(_r: Request, exc: FieldError) -> JSONResponse:
        return problem(422, "Invalid request", str(exc), field=exc.field)

    @app.exception_handler(NotFoundError)
    async def _missing(_r: Request, exc: NotFoundError) -> JSONResponse:
        return problem(404, "Not found", str(exc), field="id")

    @app.exception_handler(ConflictError)
    async def _conflict(_r: Request, exc: ConflictError) -> JSONResponse:
        return problem(409, "Conflict", str(exc), field=exc.field)

    @app.exception_handler(CredentialsError)
    async def _broker(_r: Request, exc: CredentialsError) -> JSONResponse:
        return problem(502, "MQTT broker refused", f"{exc}; nothing was changed")

    @app.exception_handler(ImportFileError)
    async def _bad_file(_r: Request, exc: ImportFileError) -> JSONResponse:
        return problem(422, "Invalid import file", str(exc), field="body")

    @app.exception_handler(DatabaseError)
    async def _database(_r: Request, exc: DatabaseError) -> JSONResponse:
        return problem(503, "Database unavailable", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            # FastAPI turns any JSON parse failure but a syntax error into a bare 400.
            return problem(422, "Invalid request", "body: JSON nested too deeply", field="body")
        titles = {
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not found",
            405: "Not allowed",
            413: "Content too large",
        }
        extra = {"field": "body"} if exc.status_code == 413 else {}
        response = problem(
            exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail), **extra
        )
        if exc.status_code == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    # -- devices ------------------------------------------------------------------------
    @app.get(f"{PREFIX}/devices", tags=["devices"])
    def list_devices(_who: Reader, query: Annotated[DeviceQuery, Query()]) -> Page[DevicePublic]:
        """Search (q: id, serial, vendor, model) and filter devices, paginated by id."""
        return service.list_devices(query)

    @app.post(f"{PREFIX}/devices", status_code=201, tags=["devices"])
    def create_device(who: Writer, body: DeviceCreate, credentials: bool = True) -> DeviceWritten:
        """Register a device; a live MQTT device or gateway gets credentials, shown once."""
        return service.create_device(body, actor=who.actor, issue_credentials=credentials)

    @app.get(f"{PREFIX}/devices/export", tags=["bulk"])
    def export_devices(_who: Reader, query: Annotated[ExportQuery, Query()]) -> Response:
        """All matching devices (paging ignored) as CSV or GeoJSON."""
        filters = DeviceQuery.model_validate(query.model_dump(exclude={"format"}))
        if query.format == "csv":
            return Response(export_csv(service, filters), media_type="text/csv")
        return Response(export_geojson(service, filters), media_type="application/geo+json")

    @app.post(f"{PREFIX}/devices/import", tags=["bulk"])
    async def import_file(
        who: Bulk,
        request: Request,
        format: Literal["csv", "geojson"] = "csv",
        dry_run: bool = True,
        all_or_nothing: bool = False,
        credentials: bool = True,
    ) -> ImportReport:
        """Import a CSV or GeoJSON body; a dry run (the default) only validates."""
        raw = await request.body()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise ImportFileError(f"body is not UTF-8: {err}") from err
        rows = parse_file(text, format, max_rows=max_import_rows)
        return import_devices(
            service,
            rows,
            actor=who.actor,
            dry_run=dry_run,
            all_or_nothing=all_or_nothing,
            issue_credentials=credentials,
        )

    @app.post(f"{PREFIX}/devices/bulk", tags=["bulk"])
    def bulk_upsert(
        who: Bulk,
        body: Annotated[list[dict[str, Any]], Body(max_length=20000)],
        dry_run: bool = True,
        all_or_nothing: bool = False,
        credentials: bool = True,
    ) -> ImportReport:
        """Upsert devices from a JSON list (item N is reported as line N)."""
        rows = [SourceRow(n, item) for n, item in enumerate(body, start=1)]
        return import_devices(
            service,
            rows,
            actor=who.actor,
            dry_run=dry_run,
            all_or_nothing=all_or_nothing,
            issue_credentials=credentials,
        )

    @app.get(f"{PREFIX}/devices/{{device_id}}", tags=["devices"])
    def get_device(_who: Reader, device_id: str) -> DevicePublic:
        """One device."""
        return service.get_device(device_id)

    @app.patch(f"{PREFIX}/devices/{{device_id}}", tags=["devices"])
    def update_device(who: Writer, device_id: str, body: DeviceUpdate) -> DeviceWritten:
        """Change fields; state planned/active/maintenance (retire has its own route)."""
        return service.update_device(device_id, body, actor=who.actor)

    @app.post(f"{PREFIX}/devices/{{device_id}}/retire", tags=["devices"])
    def retire_device(
        who: Writer, device_id: str, body: RetireRequest | None = None
    ) -> DevicePublic:
        """Retire a device; its MQTT identity is revoked at once."""
        reason = body.reason if body else ""
        return service.retire_device(device_id, actor=who.actor, reason=reason)

    @app.post(f"{PREFIX}/devices/{{device_id}}/replace", tags=["devices"])
    def replace_device(who: Writer, device_id: str, body: DeviceReplace) -> DeviceWritten:
        """Swap the failed unit: same id and history, new serial, credentials moved."""
        return service.replace_device(device_id, body, actor=who.actor)

    @app.post(f"{PREFIX}/devices/{{device_id}}/rotate-credentials", tags=["devices"])
    def rotate(who: Rotator, device_id: str) -> DeviceWritten:
        """New MQTT secret (shown once); the old one stops working at once."""
        return service.rotate_credentials(device_id, actor=who.actor)

    @app.get(f"{PREFIX}/devices/{{device_id}}/status", tags=["status"])
    def device_status(_who: Reader, device_id: str) -> DeviceStatusPublic:
        """Online state and last readings (from the readings source when it answers)."""
        status = service.get_status(device_id)
        if readings_source is not None:
            try:
                live = readings_source(device_id)
            except Exception as err:  # any source failure means "fall back"
                # The source is pluggable (InfluxDB, ...): when it is down the readings the
                # hub last pushed are still worth serving, and the caller is told why.
                reason = f"{type(err).__name__}: {err}"
                logger.warning("readings source failed for %s: %s", device_id, reason)
                status.readings_source_error = reason[:500]
            else:
                if isinstance(live, TimedReadings):
                    if live.values:
                        status.last_readings = live.values
                        status.last_readings_at = live.times
                elif live:
                    status.last_readings = live
        return status

    @app.get(f"{PREFIX}/devices/{{device_id}}/history", tags=["devices"])
    def device_history(_who: Reader, device_id: str) -> DeviceHistory:
        """Audit entries and unit replacements, newest first."""
        audit, swaps = service.history(device_id)
        return DeviceHistory(audit=audit, replacements=swaps)

    @app.put(f"{PREFIX}/status", tags=["status"])
    def push_status(
        _who: StatusWriter, body: Annotated[list[DeviceStatusUpdate], Body(max_length=20000)]
    ) -> dict[str, int]:
        """The hub reports device status (online, reason, last readings)."""
        return {"stored": service.set_status(body)}

    # -- catalog ------------------------------------------------------------------------
    @app.get(f"{PREFIX}/device-types", tags=["catalog"])
    def list_types(_who: Reader) -> list[DeviceTypePublic]:
        """Every device type."""
        return service.list_types()

    @app.post(f"{PREFIX}/device-types", status_code=201, tags=["catalog"])
    def create_type(who: Catalog, body: DeviceTypeCreate) -> DeviceTypePublic:
        """Register a device type."""
        return service.create_type(body, actor=who.actor)

    @app.get(f"{PREFIX}/device-types/{{name}}", tags=["catalog"])
    def get_type(_who: Reader, name: str) -> DeviceTypePublic:
        """One device type."""
        return service.get_type(name)

    @app.patch(f"{PREFIX}/device-types/{{name}}", tags=["catalog"])
    def update_type(who: Catalog, name: str, body: DeviceTypeUpdate) -> DeviceTypePublic:
        """Change a device type."""
        return service.update_type(name, body, actor=who.actor)

    @app.get(f"{PREFIX}/sites", tags=["catalog"])
    def list_sites(_who: Reader) -> list[SitePublic]:
        """Every site."""
        return service.list_sites()

    @app.post(f"{PREFIX}/sites", status_code=201, tags=["catalog"])
    def create_site(who: Catalog, body: SiteCreate) -> SitePublic:
        """Register a site."""
        return service.create_site(body, actor=who.actor)

    @app.get(f"{PREFIX}/sites/{{site_id}}", tags=["catalog"])
    def get_site(_who: Reader, site_id: str) -> SitePublic:
        """One site."""
        return service.get_site(site_id)

    @app.patch(f"{PREFIX}/sites/{{site_id}}", tags=["catalog"])
    def update_site(who: Catalog, site_id: str, body: SiteUpdate) -> SitePublic:
        """Change a site."""
        return service.update_site(site_id, body, actor=who.actor)

    @app.get(f"{PREFIX}/teams", tags=["catalog"])
    def list_teams(_who: Reader) -> list[TeamPublic]:
        """Every team."""
        return service.list_teams()

    @app.post(f"{PREFIX}/teams", status_code=201, tags=["catalog"])
    def create_team(who: Catalog, body: TeamCreate) -> TeamPublic:
        """Register a team."""
        return service.create_team(body, actor=who.actor)

    @app.get(f"{PREFIX}/teams/{{team_id}}", tags=["catalog"])
    def get_team(_who: Reader, team_id: str) -> TeamPublic:
        """One team."""
        return service.get_team(team_id)

    @app.patch(f"{PREFIX}/teams/{{team_id}}", tags=["catalog"])
    def update_team(who: Catalog, team_id: str, body: TeamUpdate) -> TeamPublic:
        """Change a team."""
        return service.update_team(team_id, body, actor=who.actor)

    # -- audit, tokens, identity ----------------------------------------------------------
    @app.get(f"{PREFIX}/audit", tags=["audit"])
    def audit(
        _who: Admin,
        entity_kind: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[AuditPublic]:
        """Recent audit entries, newest first."""
        return service.audit_log(entity_kind=entity_kind, limit=limit, offset=offset)

    # Made on the first directory request: an API without agents never loads the list.
    gateway_directories: list[DatabaseDeviceDirectory] = []

    def directory_snapshot() -> DatabaseDeviceDirectory:
        try:
            if not gateway_directories:
                gateway_directories.append(DatabaseDeviceDirectory(database))
            gateway_directories[0].refresh()
        except DirectoryError as err:
            raise DatabaseError(str(err)) from err
        return gateway_directories[0]

    @app.get(f"{PREFIX}/directory", tags=["gateways"])
    def directory(_who: Reader, request: Request) -> Response:
        """Every device as the hub sees it (type schema, tags), for hub workers on other hosts.

        The ETag is the registry's change counter: ``If-None-Match`` answers 304 while
        nothing changed.
        """
        revision = service.revision()
        etag = f'"rev-{revision}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        rows = [record_row(r) for r in sorted(directory_snapshot().all(), key=_device_id)]
        return JSONResponse(
            {"revision": revision, "devices": rows},
            headers={"ETag": etag, "Cache-Control": "no-store"},
        )

    @app.get(f"{PREFIX}/gateways/{{gateway_id}}/devices", tags=["gateways"])
    def gateway_devices(who: GatewayReader, gateway_id: str, request: Request) -> Response:
        """The devices assigned to a gateway (its agent's poll list), with the revision as ETag.

        A gateway token reads its own gateway only. ``If-None-Match`` with the last ETag
        answers 304 while nothing in the registry changed.
        """
        if who.gateway_id is not None and who.gateway_id != gateway_id:
            raise StarletteHTTPException(
                403,
                f"token {who.token_id} belongs to gateway {who.gateway_id!r}, not {gateway_id!r}",
            )
        # Read before the snapshot: a change in between makes the ETag older than the
        # list, so the agent fetches once more; never the other way round.
        revision = service.revision()
        etag = f'"rev-{revision}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        gateway_directory = directory_snapshot()
        if gateway_directory.get(gateway_id) is None:
            raise NotFoundError("gateway", gateway_id)
        devices = sorted(gateway_directory.devices_for_gateway(gateway_id), key=_device_id)
        rows = [record_row(r) for r in devices]
        return JSONResponse(
            {"gateway_id": gateway_id, "revision": revision, "devices": rows},
            headers={"ETag": etag, "Cache-Control": "no-store"},
        )

    app.include_router(device_info_router(service, PREFIX))

    @app.get(f"{PREFIX}/tokens", tags=["tokens"])
    def tokens(_who: Admin) -> list[TokenPublic]:
        """Every API token (never their secrets)."""
        return list_tokens(database)

    @app.post(f"{PREFIX}/tokens", status_code=201, tags=["tokens"])
    def new_token(who: Admin, body: TokenCreate) -> TokenCreated:
        """Make a token; its secret is shown once."""
        return create_token(
            database,
            name=body.name,
            role=body.role,
            actor=who.actor,
            expires_in_s=body.expires_in_s,
            gateway_id=body.gateway_id,
            team=body.team,
        )

    @app.delete(f"{PREFIX}/tokens/{{token_id}}", tags=["tokens"])
    def delete_token(who: Admin, token_id: str) -> TokenPublic:
        """Revoke a token at once."""
        return revoke_token(database, token_id, actor=who.actor)

    @app.get(f"{PREFIX}/me", tags=["tokens"])
    def me(who: Reader) -> dict[str, Any]:
        """The calling token's name, role, team and permissions (for a UI to adapt)."""
        return {
            "token_id": who.token_id,
            "name": who.name,
            "role": who.role,
            "team": who.team,
            "permissions": sorted(PERMISSIONS[who.role]),
        }

    # The technician's phone page at /app/ (static files; "/" redirects there).
    from device_registry.technician_page import mount_technician_page

    mount_technician_page(app, tiles=tiles)
    return app
