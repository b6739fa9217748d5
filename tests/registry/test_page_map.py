"""The technician page's map without tiles: the registry's own sites, kecamatan and devices
are drawn on the grid, and no request leaves the registry. The tile URL is a registry setting.

Headless Chromium at 390x844 on the real app (the fixtures of test_technician_page.py).
"""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, Request, Route, expect
from pydantic import ValidationError

from device_registry.registry_settings import RegistrySettings
from device_registry.schemas import SiteCreate
from device_registry.technician_page import TileSettings, set_tile_settings
from device_registry.web_api import create_app
from tests.registry import test_technician_page as page_tests
from tests.registry.test_page_wording import doc_shot
from tests.registry.test_technician_page import PREFIX, PageServer, add_device, sign_in

pytestmark = pytest.mark.browser

page_server = page_tests.page_server
browser = page_tests.browser
phone_390 = page_tests.phone_390

# Near the page's default centre (Semarang, -6.9667, 110.4167), so they are on screen.
SITE_ID, SITE_NAME, SITE_LAT, SITE_LON = f"{PREFIX}-polder", "Polder Tawang", -6.9650, 110.4180
KECAMATAN = "Semarang Utara"


TILES_WITH = (
    "f => [...document.querySelectorAll('#register-map canvas.leaflet-tile')]"
    ".filter(t => (t.dataset.features || '').split('|').includes(f)).length"
)


def wait_drawn_once(page: Page, feature: str) -> None:
    """Wait until one map tile drew a feature (`site:ID`, `device:ID`, `kecamatan:NAME`)."""
    page.wait_for_function(f"f => ({TILES_WITH})(f) === 1", arg=feature)


def test_the_map_without_tiles_shows_the_registrys_own_places_and_stays_local(
    phone_390: Page, page_server: PageServer
) -> None:
    page = phone_390
    page_server.service.create_site(
        SiteCreate(
            id=SITE_ID, name=SITE_NAME, latitude=SITE_LAT, longitude=SITE_LON,
            kecamatan=KECAMATAN,
        ),
        actor="test",
    )  # fmt: skip
    camera = f"{PREFIX}-map-cam"
    add_device(
        page_server, camera, "cctv-dome", kota="Semarang", kecamatan=KECAMATAN,
        latitude=-6.9672, longitude=110.4150,
    )  # fmt: skip

    # Every request the page makes, and a guard that refuses any to another host.
    seen: list[str] = []
    elsewhere: list[str] = []
    page.on("request", lambda request: seen.append(request.url))

    def only_the_registry(route: Route, request: Request) -> None:
        if request.url.startswith(page_server.base_url) or request.url.startswith("data:"):
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    page.route("**/*", only_the_registry)
    sign_in(page, page_server, "technician")
    page.click("#tab-register")
    map_box = page.locator("#register-map")
    # The whole map on screen (above the tab bar), for the screenshots.
    map_box.evaluate("el => el.scrollIntoView({ block: 'center' })")
    expect(map_box.locator("canvas.leaflet-tile").first).to_be_attached()
    # The site, the device and the kecamatan they are in, each drawn on exactly one tile.
    for feature in (f"site:{SITE_ID}", f"device:{camera}", f"kecamatan:{KECAMATAN}"):
        wait_drawn_once(page, feature)
    expect(map_box.locator(".leaflet-control-attribution")).to_contain_text(
        "sites, kecamatan and devices from the registry"
    )
    doc_shot(page, "map-without-tiles")

    # The drawing takes no tap: a pin still goes where the finger is, next to the site.
    site_xy = page.evaluate(
        "([lat, lon]) => { const p = window.kotahubMap.latLngToContainerPoint([lat, lon]);"
        " return [p.x, p.y]; }",
        [SITE_LAT, SITE_LON],
    )
    map_box.tap(position={"x": site_xy[0] - 40, "y": site_xy[1] + 70})
    expect(page.locator("#location-note")).to_have_text("Pinned on the map")
    lat, lon = float(page.input_value("#reg-lat")), float(page.input_value("#reg-lon"))
    # South-west of the site, as tapped.
    assert lat < SITE_LAT
    assert lon < SITE_LON
    expect(map_box.locator(".leaflet-marker-icon")).to_have_count(1)
    doc_shot(page, "map-pin-near-site")

    assert seen
    assert elsewhere == []
    assert [url for url in seen if not url.startswith(page_server.base_url)] == []


def test_the_tile_url_is_a_registry_setting(page_server: PageServer) -> None:
    settings = RegistrySettings(
        map_tile_url="https://tiles.kota.example/{z}/{x}/{y}.png",
        map_tile_attribution="© Kota Semarang",
    )
    tiles = settings.tile_settings()
    assert tiles == TileSettings(
        url="https://tiles.kota.example/{z}/{x}/{y}.png", attribution="© Kota Semarang"
    )
    assert RegistrySettings().tile_settings() is None
    # A bad template stops start-up, naming the setting and what is wrong.
    with pytest.raises(ValidationError, match=r"map_tile_url[\s\S]*lacks \{x\}, \{y\}"):
        RegistrySettings(map_tile_url="https://tiles.kota.example/{z}.png")

    # The app built with the setting tells the page; without it the page gets none.
    app = create_app(page_server.service, tiles=tiles)
    assert app.state.technician_tiles == tiles
    set_tile_settings(page_server.app, tiles)  # the running app, as create_app(tiles=) sets it
    try:
        shown = httpx.get(f"{page_server.base_url}/app/settings.json", timeout=10).json()
        assert shown["tile_url"] == "https://tiles.kota.example/{z}/{x}/{y}.png"
        assert shown["tile_attribution"] == "© Kota Semarang"
    finally:
        set_tile_settings(page_server.app, TileSettings())
