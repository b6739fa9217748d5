"""The technician page's "Open alerts" view, end to end in headless Chromium.

The real registry app (uvicorn in a thread, SQLite registry with real API tokens) serves the
page; the hub's real alert HTTP server (``ack_server``) answers its calls from the other
origin with CORS, over a real alert store holding two firing alerts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect

from device_registry.api_tokens import create_token
from device_registry.database import RegistryDatabase, open_database
from device_registry.directory import DeviceRecord, SnapshotDirectory
from device_registry.registry_service import RegistryService
from device_registry.registry_settings import RegistrySettings
from device_registry.schemas import TeamCreate
from device_registry.technician_page import set_alerts_url
from device_registry.web_api import create_app
from hub.alerts.alert_api import ApiAuth
from hub.alerts.alert_runtime import ack_server
from hub.alerts.alert_settings import AlertSettings
from hub.alerts.alert_store import AlertStore
from hub.alerts.clock import ManualClock
from hub.alerts.page_cors import alerts_page_url, page_origins
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import parse_rules
from hub.ingest.wal_consumers import Reading
from hub.ingest.write_ahead_log import WalPosition
from hub.settings import Settings
from tests.conftest import free_port
from tests.registry.test_technician_page import browser, phone_context, shot
from tests.uvicorn_thread import serve_in_thread

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with the page's tests
pytestmark = pytest.mark.browser

T0 = 1_795_000_000_000
GAUGES = {"g1": ("Gayamsari", "drainage-east"), "g2": ("Tugu", "drainage-west")}


@dataclass
class Servers:
    """The registry app serving the page, and the hub's alert server with its store."""

    page_url: str
    alerts_url: str
    app: Any
    store: AlertStore
    registry: RegistryDatabase
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Both servers on free ports; the alert server allows only the page's origin."""
    folder = tmp_path_factory.mktemp("technician-alerts")
    registry = open_database(f"sqlite:///{folder / 'registry.sqlite3'}")
    tokens = {
        role: create_token(registry, name=f"{role}-a", role=role, actor="test").token
        for role in ("viewer", "technician")
    }
    catalog = RegistryService(registry, None)
    for team in ("drainage-west", "parks"):  # parks: a team with no open alert
        catalog.create_team(TeamCreate(id=team, name=team), actor="test")
        tokens[team] = create_token(
            registry, name=f"{team}-tech", role="technician", actor="test", team=team
        ).token
    database = folder / "alerts.sqlite3"
    defaults, rules = parse_rules(
        "rules: [{id: high, kind: threshold, metric: level_m, above: 3}]", "r"
    )
    gauges = [
        DeviceRecord(
            device_id=g,
            family="flood",
            device_type="t",
            tags=MappingProxyType({"kecamatan": k, "team": t}),
        )
        for g, (k, t) in GAUGES.items()
    ]
    engine = RuleEngine([(defaults, r) for r in rules], SnapshotDirectory(gauges), ManualClock(T0))
    store = AlertStore(database)
    for offset, gauge in enumerate(GAUGES, start=1):
        events = engine.on_reading(Reading(gauge, "flood", "telemetry", {}, {"level_m": 3.5}, T0))
        store.apply(events, engine.take_dirty(), WalPosition(1, offset), None, T0)
    page_port, alerts_port = free_port(), free_port()
    page_url = f"http://127.0.0.1:{page_port}"
    alerts = ack_server(
        "127.0.0.1",
        alerts_port,
        database,
        None,
        ManualClock(T0 + 5000),
        auth=ApiAuth(None, registry),
        origins=frozenset({page_url}),
    )
    alerts_thread = threading.Thread(target=alerts.serve_forever, daemon=True)
    alerts_thread.start()
    app = create_app(RegistryService(registry, None))
    alerts_url = f"http://127.0.0.1:{alerts_port}"
    set_alerts_url(app, alerts_url)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=page_port, log_level="warning", lifespan="off"
    )
    try:
        with serve_in_thread(config, "alerts-page-uvicorn"):
            yield Servers(page_url, alerts_url, app, store, registry, tokens)
    finally:
        alerts.shutdown()
        alerts.server_close()
        store.close()
        registry.engine.dispose()


@pytest.fixture
def phone(browser: Browser, servers: Servers) -> Iterator[Page]:
    """A 360x740 phone on the registry's page."""
    with phone_context(browser, servers.page_url, 360, 740) as page:
        yield page


def open_alerts(page: Page, servers: Servers, role: str, token: str | None = None) -> None:
    """Sign in with a role's token (or the named one, of that role) and open the alerts view."""
    page.goto("/")
    page.fill("#token-input", servers.tokens[token or role])
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#who-role")).to_have_text(role)
    page.click("#tab-alerts")
    expect(page.locator("#view-alerts")).to_be_visible()


def test_technician_lists_filters_and_acknowledges(phone: Page, servers: Servers) -> None:
    open_alerts(phone, servers, "technician")
    items = phone.locator("#alerts-list li")
    expect(items).to_have_count(2)
    first = phone.locator("li[data-key='high|g1']")
    expect(first.locator(".alert-device")).to_have_text("g1")
    expect(first).to_contain_text("Gayamsari")
    expect(first.locator(".alert-team")).to_have_text("drainage-east")
    # The team filter starts at all teams; one team shows only its alert.
    expect(phone.locator("#alerts-team")).to_have_value("")
    shot(phone, "open-alerts")
    phone.select_option("#alerts-team", "drainage-west")
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-key", "high|g2")
    phone.select_option("#alerts-team", "")
    expect(items).to_have_count(2)
    first.locator("button[data-action=ack]").click()
    expect(phone.locator("#alerts-message")).to_have_text("Acknowledged high|g1.")
    expect(first).to_contain_text("acknowledged by token:")
    expect(first.locator("button[data-action=ack]")).to_have_count(0)
    acked = servers.store.alert("high|g1")
    assert acked.acked_ms == T0 + 5000
    assert acked.acked_by is not None
    assert acked.acked_by.endswith(":technician-a")
    assert servers.store.alert("high|g2").acked_ms is None


def test_the_team_filter_starts_at_the_tokens_team(phone: Page, servers: Servers) -> None:
    open_alerts(phone, servers, "technician", "drainage-west")
    items = phone.locator("#alerts-list li")
    expect(phone.locator("#alerts-team")).to_have_value("drainage-west")
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-key", "high|g2")
    phone.select_option("#alerts-team", "")
    expect(items).to_have_count(2)
    # Back from another tab, the choice made stays; only a new sign-in starts at the team.
    phone.click("#tab-find")
    phone.click("#tab-alerts")
    expect(items).to_have_count(2)
    expect(phone.locator("#alerts-team")).to_have_value("")
    # A team with no open alert is still the filter (and offered), showing none.
    phone.click("#sign-out")
    open_alerts(phone, servers, "technician", "parks")
    expect(phone.locator("#alerts-team")).to_have_value("parks")
    expect(phone.locator("#alerts-summary")).to_have_text("0 open alerts")
    expect(items).to_have_count(0)


def test_the_alert_api_filters_by_team(servers: Servers) -> None:
    api = f"{servers.alerts_url}/alerts/api/v1/alerts"
    token = {"Authorization": f"Bearer {servers.tokens['viewer']}"}

    def keys(query: str) -> list[str]:
        answer = httpx.get(api + query, headers=token)
        assert answer.status_code == 200, answer.text
        return sorted(a["key"] for a in answer.json()["alerts"])

    assert keys("") == ["high|g1", "high|g2"]
    assert keys("?team=drainage-east") == ["high|g1"]
    assert keys("?state=all&team=drainage-west") == ["high|g2"]
    assert keys("?team=parks") == []
    assert keys("?team=") == []  # alerts of devices with no team: none here


def test_viewer_reads_without_ack_and_a_refused_ack_says_403(phone: Page, servers: Servers) -> None:
    open_alerts(phone, servers, "viewer")
    expect(phone.locator("#alerts-list li")).to_have_count(2)
    expect(phone.locator("#alerts-readonly")).to_be_visible()
    expect(phone.locator("#alerts-list button")).to_have_count(0)
    # The same call from the page's origin with the viewer's token: a clear refusal.
    status = phone.evaluate(
        """async ([base, token]) => (await fetch(base + "/alerts/api/v1/alerts/high%7Cg2/ack",
             {method: "POST", headers: {Authorization: "Bearer " + token}})).status""",
        [servers.alerts_url, servers.tokens["viewer"]],
    )
    assert status == 403
    assert servers.store.alert("high|g2").acked_ms is None


def test_without_an_alerts_url_the_view_says_not_configured(phone: Page, servers: Servers) -> None:
    set_alerts_url(servers.app, "")
    try:
        open_alerts(phone, servers, "technician")
        expect(phone.locator("#alerts-off")).to_have_text("Alerting is not configured on this hub.")
        expect(phone.locator("#alerts-body")).to_be_hidden()
    finally:
        set_alerts_url(servers.app, servers.alerts_url)
    assert httpx.get(f"{servers.page_url}/app/settings.json").json()["alerts_url"] == (
        servers.alerts_url
    )


def test_the_page_may_connect_to_the_alert_server_and_nowhere_else(
    browser: Browser, servers: Servers
) -> None:
    """The policy header names the configured alert origin; the browser holds to it."""
    for path in ("/app/", "/app/index.html"):
        page = httpx.get(servers.page_url + path)
        assert page.status_code == 200
        assert "Open alerts" in page.text
        connect = [
            d.split()[1:]
            for d in page.headers["Content-Security-Policy"].split(";")
            if d.split()[0] == "connect-src"
        ]
        assert connect == [["'self'", servers.alerts_url]]
    set_alerts_url(servers.app, "")
    try:
        policy = httpx.get(servers.page_url + "/app/").headers["Content-Security-Policy"]
        assert "connect-src 'self';" in policy
    finally:
        set_alerts_url(servers.app, servers.alerts_url)
    # The same alert server under another name is another origin: the page may not call it.
    other = servers.alerts_url.replace("127.0.0.1", "localhost")
    context = browser.new_context(base_url=servers.page_url)
    try:
        tab = context.new_page()
        tab.goto("/app/")
        results = tab.evaluate(
            """async (urls) => Promise.all(urls.map((url) =>
                 fetch(url + "/alerts/api/v1/alerts").then((r) => r.status, () => "blocked")))""",
            [servers.alerts_url, other],
        )
        assert results == [401, "blocked"]  # reached (no token), refused by the policy
    finally:
        context.close()


def test_cors_answers_only_the_page_origin(servers: Servers) -> None:
    api = f"{servers.alerts_url}/alerts/api/v1/alerts"
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = httpx.options(api, headers={"Origin": servers.page_url, **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == servers.page_url
    assert "Authorization" in allowed.headers["Access-Control-Allow-Headers"]
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    other = httpx.options(api, headers={"Origin": "http://evil.invalid", **preflight})
    assert other.status_code == 403
    assert "Access-Control-Allow-Origin" not in other.headers
    token = {"Authorization": f"Bearer {servers.tokens['viewer']}"}
    read = httpx.get(api, headers={"Origin": "http://evil.invalid", **token})
    assert read.status_code == 200  # a server-side caller; a browser would hide the answer
    assert "Access-Control-Allow-Origin" not in read.headers
    assert read.headers["Vary"] == "Origin"


def test_hub_settings_give_the_page_its_alerts_url_and_the_server_its_origins() -> None:
    rules = [Path("rules.yaml")]
    registry = RegistrySettings(api_host="127.0.0.1", api_port=18090)
    off = Settings(registry=registry, alerts=AlertSettings(rules=rules))
    assert alerts_page_url(off) == ""  # no ack_port: no alert server to call
    assert alerts_page_url(Settings(alerts=AlertSettings(ack_port=18093))) == ""  # no rules
    plain = Settings(registry=registry, alerts=AlertSettings(rules=rules, ack_port=18093))
    assert alerts_page_url(plain) == "http://127.0.0.1:18093"
    assert page_origins(plain) == {"http://127.0.0.1:18090", "http://localhost:18090"}
    linked = AlertSettings(rules=rules, ack_port=18093, link_base_url="https://hub.test/")
    assert alerts_page_url(Settings(alerts=linked)) == "https://hub.test"
    chosen = AlertSettings(
        rules=rules,
        ack_port=18093,
        page_url="https://alerts.test/",
        page_origins="https://devices.test/,https://spare.test",  # as the environment gives it
    )
    assert alerts_page_url(Settings(alerts=chosen)) == "https://alerts.test"
    assert page_origins(Settings(alerts=chosen)) == {"https://devices.test", "https://spare.test"}
