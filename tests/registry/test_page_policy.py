"""The technician page's Content-Security-Policy names the configured alert origin only,
and images from the configured tile server's origin only.

The header and the browser's side run on the real registry app under uvicorn, with a real
HTTP tile server (``http.server``) beside it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st
from playwright.sync_api import Browser
from pydantic import ValidationError

from device_registry.database import open_database
from device_registry.registry_service import RegistryService
from device_registry.registry_settings import RegistrySettings
from device_registry.technician_page import (
    _ORIGIN,
    STATIC_DIR,
    TILE_URL_ENV,
    TechnicianPageError,
    TileSettings,
    alerts_origin,
    page_policy,
    set_tile_settings,
)
from device_registry.web_api import create_app
from tests.conftest import free_port
from tests.registry.test_technician_page import browser
from tests.uvicorn_thread import serve_in_thread

__all__ = ["browser"]  # the page tests' module-scoped Chromium fixture

DIRECTIVES = [
    "default-src",
    "script-src",
    "connect-src",
    "img-src",
    "style-src",
    "object-src",
    "base-uri",
    "form-action",
    "frame-ancestors",
]


def sources_of(policy: str, directive: str) -> list[str]:
    """The sources of one of the policy's directives."""
    directives = [d.split() for d in policy.split(";")]
    assert [d[0] for d in directives] == DIRECTIVES  # nothing added, nothing split
    return next(d[1:] for d in directives if d[0] == directive)


def connect_src(policy: str) -> list[str]:
    """The sources of the policy's connect-src."""
    return sources_of(policy, "connect-src")


def img_src(policy: str) -> list[str]:
    """The sources of the policy's img-src."""
    return sources_of(policy, "img-src")


@pytest.mark.parametrize(
    ("url", "sources"),
    [
        ("", ["'self'"]),
        ("/alerts", ["'self'"]),  # behind the registry's own address
        ("http://127.0.0.1:9110", ["'self'", "http://127.0.0.1:9110"]),
        ("https://Hub.Kota.example/alerts/x?y#z", ["'self'", "https://hub.kota.example"]),
        ("http://[::1]:9110/", ["'self'", "http://[::1]:9110"]),
    ],
)
def test_the_policy_names_the_alert_origin(url: str, sources: list[str]) -> None:
    assert connect_src(page_policy(url)) == sources


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "http://a;b/",  # would end the directive and start another
        "http://user:pw@hub/",
        "http://hub,evil/",
        "http://'unsafe-eval'/",
        "https://hub:99999999/",
    ],
)
def test_an_origin_a_policy_cannot_name_is_refused(url: str) -> None:
    with pytest.raises(TechnicianPageError, match="not scheme://host"):
        alerts_origin(url)


@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(lambda s, rest: s + rest, st.sampled_from(["http://", "https://"]), st.text()),
    )
)
def test_any_url_gives_one_origin_or_a_refusal(url: str) -> None:
    """Whatever the setting says, the policy keeps its directives and names at most one
    origin, never a wildcard or a scheme alone."""
    try:
        policy = page_policy(url)
    except TechnicianPageError:
        return
    sources = connect_src(policy)
    assert sources[0] == "'self'"
    assert len(sources) <= 2
    assert all(_ORIGIN.match(s) for s in sources[1:])


# Images: the registry, data: (Leaflet's blank tile) and the tile server's origin only.
@pytest.mark.parametrize(
    ("url", "sources"),
    [
        ("", ["'self'", "data:"]),
        ("/app/tiles/{z}/{x}/{y}.png", ["'self'", "data:"]),  # tiles on the registry
        (
            "https://Tiles.Kota.example/osm/{z}/{x}/{y}.png?key=k#x",
            ["'self'", "data:", "https://tiles.kota.example"],
        ),
        ("http://10.0.0.7:8080/{z}/{x}/{y}.png", ["'self'", "data:", "http://10.0.0.7:8080"]),
        ("http://[fd00::7]/{z}/{x}/{y}", ["'self'", "data:", "http://[fd00::7]"]),
    ],
)
def test_the_policy_names_the_tile_origin(url: str, sources: list[str]) -> None:
    tiles = TileSettings(url=url)
    assert img_src(page_policy("", tiles.url)) == sources
    # Its own directive: the page may show the tiles, not send requests there.
    assert connect_src(page_policy("", tiles.url)) == ["'self'"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://{s}.tile.kota.example/{z}/{x}/{y}.png", "one server, not {s} subdomains"),
        ("//tiles.kota.example/{z}/{x}/{y}.png", "a path starting with one /"),
        ("/\\tiles.kota.example/{z}/{x}/{y}.png", "a path starting with one /"),
        ("http://user:pw@tiles/{z}/{x}/{y}.png", "not scheme://host"),
        ("http://tiles;img-src/{z}/{x}/{y}.png", "not scheme://host"),
        ("http://tiles,evil/{z}/{x}/{y}.png", "not scheme://host"),
        ("https://tiles:{z}/{x}/{y}.png", "not scheme://host"),
        ("https://tiles:99999999/{z}/{x}/{y}.png", "not scheme://host"),
    ],
)
def test_a_tile_origin_a_policy_cannot_name_is_refused_at_start_up(
    url: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError, match=reason):
        TileSettings(url=url)
    # Both ways of setting it stop start-up, naming the setting.
    with pytest.raises(ValidationError, match=r"map_tile_url[\s\S]*" + reason):
        RegistrySettings(map_tile_url=url)
    monkeypatch.setenv(TILE_URL_ENV, url)
    with pytest.raises(TechnicianPageError, match=f"{TILE_URL_ENV}: .*{reason}"):
        TileSettings.from_environment()


# Every refusal says which rule the setting broke.
TILE_REFUSALS = (
    "must be an http(s) URL or a path starting with one /",
    "tile URL template lacks",
    "tile URL host must be one server, not {s} subdomains",
    ": not scheme://host[:port][/path]",
)
TILE_PARTS = st.text(st.characters(codec="ascii"), max_size=20)


@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda scheme, host, path: f"{scheme}{host}/{{z}}/{path}{{x}}/{{y}}",
            st.sampled_from(["http://", "https://", "/", "//", "HTTP://", ""]),
            TILE_PARTS,
            TILE_PARTS,
        ),
    )
)
def test_any_tile_url_gives_one_origin_or_a_clear_refusal(url: str) -> None:
    """Whatever the setting says, the policy keeps its directives and shows images from
    the registry and at most the tile URL's own origin, never a wildcard or a scheme alone;
    or the setting is refused, saying why."""
    refusal = ""
    try:
        tiles = TileSettings(url=url)
    except ValidationError as err:
        refusal = err.errors()[0]["msg"]
    if refusal:
        assert any(reason in refusal for reason in TILE_REFUSALS), refusal
        return
    sources = img_src(page_policy("", tiles.url))
    assert sources[:2] == ["'self'", "data:"]
    assert len(sources) <= 3
    for origin in sources[2:]:
        assert _ORIGIN.match(origin)
        # The origin the URL itself starts with: where the browser will fetch the tiles.
        assert tiles.url[: len(origin)].lower() == origin
        assert tiles.url[len(origin) :][:1] in ("/", "?", "#")
    if len(sources) == 2:  # no tile server, or tiles on the registry itself
        assert not tiles.url or (tiles.url.startswith("/") and tiles.url[1] not in "/\\")


TILE_PNG = (STATIC_DIR / "vendor" / "leaflet" / "images" / "marker-icon.png").read_bytes()


class TileHandler(BaseHTTPRequestHandler):
    """A tile server: the same PNG for any path, every path asked for kept."""

    seen: ClassVar[list[str]]

    def do_GET(self) -> None:
        """Answer any tile."""
        type(self).seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(TILE_PNG)))
        self.end_headers()
        self.wfile.write(TILE_PNG)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads ``seen``."""


@dataclass
class TileServers:
    """The registry app serving the page, and a tile server on another port."""

    page_url: str
    tiles_url: str
    app: Any
    seen: list[str]


@pytest.fixture(scope="module")
def tile_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TileServers]:
    """The real app (SQLite registry) with its tiles on a real HTTP server at 127.0.0.1."""
    database = open_database(
        f"sqlite:///{tmp_path_factory.mktemp('page-policy') / 'registry.sqlite3'}"
    )
    seen: list[str] = []

    class Tiles(TileHandler):
        """This module's tile server, with its own list."""

    Tiles.seen = seen
    tile_server = ThreadingHTTPServer(("127.0.0.1", free_port()), Tiles)
    threading.Thread(target=tile_server.serve_forever, name="tile-server", daemon=True).start()
    tiles_url = f"http://127.0.0.1:{tile_server.server_address[1]}"
    app = create_app(
        RegistryService(database, None), tiles=TileSettings(url=tiles_url + "/{z}/{x}/{y}.png")
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    try:
        with serve_in_thread(config, "page-policy-uvicorn"):
            yield TileServers(f"http://127.0.0.1:{port}", tiles_url, app, seen)
    finally:
        tile_server.shutdown()
        tile_server.server_close()
        database.close()


def test_the_header_names_the_configured_tile_origin(tile_servers: TileServers) -> None:
    for path in ("/app/", "/app/index.html"):
        page = httpx.get(tile_servers.page_url + path, timeout=10)
        assert page.status_code == 200
        policy = page.headers["Content-Security-Policy"]
        assert img_src(policy) == ["'self'", "data:", tile_servers.tiles_url]
    set_tile_settings(tile_servers.app, TileSettings())
    try:
        policy = httpx.get(tile_servers.page_url + "/app/", timeout=10).headers[
            "Content-Security-Policy"
        ]
        assert img_src(policy) == ["'self'", "data:"]
    finally:
        set_tile_settings(
            tile_servers.app, TileSettings(url=tile_servers.tiles_url + "/{z}/{x}/{y}.png")
        )


@pytest.mark.browser
def test_the_page_shows_images_from_the_tile_server_and_nowhere_else(
    browser: Browser, tile_servers: TileServers
) -> None:
    """Chromium loads the configured server's tiles, the registry's and data: images; the
    same tile server under another name is another origin, refused before any request."""
    other = tile_servers.tiles_url.replace("127.0.0.1", "localhost")
    context = browser.new_context(base_url=tile_servers.page_url)
    try:
        tab = context.new_page()
        tab.goto("/app/")
        results = tab.evaluate(
            """async (urls) => Promise.all(urls.map((url) => new Promise((done) => {
                 const image = new Image();
                 image.onload = () => done("loaded");
                 image.onerror = () => done("blocked");
                 image.src = url;
               })))""",
            [
                tile_servers.tiles_url + "/15/1/2.png",
                other + "/15/1/3.png",
                "/app/vendor/leaflet/images/marker-icon.png",
                "data:image/gif;base64,R0lGODlhAQABAAD/ACwAAAAAAQABAAACADs=",
            ],
        )
        assert results == ["loaded", "blocked", "loaded", "loaded"]
        assert tile_servers.seen == ["/15/1/2.png"]  # the other name was never asked
    finally:
        context.close()
