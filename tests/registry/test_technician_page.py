"""The technician's phone page, end to end in headless Chromium (Debian's package, Playwright).

The real registry app runs under uvicorn in a thread against a real SQLite registry and the
session's real Mosquitto (for MQTT credentials). The browser emulates a 360x740 phone with
touch and a fixed GPS fix in Semarang. Screenshots go to test-artifacts/technician-page/.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import (
    Browser,
    Geolocation,
    Page,
    Playwright,
    Route,
    expect,
    sync_playwright,
)

from device_registry.api_tokens import create_token
from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from device_registry.schemas import ROLES, DeviceCreate, DeviceStatusUpdate
from device_registry.technician_page import (
    STATIC_DIR,
    TechnicianPageError,
    TileSettings,
    set_tile_settings,
)
from device_registry.web_api import TimedReadings, create_app
from tests.conftest import MqttClientFactory, RunningStack, free_port
from tests.registry.conftest import seed_catalog
from tests.uvicorn_thread import serve_in_thread

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Chromium's built-in synthetic camera, so the scan flow can open a real video stream.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]
# Simpang Lima, Semarang: the phone's fixed GPS fix.
GPS_FIX: Geolocation = {"latitude": -6.990400, "longitude": 110.422900, "accuracy": 8}
MAP_START = (-6.9667, 110.4167)  # the page's default map centre (Semarang)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "technician-page"
PREFIX = f"tp{secrets.token_hex(3)}"  # device ids unique to this run on the shared broker


@dataclass
class PageServer:
    """The registry app served on a free port, its service and one token per role."""

    base_url: str
    service: RegistryService
    tokens: dict[str, str]
    app: Any
    # What the app's readings source answers per device (a stand-in for InfluxDB).
    live: dict[str, TimedReadings] = field(default_factory=dict)

    def api(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> httpx.Response:
        """Call the running API with a role's token."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.request(
            method, f"{self.base_url}/api/v1{path}", headers=headers, timeout=10, **kwargs
        )

    def device(self, device_id: str) -> dict[str, Any]:
        """A device as the API returns it."""
        response = self.api("GET", f"/devices/{device_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture(scope="module")
def page_server(
    running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PageServer]:
    """The real app under uvicorn in a thread: SQLite registry, identities on the real broker."""
    database = open_database(
        f"sqlite:///{tmp_path_factory.mktemp('technician-page') / 'registry.sqlite3'}"
    )
    client = DynamicSecurityClient(
        BrokerAdmin(
            host=running_stack.mqtt_host,
            port=running_stack.mqtt_port,
            username=running_stack.settings.mqtt.username,
            password=running_stack.mqtt_password,
        )
    )
    service = RegistryService(database, DynsecIdentities(client))
    seed_catalog(service)
    tokens: dict[str, str] = {
        role: create_token(database, name=f"{role}-t", role=role, actor="test").token
        for role in ROLES
    }
    live: dict[str, TimedReadings] = {}
    app = create_app(service, readings_source=live.get)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    try:
        with serve_in_thread(config, "technician-page-uvicorn"):
            yield PageServer(f"http://127.0.0.1:{port}", service, tokens, app, live)
    finally:
        client.close()
        database.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium")
    playwright: Playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
    finally:
        playwright.stop()


@contextmanager
def phone_context(browser: Browser, base_url: str, width: int, height: int) -> Iterator[Page]:
    """A fresh phone of a given screen: touch, GPS granted with a fixed fix in Semarang.

    Uncaught script errors and Content-Security-Policy refusals fail the test.
    """
    context = browser.new_context(
        base_url=base_url,
        viewport={"width": width, "height": height},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        geolocation=GPS_FIX,
        permissions=["geolocation", "clipboard-read", "clipboard-write", "camera"],
        locale="en-GB",
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            script_errors.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    try:
        yield page
    finally:
        context.close()
    assert script_errors == []


@pytest.fixture
def phone(browser: Browser, page_server: PageServer) -> Iterator[Page]:
    """The smallest phone the page is made for: 360x740."""
    with phone_context(browser, page_server.base_url, 360, 740) as page:
        yield page


@pytest.fixture
def phone_390(browser: Browser, page_server: PageServer) -> Iterator[Page]:
    """A common phone today: 390x844 (the screen of the issue's first-use report)."""
    with phone_context(browser, page_server.base_url, 390, 844) as page:
        yield page


def shot(page: Page, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot as a test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if full_page:
        # A fixed toast would be painted in the middle of a full-page capture.
        page.evaluate("document.querySelector('#toast').hidden = true")
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def sign_in(page: Page, page_server: PageServer, role: str) -> None:
    """Open the page and paste a role's token."""
    page.goto("/")
    expect(page.locator("#view-signin")).to_be_visible()
    page.fill("#token-input", page_server.tokens[role])
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#who-role")).to_have_text(role)
    expect(page.locator("#view-find")).to_be_visible()


def open_device(page: Page, device_id: str) -> None:
    """Go straight to a device's view."""
    page.evaluate("id => { location.hash = '#/device/' + encodeURIComponent(id); }", device_id)
    expect(page.locator("#device-title")).to_have_text(device_id)


def add_device(page_server: PageServer, device_id: str, device_type: str, **extra: Any) -> Any:
    """Register a device through the service (test set-up, not under test here)."""
    body = {"id": device_id, "device_type": device_type, "state": "active", **extra}
    return page_server.service.create_device(DeviceCreate.model_validate(body), actor="test")


def test_sign_in_search_and_open_a_device(phone: Page, page_server: PageServer) -> None:
    cam = f"{PREFIX}-cam-1"
    gauge = f"{PREFIX}-gauge-1"
    add_device(
        page_server,
        cam,
        "cctv-dome",
        serial=f"SN-{PREFIX}-A1",
        vendor="Hikvision",
        kota="Semarang",
        kecamatan="Gayamsari",
        latitude=-6.9751,
        longitude=110.4489,
        team_id="dpu-drainage",
        firmware_version="5.7.3",
    )
    add_device(page_server, gauge, "flood-gauge", serial=f"FG-{PREFIX}", site_id="bkt-01")
    page_server.service.set_status(
        [
            DeviceStatusUpdate(device_id=cam, online=True, last_readings={"online": True}),
            DeviceStatusUpdate(
                device_id=gauge,
                online=False,
                reason="silent for 3 intervals",
                last_readings={"level_m": 0.0},
            ),
        ]
    )
    # The gauge's readings come from the live source, level_m with its time (issue 13
    # item 2); a metric whose time the source does not know shows none.
    page_server.live[gauge] = TimedReadings(
        values={"level_m": 1.25, "rain_mm": 3.5},
        times={"level_m": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)},
    )

    # A wrong token is refused next to the token field, and nothing is kept.
    phone.goto("/")
    phone.fill("#token-input", "khr_not-a-real-token")
    phone.click("#signin-form button[type=submit]")
    token_error = phone.locator('#signin-form [data-error-for="token"]')
    expect(token_error).to_have_text(
        "This token is unknown or was revoked: ask your admin for a new one."
    )
    assert phone.evaluate("localStorage.getItem('kotahub.registry.token')") is None

    sign_in(phone, page_server, "technician")
    expect(phone.locator("#who-name")).to_have_text("technician-t")
    assert (
        phone.evaluate("localStorage.getItem('kotahub.registry.token')")
        == (page_server.tokens["technician"])
    )

    # Search by part of the serial: one hit, with its state and online badges.
    phone.fill("#search-input", f"{PREFIX}-A1")
    phone.click("#search-form button[type=submit]")
    results = phone.locator("#results .result")
    expect(results).to_have_count(1)
    hit = results.first
    expect(hit.locator(".result-id")).to_have_text(cam)
    expect(hit.locator("[data-state]")).to_have_text("active")
    expect(hit.locator("[data-online]")).to_have_text("online")
    shot(phone, "find")

    hit.tap()
    expect(phone.locator("#device-title")).to_have_text(cam)
    status = phone.locator("#device-status")
    expect(status).to_contain_text("online")
    expect(phone.locator('#device-readings tr[data-metric="online"] td.value')).to_have_text("true")
    # Pushed readings carry no per-metric time.
    expect(phone.locator("#device-readings td.when")).to_have_count(0)
    details = phone.locator("#device-details")
    for text in (f"SN-{PREFIX}-A1", "5.7.3", "-6.975100, 110.448900", "Semarang \u203a Gayamsari"):
        expect(details).to_contain_text(text)
    expect(details).to_contain_text("dpu-drainage")
    expect(phone.locator("#device-history .audit li")).to_have_count(1)
    expect(phone.locator("#device-history")).to_contain_text("create")
    shot(phone, "device", full_page=True)

    # The typed-serial path of "scan serial" (this Chromium has no BarcodeDetector).
    phone.click("a.back")
    phone.click("#scan-search")
    expect(phone.locator("#scan-status")).to_contain_text("Type the serial")
    phone.fill("#scan-typed", f"FG-{PREFIX}")
    phone.click("#scan-use")
    expect(phone.locator("#search-input")).to_have_value(f"FG-{PREFIX}")
    expect(results).to_have_count(1)
    expect(results.first.locator("[data-online]")).to_have_text("offline")
    results.first.tap()
    expect(phone.locator("#device-title")).to_have_text(gauge)
    # Readings carry the units of the device type's metric schema.
    level = phone.locator('#device-readings tr[data-metric="level_m"]')
    expect(level.locator("td.value")).to_have_text("1.25 m")
    expect(level.locator("td.when")).to_contain_text("2 min ago")
    rain = phone.locator('#device-readings tr[data-metric="rain_mm"]')
    expect(rain.locator("td.value")).to_have_text("3.5 mm")
    expect(rain.locator("td.when")).to_have_count(0)
    expect(phone.locator("#device-status")).to_contain_text("silent for 3 intervals")


# A stand-in for the camera's BarcodeDetector (Chromium on Linux has none): it "reads" a
# fixed serial, but only from a video element that really receives camera frames.
FAKE_BARCODE_DETECTOR = """
window.BarcodeDetector = class {
  static async getSupportedFormats() { return ["code_128", "qr_code"]; }
  constructor(options) { this.options = options; }
  async detect(source) {
    return source.videoWidth > 0 ? [{ rawValue: "%s", format: "code_128" }] : [];
  }
};
"""


def test_scan_serial_reads_the_camera_with_barcode_detector(
    phone: Page, page_server: PageServer
) -> None:
    serial = f"QR-{PREFIX}"
    add_device(page_server, f"{PREFIX}-cam-scan", "cctv-dome", serial=serial)
    phone.add_init_script(FAKE_BARCODE_DETECTOR % serial)
    sign_in(phone, page_server, "viewer")
    phone.click("#scan-search")
    # The dialog closes by itself once a code was read from the camera's frames.
    expect(phone.locator("#scan-dialog")).not_to_be_visible()
    expect(phone.locator("#search-input")).to_have_value(serial)
    expect(phone.locator("#results .result-id")).to_have_text([f"{PREFIX}-cam-scan"])
    # The camera is released after the scan.
    assert phone.evaluate("document.querySelector('#scan-video').srcObject") is None


def test_a_gps_fix_before_the_register_view_has_loaded_places_the_pin(
    phone: Page, page_server: PageServer
) -> None:
    # Hold the catalogue request, so the fix arrives before the view built its map
    # (a race CI once hit: "Cannot read properties of undefined (reading 'setView')").
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    phone.route("**/api/v1/device-types*", hold)
    sign_in(phone, page_server, "technician")
    phone.click("#tab-register")
    phone.click("#use-gps")
    expect(phone.locator("#location-note")).to_have_text("GPS fix, accuracy ±8 m")
    expect(phone.locator("#register-map .leaflet-marker-icon")).to_have_count(1)
    assert held, "the catalogue request was not held"
    for route in held:
        route.continue_()
    expect(phone.locator("#reg-type option")).not_to_have_count(0)
    expect(phone.locator("#register-map .leaflet-marker-icon")).to_have_count(1)


def test_register_with_the_phones_gps(phone: Page, page_server: PageServer) -> None:
    device_id = f"{PREFIX}-cam-gps"
    sign_in(phone, page_server, "technician")
    phone.click("#tab-register")
    expect(phone.locator("#register-form")).to_be_visible()
    phone.click("#use-gps")
    expect(phone.locator("#location-note")).to_have_text("GPS fix, accuracy ±8 m")
    expect(phone.locator("#reg-lat")).to_have_value("-6.990400")
    expect(phone.locator("#reg-lon")).to_have_value("110.422900")
    expect(phone.locator("#register-map .leaflet-marker-icon")).to_have_count(1)
    phone.fill("#reg-id", device_id)
    phone.select_option("#reg-type", "cctv-dome")
    phone.fill("#reg-serial", f"SN-{PREFIX}-GPS")
    phone.fill("#reg-kecamatan", "Semarang Tengah")
    phone.select_option("#reg-team", "dpu-drainage")
    shot(phone, "register-gps", full_page=True)
    phone.click("#register-form button[type=submit]")

    expect(phone.locator("#device-title")).to_have_text(device_id)
    device = page_server.device(device_id)
    assert (device["latitude"], device["longitude"]) == (-6.9904, 110.4229)
    assert device["serial"] == f"SN-{PREFIX}-GPS"
    assert device["team_id"] == "dpu-drainage"
    assert device["kecamatan"] == "Semarang Tengah"
    assert device["state"] == "active"
    # A camera speaks ONVIF through the hub: no MQTT identity, so no secret to show.
    expect(phone.locator("#secret-dialog")).not_to_be_visible()
    history = page_server.api("GET", f"/devices/{device_id}/history").json()
    assert history["audit"][0]["actor"].endswith("technician-t")


def test_pin_on_the_map_sets_coordinates_and_registers_there(
    phone: Page, page_server: PageServer
) -> None:
    device_id = f"{PREFIX}-gauge-pin"
    requests: list[str] = []
    phone.on("request", lambda request: requests.append(request.url))
    sign_in(phone, page_server, "technician")
    phone.click("#tab-register")
    map_box = phone.locator("#register-map")
    expect(map_box).to_be_visible()
    # No tile server configured: a coordinate grid of canvas tiles, drawn on the phone.
    expect(map_box.locator("canvas.leaflet-tile").first).to_be_attached()
    box = map_box.bounding_box()
    assert box is not None

    map_box.tap(position={"x": box["width"] / 2, "y": box["height"] / 2})
    expect(phone.locator("#location-note")).to_have_text("Pinned on the map")
    lat = float(phone.input_value("#reg-lat"))
    lon = float(phone.input_value("#reg-lon"))
    assert abs(lat - MAP_START[0]) < 0.0005
    assert abs(lon - MAP_START[1]) < 0.0005

    # A second tap to the east moves the pin to exactly the point under the finger.
    point = (box["width"] / 2 + 90, box["height"] / 2 - 40)
    map_box.tap(position={"x": point[0], "y": point[1]})
    expected = phone.evaluate(
        "([x, y]) => { const p = window.kotahubMap.containerPointToLatLng([x, y]);"
        " return [p.lat.toFixed(6), p.lng.toFixed(6)]; }",
        list(point),
    )
    expect(phone.locator("#reg-lat")).not_to_have_value(str(lat))
    pinned = (float(phone.input_value("#reg-lat")), float(phone.input_value("#reg-lon")))
    # Within 3 px at zoom 15 (the border and sub-pixel touch rounding shift it a little).
    assert abs(pinned[0] - float(expected[0])) < 0.00013, (pinned, expected)
    assert abs(pinned[1] - float(expected[1])) < 0.00013, (pinned, expected)
    assert pinned[1] > lon + 0.002
    assert pinned[0] > lat
    expect(map_box.locator(".leaflet-marker-icon")).to_have_count(1)

    phone.fill("#reg-id", device_id)
    phone.select_option("#reg-type", "flood-gauge")
    phone.fill("#reg-serial", f"FG-{PREFIX}-PIN")
    phone.select_option("#reg-site", "bkt-01")
    map_box.scroll_into_view_if_needed()
    shot(phone, "map-pin")
    phone.click("#register-form button[type=submit]")

    # A flood gauge speaks MQTT itself: its new secret is shown once.
    secret = phone.locator("#secret-dialog")
    expect(secret).to_be_visible()
    expect(phone.locator("#secret-username")).to_have_text(device_id)
    assert phone.input_value("#secret-password")
    phone.click("#secret-done")
    expect(secret).not_to_be_visible()
    device = page_server.device(device_id)
    assert (device["latitude"], device["longitude"]) == pinned
    assert device["site_id"] == "bkt-01"
    assert device["mqtt_username"] == device_id
    # Everything the page loaded came from the registry itself: no CDN, no tile server.
    assert requests
    outside = [url for url in requests if not url.startswith(page_server.base_url)]
    assert outside == []


def test_replace_a_unit_moves_credentials_and_keeps_history(
    phone: Page, page_server: PageServer, mqtt_client: MqttClientFactory
) -> None:
    device_id = f"{PREFIX}-gauge-swap"
    first = add_device(page_server, device_id, "flood-gauge", serial="OLD-1", site_id="bkt-01")
    old_password = first.credentials.password
    sign_in(phone, page_server, "technician")
    open_device(phone, device_id)
    phone.click("#replace-open")
    phone.fill("#replace-serial", "NEW-2")
    phone.fill("#replace-firmware_version", "2.1.0")
    phone.fill("#replace-reason", "water damage")
    phone.click("#replace-submit")

    secret = phone.locator("#secret-dialog")
    expect(secret).to_be_visible()
    expect(secret.locator(".warning")).to_contain_text("Shown only once")
    expect(phone.locator("#secret-username")).to_have_text(device_id)
    new_password = phone.input_value("#secret-password")
    assert new_password
    assert new_password != old_password
    phone.click("#secret-copy")
    expect(phone.locator("#secret-copied")).to_have_text("Copied.")
    assert phone.evaluate("navigator.clipboard.readText()") == new_password
    shot(phone, "replace-secret")

    # Credentials moved: the failed unit's password is refused, the new one works.
    assert mqtt_client(device_id, old_password, client_id=device_id, connect=False).connect() == (
        "Not authorized"
    )
    assert mqtt_client(device_id, new_password, client_id=device_id, connect=False).connect() == (
        "Success"
    )

    phone.click("#secret-done")
    expect(secret).not_to_be_visible()
    assert phone.input_value("#secret-password") == ""
    assert new_password not in phone.content()

    # Same id and history; the new unit's serial; the swap itself is in the history.
    expect(phone.locator("#device-details")).to_contain_text("NEW-2")
    expect(phone.locator("#device-history .replacements")).to_contain_text("OLD-1 → NEW-2")
    expect(phone.locator("#device-history .replacements")).to_contain_text("water damage")
    history = page_server.api("GET", f"/devices/{device_id}/history").json()
    assert [a["action"] for a in history["audit"]] == ["replace", "create"]
    assert history["replacements"][0]["old_unit"]["serial"] == "OLD-1"
    device = page_server.device(device_id)
    assert device["serial"] == "NEW-2"
    assert device["firmware_version"] == "2.1.0"
    assert device["site_id"] == "bkt-01"
    # Shown once: after a reload the page has no way to show it again.
    phone.reload()
    expect(phone.locator("#device-title")).to_have_text(device_id)
    assert new_password not in phone.content()


def test_maintenance_toggle_and_retire_with_confirmation(
    phone: Page, page_server: PageServer
) -> None:
    device_id = f"{PREFIX}-cam-maint"
    add_device(page_server, device_id, "cctv-dome", serial="M-1")
    sign_in(phone, page_server, "technician")
    open_device(phone, device_id)
    toggle = phone.locator("#maintenance-toggle")
    expect(toggle).to_have_text("Put into maintenance")
    toggle.tap()
    expect(phone.locator(".device-head [data-state]")).to_have_text("maintenance")
    assert page_server.device(device_id)["state"] == "maintenance"
    expect(toggle).to_have_text("End maintenance (back to active)")
    shot(phone, "maintenance")
    toggle.tap()
    expect(phone.locator(".device-head [data-state]")).to_have_text("active")
    assert page_server.device(device_id)["state"] == "active"

    # Retire asks first; cancelling changes nothing.
    phone.click("#retire-open")
    dialog = phone.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("cannot be undone")
    phone.click("#confirm-cancel")
    expect(dialog).not_to_be_visible()
    assert page_server.device(device_id)["state"] == "active"
    phone.click("#retire-open")
    phone.fill("#confirm-reason", "pole removed")
    shot(phone, "retire-confirm")
    phone.click("#confirm-ok")
    expect(dialog).not_to_be_visible()
    expect(phone.locator(".device-head [data-state]")).to_have_text("retired")
    assert page_server.device(device_id)["state"] == "retired"
    expect(phone.locator("#device-actions")).to_contain_text("retired")
    expect(phone.locator("#maintenance-toggle")).to_have_count(0)
    actions = [
        a["action"] for a in page_server.api("GET", f"/devices/{device_id}/history").json()["audit"]
    ]
    assert actions == ["retire", "update", "update", "create"]


def test_a_viewer_sees_no_write_buttons(phone: Page, page_server: PageServer) -> None:
    device_id = f"{PREFIX}-gauge-view"
    add_device(page_server, device_id, "flood-gauge", serial="V-1")
    sign_in(phone, page_server, "viewer")
    expect(phone.locator("#tab-find")).to_be_visible()
    expect(phone.locator("#tab-register")).to_be_hidden()
    open_device(phone, device_id)
    expect(phone.locator("#device-readings")).to_be_visible()
    expect(phone.locator("#device-actions")).to_be_hidden()
    for button in ("#maintenance-toggle", "#replace-open", "#retire-open", "#rotate-credentials"):
        expect(phone.locator(button)).to_be_hidden()
    assert phone.locator("#view-device button:visible").count() == 0
    shot(phone, "viewer", full_page=True)
    # Typing the register address by hand shows a refusal, not the form.
    phone.evaluate("location.hash = '#/register'")
    expect(phone.locator("#register-forbidden")).to_be_visible()
    expect(phone.locator("#register-form")).to_be_hidden()
    # A technician on the same device does get the buttons (the check above can fail).
    phone.click("#sign-out")
    sign_in(phone, page_server, "technician")
    open_device(phone, device_id)
    expect(phone.locator("#maintenance-toggle")).to_be_visible()
    # A technician may also issue a new MQTT password; it is shown once, like on replace.
    phone.click("#rotate-credentials")
    expect(phone.locator("#secret-dialog")).to_be_visible()
    rotated = phone.input_value("#secret-password")
    assert rotated
    phone.click("#secret-done")
    assert rotated not in phone.content()
    actions = [
        a["action"] for a in page_server.api("GET", f"/devices/{device_id}/history").json()["audit"]
    ]
    assert actions == ["rotate_credentials", "create"]


def test_a_bad_serial_shows_the_apis_field_error(phone: Page, page_server: PageServer) -> None:
    device_id = f"{PREFIX}-cam-bad"
    add_device(page_server, device_id, "cctv-dome", serial="GOOD-1")
    sign_in(phone, page_server, "technician")
    open_device(phone, device_id)
    phone.click("#replace-open")
    phone.fill("#replace-serial", "X" * 101)
    phone.click("#replace-submit")
    serial_error = phone.locator('#replace-form [data-error-for="serial"]')
    expect(serial_error).to_have_text("Too long: at most 100 characters (this has 101).")
    expect(phone.locator("#replace-serial")).to_have_attribute("aria-invalid", "true")
    shot(phone, "bad-serial")
    phone.fill("#replace-serial", "   ")
    phone.click("#replace-submit")
    expect(serial_error).to_have_text("Enter the serial number from the label.")
    assert page_server.device(device_id)["serial"] == "GOOD-1"
    assert page_server.api("GET", f"/devices/{device_id}/history").json()["replacements"] == []

    # On the register form every field the API names gets its own message.
    open_id = f"{PREFIX} bad id"
    phone.click("#tab-register")
    phone.fill("#reg-id", open_id)
    phone.select_option("#reg-type", "cctv-dome")
    phone.fill("#reg-serial", "Y" * 101)
    phone.fill("#reg-lat", "-6.99")
    phone.fill("#reg-lon", "east")
    phone.fill("#reg-rw", "abc")
    phone.click("#register-form button[type=submit]")
    form = phone.locator("#register-form")
    expect(form.locator('[data-error-for="id"]')).to_contain_text("(no spaces)")
    expect(form.locator('[data-error-for="serial"]')).to_have_text(
        "Too long: at most 100 characters (this has 101)."
    )
    expect(form.locator('[data-error-for="longitude"]')).to_have_text(
        "Enter the longitude as a number, e.g. 110.422900."
    )
    expect(form.locator('[data-error-for="rw"]')).to_have_text(
        "Enter the RW as a number of 1 to 3 digits, e.g. 3."
    )
    expect(form.locator('[data-error-for="latitude"]')).to_be_hidden()
    shot(phone, "register-errors", full_page=True)
    # A reference the service checks (unknown type) is named too, after the shape is right.
    phone.fill("#reg-id", f"{PREFIX}-cam-new")
    phone.fill("#reg-serial", "Y-1")
    phone.fill("#reg-lon", "110.42")
    phone.fill("#reg-rw", "")
    phone.click("#register-form details summary")
    phone.fill("#reg-gateway", "no-such-gateway")
    phone.click("#register-form button[type=submit]")
    expect(form.locator('[data-error-for="gateway_id"]')).to_have_text(
        "No device “no-such-gateway” is registered: check the id."
    )
    expect(form.locator('[data-error-for="serial"]')).to_be_hidden()
    listed = page_server.api("GET", "/devices", params={"q": f"{PREFIX}-cam-new"}).json()
    assert listed["total"] == 0

    # Out of coverage: the phone says so instead of failing silently.
    phone.context.set_offline(True)
    phone.click("#register-form button[type=submit]")
    expect(form.locator('[data-error-for="_form"]')).to_contain_text("Cannot reach the registry")
    phone.context.set_offline(False)


def test_the_page_is_served_by_the_app_without_internet(
    phone: Page, page_server: PageServer
) -> None:
    root = httpx.get(f"{page_server.base_url}/", timeout=10)
    assert root.status_code == 307
    assert root.headers["location"] == "/app/"
    page = httpx.get(f"{page_server.base_url}/app/", timeout=10)
    assert page.status_code == 200
    assert "Find a device" in page.text
    settings = httpx.get(f"{page_server.base_url}/app/settings.json", timeout=10).json()
    assert settings == {"tile_url": "", "tile_attribution": "", "max_zoom": 19, "alerts_url": ""}
    for asset in ("app.js", "app.css", "vendor/leaflet/leaflet.js", "vendor/leaflet/LICENSE"):
        response = httpx.get(f"{page_server.base_url}/app/{asset}", timeout=10)
        assert response.status_code == 200, asset
    # The page's ES modules (app.js imports the rest): a browser runs a module only when it
    # comes as JavaScript.
    modules = sorted(path.name for path in STATIC_DIR.glob("*.js"))
    assert {"app.js", "api.js", "session.js", "alerts.js"} <= set(modules)
    for name in modules:
        response = httpx.get(f"{page_server.base_url}/app/{name}", timeout=10)
        assert response.status_code == 200, name
        assert "javascript" in response.headers["content-type"], name
    # The page's own files load nothing from elsewhere.
    for name in ("index.html", "app.css", *modules):
        text = (STATIC_DIR / name).read_text(encoding="utf-8")
        assert re.search(r"https?://", text) is None, name
    # The API is unchanged by the page: OpenAPI lists no page routes.
    paths = httpx.get(f"{page_server.base_url}/openapi.json", timeout=10).json()["paths"]
    assert all(path.startswith("/api/v1/") for path in paths)

    # Bad tile settings are refused at start-up with the setting's name.
    with pytest.raises(ValueError, match=r"lacks \{x\}, \{y\}"):
        TileSettings(url="https://tiles.example/{z}.png")
    with pytest.raises(ValueError, match="http"):
        TileSettings(url="ftp://tiles/{z}/{x}/{y}.png")
    monkey = pytest.MonkeyPatch()
    try:
        monkey.setenv("KOTAHUB_TECHNICIAN_TILE_URL", "tiles/{z}")
        with pytest.raises(TechnicianPageError, match="KOTAHUB_TECHNICIAN_TILE_URL"):
            TileSettings.from_environment()
    finally:
        monkey.undo()

    # A configured tile URL (here one on the registry itself) replaces the grid.
    set_tile_settings(page_server.app, TileSettings(url="/app/tiles/{z}/{x}/{y}.png"))
    try:
        tiles: list[str] = []
        phone.on("request", lambda r: tiles.append(r.url) if "/app/tiles/" in r.url else None)
        sign_in(phone, page_server, "technician")
        phone.click("#tab-register")
        expect(phone.locator("#register-map img.leaflet-tile").first).to_be_attached()
        assert phone.locator("#register-map canvas.leaflet-tile").count() == 0
        assert tiles
        assert all(url.startswith(f"{page_server.base_url}/app/tiles/15/") for url in tiles)
    finally:
        set_tile_settings(page_server.app, TileSettings())
