"""A sign-in link opened while the technician page is still starting keeps its own answer.

The third cause of the test_token_qr flake (2 in 11 runs): the page starts, its settings are
on the way, a (bad) sign-in link opens in the same tab (a hashchange, so the router signs
in with it); when the settings came, the page's start took the stored token back over the
link's and routed again, so the link's /me answer was stale on arrival and its message never
showed. Headless Chromium against the real app (SQLite registry, uvicorn in a thread); the
browser holds the settings and /me answers to put them in that order every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect

from device_registry.api_tokens import create_token
from device_registry.database import open_database
from device_registry.registry_service import RegistryService
from device_registry.web_api import create_app
from tests.conftest import free_port
from tests.registry.test_technician_page import browser, phone_context
from tests.uvicorn_thread import serve_in_thread

__all__ = ["browser"]  # the page tests' module-scoped Chromium fixture
pytestmark = pytest.mark.browser

BAD_LINK = "#token=khr_not-a-real-token"
TOKEN_KEY = "kotahub.registry.token"


@dataclass
class Registry:
    """The app's address and a technician's token."""

    base_url: str
    token: str


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The real app on a SQLite registry with one technician token."""
    database = open_database(
        f"sqlite:///{tmp_path_factory.mktemp('link-race') / 'registry.sqlite3'}"
    )
    token = create_token(database, name="Sari", role="technician", actor="test").token
    port = free_port()
    config = uvicorn.Config(
        create_app(RegistryService(database, None)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    try:
        with serve_in_thread(config, "link-race-uvicorn"):
            yield Registry(f"http://127.0.0.1:{port}", token)
    finally:
        database.close()


class Held:
    """Requests the browser keeps unanswered until ``release``."""

    def __init__(self) -> None:
        self.routes: list[Any] = []

    def __call__(self, route: Any) -> None:
        """Keep the request."""
        self.routes.append(route)

    def release(self) -> None:
        """Let every kept request through, in the order they were made."""
        routes, self.routes = self.routes, []
        for route in routes:
            route.continue_()


def wait_held(page: Page, held: Held, count: int) -> None:
    """Until the browser has made ``count`` of the held requests (routes run as it waits)."""
    for _ in range(500):
        if len(held.routes) >= count:
            return
        page.wait_for_timeout(20)
    raise AssertionError(f"{count} request(s) expected, {len(held.routes)} held")


def open_link_while_starting(page: Page, base_url: str, stored: str | None, link: str) -> None:
    """Start the page with ``stored`` in its storage; open ``link`` before its settings come.

    The link's /me is answered only after the settings, the order that lost its answer.
    """
    page.goto(f"{base_url}/app/")
    page.evaluate(
        "([key, token]) => token ? localStorage.setItem(key, token) : localStorage.clear()",
        [TOKEN_KEY, stored],
    )
    settings, me = Held(), Held()
    page.route("**/app/settings.json", settings)
    page.route("**/api/v1/me", me)
    page.goto(f"{base_url}/app/")
    wait_held(page, settings, 1)
    page.goto(f"{base_url}/app/{link}")  # the same document: a hashchange, no reload
    wait_held(page, me, 1)
    settings.release()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")  # no eval: CSP
    me.release()
    page.unroute("**/api/v1/me")
    me.release()  # any /me made meanwhile


@pytest.mark.parametrize("stored", ["none", "a signed-in token"])
def test_a_bad_link_opened_while_the_page_starts_says_so(
    browser: Browser, registry: Registry, stored: str
) -> None:
    with phone_context(browser, registry.base_url, 390, 844) as page:
        token = registry.token if stored != "none" else None
        open_link_while_starting(page, registry.base_url, token, BAD_LINK)
        message = page.locator('#signin-form [data-error-for="_form"]')
        expect(message).to_contain_text("sign-in link did not work")
        expect(page.locator("#view-signin")).to_be_visible()
        expect(page.locator("#who")).to_be_hidden()
        assert "token" not in page.evaluate("location.href")


def test_a_good_link_opened_while_the_page_starts_signs_in(
    browser: Browser, registry: Registry
) -> None:
    with phone_context(browser, registry.base_url, 390, 844) as page:
        open_link_while_starting(page, registry.base_url, None, f"#token={registry.token}")
        expect(page.locator("#who-name")).to_have_text("Sari")
        expect(page.locator("#view-find")).to_be_visible()
        assert page.evaluate(f"localStorage.getItem('{TOKEN_KEY}')") == registry.token
        assert "token" not in page.evaluate("location.href")
