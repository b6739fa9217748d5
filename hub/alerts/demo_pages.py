"""The alert engine in ``kotahub demo``: the shipped rule set, one team per area, and a local
webhook receiver that gets every page (and lists them at ``GET /``).

Each area's team is paged at ``json://127.0.0.1:PORT/<area-slug>``: the receiver records
the page under that area, so ``kotahub demo fault flood-rises Genuk`` shows who was paged.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from hub.alerts.alert_runtime import RunningAlerts, attach_alerts
from hub.alerts.alert_settings import AlertSettings
from hub.alerts.page_cors import alerts_page_url
from hub.ingest.ingest_service import IngestService
from hub.settings import Settings

log = logging.getLogger(__name__)
SHIPPED_RULES = Path(__file__).resolve().parent / "rules" / "semarang.yaml"
KEPT_PAGES = 200  # the receiver keeps the newest ones


def area_slug(area: str) -> str:
    """An area's name as a path segment and team id (``Semarang Utara``: ``semarang-utara``)."""
    return re.sub(r"[^a-z0-9]+", "-", area.casefold()).strip("-") or "area"


@dataclass(frozen=True, slots=True)
class ReceivedPage:
    """One page the demo's receiver got."""

    area: str  # the team's area slug (the path it was posted to)
    title: str
    body: str
    received: float  # wall clock, seconds


@dataclass
class PageReceiver:
    """A local HTTP webhook receiver (apprise ``json://``) that keeps the pages it gets."""

    host: str = "127.0.0.1"
    pages: deque[ReceivedPage] = field(default_factory=lambda: deque(maxlen=KEPT_PAGES))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        """The port it listens on (after ``start``)."""
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Where to read the received pages (GET, JSON)."""
        return f"http://{self.host}:{self.port}/"

    def target(self, area: str) -> str:
        """The apprise URL that pages ``area``'s team here."""
        return f"json://{self.host}:{self.port}/{area_slug(area)}"

    def received(self) -> list[ReceivedPage]:
        """The pages so far, oldest first."""
        with self._lock:
            return list(self.pages)

    def start(self) -> None:
        """Listen on a free port, in a thread of its own."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = {}
                body = body if isinstance(body, dict) else {}
                page = ReceivedPage(
                    self.path.strip("/"),
                    str(body.get("title", "")),
                    str(body.get("message", "")),
                    time.time(),
                )
                with receiver._lock:
                    receiver.pages.append(page)
                log.warning("page to team %s: %s", page.area, page.title)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                data = json.dumps(
                    [
                        {"team": f"area-{p.area}", "title": p.title, "message": p.body}
                        for p in receiver.received()
                    ],
                    indent=1,
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="demo-pages", daemon=True).start()

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def demo_routing(receiver: PageReceiver, areas: list[str]) -> dict[str, Any]:
    """One team per area, paged at the receiver; anything else to a ``city`` path."""
    teams = [
        {
            "id": f"area-{area_slug(area)}",
            "match": {"kecamatan": [area]},
            "notify": [receiver.target(area)],
        }
        for area in areas
    ]
    return {"teams": teams, "default": {"notify": [receiver.target("city")]}}


@dataclass
class DemoAlerts:
    """The demo's alert engine and its receiver; ``stop`` after the hub stopped."""

    receiver: PageReceiver
    runtime: RunningAlerts | None
    page_url: str = ""  # the alert API the technician page calls ("" : not served)

    def stop(self) -> None:
        """Stop the engine's threads, then the receiver."""
        if self.runtime is not None:
            self.runtime.stop()
        self.receiver.stop()


def attach_demo_alerts(service: IngestService, settings: Settings, areas: list[str]) -> DemoAlerts:
    """Start the receiver and add the engine to ``service`` (before it starts).

    The rules are ``[alerts] rules`` when set, else the shipped rule set; the routing is the
    demo's (one team per area); the state is the demo's own, kept across runs.
    """
    receiver = PageReceiver()
    receiver.start()
    folder = settings.state_dir / "demo" / "alerts"
    folder.mkdir(parents=True, exist_ok=True)
    routing = folder / "routing.yaml"
    routing.write_text(yaml.safe_dump(demo_routing(receiver, areas), sort_keys=False))
    cfg = settings.alerts.model_dump()
    cfg.update(
        rules=list(settings.alerts.rules) or [SHIPPED_RULES],
        routing=routing,
        database=folder / "alerts.sqlite3",
        retry_min_s=0.5,
    )
    if not cfg.get("ack_port"):
        # The technician page's Alerts tab needs the alert API: on loopback, a port of its own.
        cfg.update(ack_host="127.0.0.1", ack_port=_loopback_port())
    demo_settings = settings.model_copy(update={"alerts": AlertSettings.model_validate(cfg)})
    try:
        runtime = attach_alerts(service, demo_settings)
    except BaseException:
        receiver.stop()
        raise
    return DemoAlerts(receiver, runtime, alerts_page_url(demo_settings))


def _loopback_port() -> int:
    """A free loopback port now (the alert server binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
