"""The alert engine inside ``kotahub hub run``: rules, store, consumer, notifier, link endpoint.

``attach_alerts`` loads and checks the rule and routing files (a bad one stops the start
with one line naming the file, rule and key), then adds the alert consumer to the
ingest service before it starts. The alert HTTP server (``[alerts] ack_port``) serves the
JSON API (alert_api.py) and the one-tap links: it answers ``GET /alerts/ack?t=TOKEN`` with
a page holding one button, and acknowledges on its ``POST``: mail scanners and chat
previews fetch links, and must not acknowledge a
page nobody read.
"""

from __future__ import annotations

import html
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.directory import DeviceDirectory
from hub.alerts.ack_links import LinkOutcome, LinkSigner, acknowledge_by_link
from hub.alerts.alert_api import PREFIX, ApiAuth, answer
from hub.alerts.alert_consumer import AlertConsumer
from hub.alerts.alert_router import AlertRouter, Routing, load_routing
from hub.alerts.alert_store import AlertRow, AlertStore, Page, default_path
from hub.alerts.alertmanager import AlertmanagerOutput
from hub.alerts.clock import Clock, SystemClock
from hub.alerts.engine_process import DirectorySource, EngineProcess
from hub.alerts.notifier import Notifier, RetryPolicy
from hub.alerts.page_cors import cors_headers, page_origins
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import load_rule_files
from hub.ingest.ingest_service import IngestService
from hub.settings import Settings

log = logging.getLogger(__name__)


def alert_database(settings: Settings) -> Path:
    """The alert database of these settings."""
    return settings.alerts.database or default_path(settings.state_dir)


def link_signer(settings: Settings) -> LinkSigner | None:
    """The signer of one-tap links, when a secret is set."""
    cfg = settings.alerts
    if cfg.link_secret is None:
        return None
    return LinkSigner(cfg.link_secret.get_secret_value().encode(), round(cfg.link_ttl_s * 1000))


class AlertRuntime:
    """What ``attach_alerts`` built; ``stop`` after the ingest service stopped."""

    def __init__(
        self,
        consumer: AlertConsumer,
        notifier: Notifier,
        ack_server: ThreadingHTTPServer | None,
        alertmanager: AlertmanagerOutput | None = None,
    ) -> None:
        self.consumer = consumer
        self.notifier = notifier
        self.ack_server = ack_server
        self.alertmanager = alertmanager
        self._ack_thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the notifier, the Alertmanager output and the link endpoint."""
        self.notifier.start()
        if self.alertmanager is not None:
            self.alertmanager.start()
        if self.ack_server is not None:
            self._ack_thread = threading.Thread(
                target=self.ack_server.serve_forever, name="alerts-ack", daemon=True
            )
            self._ack_thread.start()

    def stop(self) -> None:
        """Stop the notifier, the output and the link endpoint; close the consumer's database."""
        self.notifier.stop()
        if self.alertmanager is not None:
            self.alertmanager.stop()
        if self.ack_server is not None:
            self.ack_server.shutdown()
            self.ack_server.server_close()
        self.consumer.store.close()


RunningAlerts = AlertRuntime | EngineProcess  # both ``stop`` after the ingest service stopped


def attach_alerts(
    service: IngestService, settings: Settings, *, clock: Clock | None = None
) -> RunningAlerts | None:
    """Add the alert engine to ``service`` (before it starts); None without rules.

    The rule and routing files are checked here, so a bad one stops the start. The engine
    runs in a process of its own (``[alerts] engine = "process"``, engine_process.py)
    unless the settings say ``thread``, a test gives its own clock, or the device list
    is one only this process holds.
    """
    cfg = settings.alerts
    if not cfg.rules:
        return None
    rules = load_rule_files(list(cfg.rules))
    routing = load_routing(cfg.routing) if cfg.routing else Routing()
    source = DirectorySource.of(service.directory)
    if cfg.engine == "process" and clock is None and source is not None:
        process = EngineProcess(settings, source, service.queue_lines)
        process.start()
        service.add_consumer(process)
        log.info(
            "alert engine in its own process: %d rule(s), %d team(s), state in %s",
            len(rules),
            len(routing.teams),
            alert_database(settings),
        )
        return process
    clock = clock or SystemClock()
    runtime = build_runtime(settings, service.directory, clock, service.queue_lines)
    service.add_consumer(runtime.consumer)
    runtime.start()
    log.info(
        "alert engine (in the hub's process): %d rule(s), %d team(s), state in %s",
        len(rules),
        len(routing.teams),
        alert_database(settings),
    )
    return runtime


def build_runtime(
    settings: Settings,
    directory: DeviceDirectory,
    clock: Clock,
    sink: Callable[[list[str]], None],
) -> AlertRuntime:
    """The engine, its store, router, notifier, output and HTTP server (not started)."""
    cfg = settings.alerts
    rules = load_rule_files(list(cfg.rules))
    routing = load_routing(cfg.routing) if cfg.routing else Routing()
    router = AlertRouter(routing, directory, parent_hold_s=cfg.parent_hold_s)
    database = alert_database(settings)
    store = AlertStore(database)
    engine = RuleEngine(rules, directory, clock)
    signer = link_signer(settings)
    base = cfg.link_base_url.rstrip("/")

    def link(page: Page) -> str:
        assert signer is not None
        return f"{base}/alerts/ack?t={signer.token(page.key, page.instance, clock.now_ms())}"

    notifier = Notifier(
        database,
        clock,
        policy=RetryPolicy(cfg.retry_min_s, cfg.retry_max_s, cfg.max_attempts, cfg.send_timeout_s),
        link=link if signer is not None and base else None,
    )
    output = None
    if cfg.alertmanager_urls:

        def muted(alert: AlertRow, _now_ms: int) -> bool:
            return router.in_maintenance(alert.device_id)  # planned windows: the output checks

        output = AlertmanagerOutput(
            list(cfg.alertmanager_urls),
            database,
            clock,
            interval_s=cfg.alertmanager_interval_s,
            muted=muted,
            timeout_s=cfg.send_timeout_s,
        )

    def saved() -> None:
        notifier.wake()
        if output is not None:
            output.wake()

    consumer = AlertConsumer(
        engine,
        store,
        clock,
        pages=router,
        sink=sink,
        on_saved=saved,
        escalations=router.run_escalations,
    )
    server = None
    if cfg.ack_port:
        auth = ApiAuth(
            cfg.api_token.get_secret_value() if cfg.api_token else None,
            directory.database if isinstance(directory, DatabaseDeviceDirectory) else None,
        )
        server = ack_server(
            cfg.ack_host,
            cfg.ack_port,
            database,
            signer,
            clock,
            auth=auth,
            origins=page_origins(settings),
        )
    return AlertRuntime(consumer, notifier, server, output)


_PAGE = """<!doctype html><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Kotahub alert</title><body style="font:18px sans-serif;margin:2em">{body}</body>"""


MAX_API_BODY = 65_536  # API calls need no body; a comment fits, a hostile length does not


def _body_length(header: str | None) -> int | None:
    """The request body's length, or None when it is not a number within MAX_API_BODY."""
    text = (header or "0").strip()
    if not text.isdigit() or int(text) > MAX_API_BODY:
        return None
    return int(text)


def ack_server(
    host: str,
    port: int,
    database: Path,
    signer: LinkSigner | None,
    clock: Clock,
    *,
    auth: ApiAuth | None = None,
    origins: frozenset[str] = frozenset(),
) -> ThreadingHTTPServer:
    """The alert HTTP server: one-tap links (GET shows a button, POST acknowledges) when
    ``signer`` is given, and the JSON API under ``/alerts/api/v1/`` when ``auth`` is; the
    API answers CORS for pages from ``origins`` (the technician page, page_cors.py)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return  # tokens are in the query: keep them out of logs

        def _token(self) -> str | None:
            parts = urlsplit(self.path)
            if parts.path != "/alerts/ack" or signer is None:
                return None
            return parse_qs(parts.query).get("t", [""])[0]

        def _api(self, method: str) -> bool:
            """Answer an API call; False when the path is not the API's."""
            if auth is None or not urlsplit(self.path).path.startswith(PREFIX):
                return False
            length = _body_length(self.headers.get("Content-Length"))
            if length is None:
                # Unread, an unbounded or unparsable body would stall the next request.
                self.close_connection = True
                status, body = 413, {"error": f"a body of at most {MAX_API_BODY} bytes"}
            else:
                self.rfile.read(length)  # a body (e.g. a comment) is allowed, not needed
                status, body = answer(
                    method,
                    self.path,
                    self.headers.get("Authorization"),
                    auth=auth,
                    database=database,
                    clock=clock,
                )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            for name, value in cors_headers(self.headers.get("Origin"), origins, preflight=False):
                self.send_header(name, value)
            if status == 401:
                self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return True

        def _answer(self, status: int, body: str) -> None:
            data = _PAGE.format(body=body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:
            """A browser's CORS preflight for an API call (it carries no token to check)."""
            if auth is None or not urlsplit(self.path).path.startswith(PREFIX):
                self._answer(404, "<p>Not found.</p>")
                return
            origin = self.headers.get("Origin")
            headers = cors_headers(origin, origins, preflight=True)
            self.send_response(204 if len(headers) > 1 else 403)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            if self._api("GET"):
                return
            token = self._token()
            if token is None:
                self._answer(404, "<p>Not found.</p>")
                return
            assert signer is not None  # _token is None without one
            checked = signer.read(token, clock.now_ms())
            if isinstance(checked, LinkOutcome):
                self._answer(403, f"<p>{html.escape(checked.value)}.</p>")
                return
            key = html.escape(checked[0])
            safe_token = html.escape(token, quote=True)
            self._answer(
                200,
                f"<p>Alert <b>{key}</b></p><form method=post action='/alerts/ack?t={safe_token}'>"
                "<button style='font-size:1.4em;padding:.6em 1.2em'>Acknowledge</button></form>",
            )

        def do_POST(self) -> None:
            if self._api("POST"):
                return
            token = self._token()
            if token is None or signer is None:
                self._answer(404, "<p>Not found.</p>")
                return
            store = AlertStore(database)
            try:
                outcome = acknowledge_by_link(store, signer, token, clock.now_ms())
            finally:
                store.close()
            status = 200 if outcome in (LinkOutcome.ACKNOWLEDGED, LinkOutcome.ALREADY) else 403
            self._answer(status, f"<p>{html.escape(outcome.value.capitalize())}.</p>")

    return ThreadingHTTPServer((host, port), Handler)
