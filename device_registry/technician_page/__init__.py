"""The technician's web page: static files the registry app serves at ``/app/``.

The page is plain HTML, CSS and JavaScript with Leaflet vendored under ``static/vendor``,
so it works on a phone that can reach the registry but not the internet. It talks only to
the registry's own ``/api/v1`` with the bearer token the technician pastes once.

Map tiles are optional: ``/app/settings.json`` tells the page which tile URL to use; when
it is empty the map shows a plain coordinate grid and click-to-pin still works. Its
``alerts_url`` is the hub's alert server (``[alerts] ack_port``) for the "Open alerts" view,
called with the same token; empty: the view says alerting is not configured.

The page's Content-Security-Policy is an HTTP header on the page itself (``page_policy``):
scripts only from the registry, requests only to the registry and that one alert origin,
images only from the registry and the one origin of the configured tile URL.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
PAGE_PATH = "/app"
TILE_URL_ENV = "KOTAHUB_TECHNICIAN_TILE_URL"
TILE_ATTRIBUTION_ENV = "KOTAHUB_TECHNICIAN_TILE_ATTRIBUTION"
# An http(s) URL, or a path on the registry: "//host" and "/\\host" are other hosts to a browser.
_TILE_URL = re.compile(r"^(https?://|/(?![/\\]))\S*$")
# An origin a CSP source may name: scheme, host (name, IPv4 or [IPv6]) and port, nothing else.
_ORIGIN = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:[0-9]{1,5})?$")
# Scripts only from the registry itself: a pasted token is worth protecting. Images from the
# registry, data: (Leaflet's blank tile, swapped in as a tile is dropped) and the tile
# server. Framed by no one (only a header can say so).
_POLICY = (
    "default-src 'self'; script-src 'self'; connect-src {connect}; img-src {img}; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class TechnicianPageError(ValueError):
    """The page's configuration is invalid (raised at start-up, naming the setting)."""


class TileSettings(BaseModel):
    """Where the page's map gets its tiles; an empty URL means a coordinate grid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        default="",
        max_length=500,
        description="Tile URL template with {z}, {x} and {y}, e.g. a city tile server.",
    )
    attribution: str = Field(default="", max_length=300)
    max_zoom: int = Field(default=19, ge=1, le=22)

    @field_validator("url")
    @classmethod
    def _template(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        if not _TILE_URL.match(value):
            raise ValueError("must be an http(s) URL or a path starting with one /")
        missing = [part for part in ("{z}", "{x}", "{y}") if part not in value]
        if missing:
            raise ValueError(f"tile URL template lacks {', '.join(missing)}")
        if "{s}" in value.split("://", 1)[-1].split("/", 1)[0]:
            # Leaflet's a/b/c subdomains are three origins; the policy names one.
            raise ValueError("tile URL host must be one server, not {s} subdomains")
        url_origin(value, "tile URL")  # one the page's policy can name
        return value

    @classmethod
    def from_environment(cls) -> TileSettings:
        """Tile settings from KOTAHUB_TECHNICIAN_TILE_URL / _ATTRIBUTION (default: none)."""
        try:
            return cls(
                url=os.environ.get(TILE_URL_ENV, ""),
                attribution=os.environ.get(TILE_ATTRIBUTION_ENV, ""),
            )
        except ValidationError as err:
            first = err.errors()[0]
            raise TechnicianPageError(f"{TILE_URL_ENV}: {first['msg']}") from err


async def _page_settings(request: Request) -> Response:
    tiles: TileSettings = request.app.state.technician_tiles
    return JSONResponse(
        {
            "tile_url": tiles.url,
            "tile_attribution": tiles.attribution,
            "max_zoom": tiles.max_zoom,
            "alerts_url": request.app.state.technician_alerts_url,
        },
        headers={"Cache-Control": "no-cache"},
    )


def url_origin(url: str, what: str) -> str:
    """The origin of an absolute URL ("" for a path on the registry, or for none).

    Raises TechnicianPageError, naming ``what``, for one a CSP source cannot name exactly.
    """
    if not url or (url.startswith("/") and url[1:2] not in ("/", "\\")):
        return ""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    origin = f"{scheme.lower()}://{host.lower()}"
    if "@" in host or not _ORIGIN.match(origin):
        raise TechnicianPageError(f"{what} {url!r}: not scheme://host[:port][/path]")
    return origin


def alerts_origin(url: str) -> str:
    """The origin of an absolute alerts URL ("" for a path on the registry, or for none)."""
    return url_origin(url, "alerts URL")


def page_policy(alerts_url: str, tile_url: str = "") -> str:
    """The page's Content-Security-Policy: requests to the registry and the alert origin
    only, images from the registry and the tile origin only."""
    connect = alerts_origin(alerts_url)
    tiles = url_origin(tile_url, "tile URL")
    return _POLICY.format(
        connect=" ".join(filter(None, ("'self'", connect))),
        img=" ".join(filter(None, ("'self'", "data:", tiles))),
    )


async def _page(request: Request) -> Response:
    """index.html with its policy as a header (it names the alert and tile servers)."""
    html = (STATIC_DIR / "index.html").read_bytes()
    tiles: TileSettings = request.app.state.technician_tiles
    policy = page_policy(request.app.state.technician_alerts_url, tiles.url)
    return HTMLResponse(
        html, headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache"}
    )


async def _to_page(_request: Request) -> Response:
    return RedirectResponse(f"{PAGE_PATH}/", status_code=307)


def mount_technician_page(app: FastAPI, *, tiles: TileSettings | None = None) -> None:
    """Serve the page at /app/ (and redirect / there), with its settings at /app/settings.json.

    The routes are plain Starlette routes, not API routes: the page and its settings are
    public (the page holds no data until a token is pasted), and they stay out of OpenAPI.
    """
    app.state.technician_tiles = tiles if tiles is not None else TileSettings.from_environment()
    app.state.technician_alerts_url = ""
    app.add_route("/", _to_page, methods=["GET"], include_in_schema=False)
    app.add_route(f"{PAGE_PATH}/settings.json", _page_settings, methods=["GET"])
    # Before the static mount, so the page never goes out without its policy header.
    for path in (f"{PAGE_PATH}/", f"{PAGE_PATH}/index.html"):
        app.add_route(path, _page, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount(PAGE_PATH, StaticFiles(directory=STATIC_DIR, html=True), name="technician-page")


def set_tile_settings(app: FastAPI, tiles: TileSettings) -> None:
    """Change the map tiles an already-built app tells the page to use."""
    app.state.technician_tiles = tiles


def set_alerts_url(app: FastAPI, url: str) -> None:
    """Tell the page where the hub's alert API is ("" : alerting is not configured)."""
    if url and not _TILE_URL.match(url):
        raise TechnicianPageError(f"alerts URL {url!r}: must be an http(s) URL or a path")
    alerts_origin(url)  # one the page's policy can name, or TechnicianPageError
    app.state.technician_alerts_url = url.rstrip("/")
