"""The phone page's words: errors in plain words at their field, cleared as it is fixed, and
a secret dialog whose text fits the case (new device, rotated password, replaced unit).

Headless Chromium at 390x844 on the real app, registry and broker (the fixtures of
test_technician_page.py). Screenshots of the changed screens go to docs/images/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.registry import test_technician_page as page_tests
from tests.registry.test_technician_page import PREFIX, PageServer, add_device, open_device, sign_in

pytestmark = pytest.mark.browser

# The fixtures of the page tests, by name (a module-level alias registers a fixture).
page_server = page_tests.page_server
browser = page_tests.browser
phone_390 = page_tests.phone_390

ROOT = Path(__file__).resolve().parents[2]


def doc_shot(page: Page, name: str) -> None:
    """A 390x844 screenshot (toast hidden) to test-artifacts/, and to docs/images/ for
    docs/technician-page.md when KOTAHUB_DOC_SHOTS=1 (so a test run leaves docs/ alone)."""
    page.evaluate("document.querySelector('#toast').hidden = true")
    folders = [ROOT / "test-artifacts" / "technician-page"]
    if os.environ.get("KOTAHUB_DOC_SHOTS") == "1":
        folders.append(ROOT / "docs" / "images")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"))


def error_for(page: Page, form: str, field: str) -> str:
    """The selector of a field's message in a form."""
    return f'{form} [data-error-for="{field}"]'


def test_errors_are_plain_words_at_the_field_and_go_as_it_is_fixed(
    phone_390: Page, page_server: PageServer
) -> None:
    page = phone_390
    sign_in(page, page_server, "technician")
    page.click("#tab-register")
    # The page defaults to the state `kotahub devices add` defaults to.
    expect(page.locator("#reg-state")).to_have_value("active")
    expect(page.locator("#state-note")).to_contain_text("kotahub devices add")

    page.click("#register-form button[type=submit]")
    id_error = page.locator(error_for(page, "#register-form", "id"))
    type_error = page.locator(error_for(page, "#register-form", "device_type"))
    expect(id_error).to_have_text("Enter a device id.")
    expect(type_error).to_have_text("Choose a device type.")
    expect(page.locator("#reg-id")).to_have_attribute("aria-invalid", "true")
    for raw in ("String should", "Field required"):
        expect(page.locator("#register-form")).not_to_contain_text(raw)
    page.locator("#reg-id").scroll_into_view_if_needed()
    doc_shot(page, "register-errors")

    # Typing into the id takes its message away at once; the type's stays until chosen.
    page.locator("#reg-id").press_sequentially("c")
    expect(id_error).to_be_hidden()
    expect(page.locator("#reg-id")).not_to_have_attribute("aria-invalid", "true")
    expect(type_error).to_be_visible()
    page.select_option("#reg-type", "cctv-dome")
    expect(type_error).to_be_hidden()

    # Cross-field rules are said at the field that is missing, not at the top of the form.
    page.fill("#reg-id", f"{PREFIX}-word-1")
    page.fill("#reg-kota", "")
    page.fill("#reg-kecamatan", "Gayamsari")
    page.click("#register-form button[type=submit]")
    kota_error = page.locator(error_for(page, "#register-form", "kota"))
    expect(kota_error).to_have_text("Enter the kota: a kecamatan needs it.")
    page.locator("#reg-kota").press_sequentially("Semarang")
    expect(kota_error).to_be_hidden()
    page.fill("#reg-lat", "-6.99")
    page.click("#register-form button[type=submit]")
    expect(page.locator(error_for(page, "#register-form", "longitude"))).to_have_text(
        "Enter the longitude too: latitude and longitude come together."
    )
    # A pin on the map fills both: the message goes with it.
    page.locator("#register-map").tap()
    expect(page.locator(error_for(page, "#register-form", "longitude"))).to_be_hidden()
    page.fill("#reg-lat", "95")
    page.click("#register-form button[type=submit]")
    expect(page.locator(error_for(page, "#register-form", "latitude"))).to_have_text(
        "The latitude must be between -90 and 90."
    )
    assert page_server.api("GET", f"/devices/{PREFIX}-word-1").status_code == 404

    # The replace form says it the same way, and clears the same way.
    device_id = f"{PREFIX}-word-cam"
    add_device(page_server, device_id, "cctv-dome", serial="W-1")
    open_device(page, device_id)
    page.click("#replace-open")
    page.click("#replace-submit")
    serial_error = page.locator(error_for(page, "#replace-form", "serial"))
    expect(serial_error).to_have_text("Enter the serial number from the label.")
    page.locator("#replace-serial").press_sequentially("W-2")
    expect(serial_error).to_be_hidden()


def test_the_secret_dialog_fits_a_new_device_and_a_rotated_password(
    phone_390: Page, page_server: PageServer
) -> None:
    page = phone_390
    device_id = f"{PREFIX}-word-fg"
    sign_in(page, page_server, "technician")
    page.click("#tab-register")
    page.fill("#reg-id", device_id)
    page.select_option("#reg-type", "flood-gauge")
    page.fill("#reg-serial", f"FG-{PREFIX}-W")
    page.click("#register-form button[type=submit]")

    dialog = page.locator("#secret-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#secret-title")).to_have_text("MQTT password for the new device")
    expect(dialog).to_contain_text("Shown only once")
    expect(dialog).not_to_contain_text("old password")
    expect(dialog).not_to_contain_text("no longer works")
    doc_shot(page, "secret-new-device")
    page.click("#secret-done")
    expect(dialog).not_to_be_visible()
    assert page_server.device(device_id)["state"] == "active"

    page.click("#rotate-credentials")
    expect(dialog).to_be_visible()
    expect(page.locator("#secret-title")).to_have_text("New MQTT password")
    expect(dialog).to_contain_text("The old password no longer works")
    page.click("#secret-done")
