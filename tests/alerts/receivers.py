"""Real local receivers of pages: an HTTP webhook server and an aiosmtpd SMTP server."""

from __future__ import annotations

import email
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.conftest import free_port


@dataclass
class WebhookReceiver:
    """A real HTTP server that records every POST (JSON body, headers); can refuse for a while."""

    port: int = 0
    posts: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # the path of each post (one per member)
    refuse: int = 0  # answer this many POSTs with 503 first
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The apprise URL that posts JSON here."""
        return f"json://127.0.0.1:{self.port}/hook"

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """The first ``count`` posts, waiting for them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.posts) >= count:
                    return list(self.posts)
            time.sleep(0.05)
        raise AssertionError(f"webhook got {len(self.posts)} post(s), expected {count}")

    def titles(self) -> list[str]:
        """The title of every post so far."""
        with self._lock:
            return [str(post.get("title", "")) for post in self.posts]


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Run a WebhookReceiver on a free port."""
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver._lock:
                if receiver.refused < receiver.refuse:
                    receiver.refused += 1
                    status = 503
                else:
                    receiver.posts.append(json.loads(body))
                    receiver.headers.append(dict(self.headers.items()))
                    receiver.paths.append(self.path)
                    status = 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@dataclass
class SmtpReceiver:
    """A real SMTP server (aiosmtpd) keeping every message it is sent."""

    port: int
    mailbox: _Mailbox

    @property
    def url(self) -> str:
        """The apprise URL that mails the team through this server, without TLS or login."""
        return f"mailto://127.0.0.1:{self.port}?from=kotahub@kota.example&to=pompa@kota.example"

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[Message]:
        """The first ``count`` messages, waiting for them."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.mailbox.messages) >= count:
                return list(self.mailbox.messages)
            time.sleep(0.05)
        raise AssertionError(f"SMTP got {len(self.mailbox.messages)} message(s), expected {count}")


@contextmanager
def smtp_receiver() -> Iterator[SmtpReceiver]:
    """Run an aiosmtpd server on a free port."""
    mailbox = _Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpReceiver(port, mailbox)
    finally:
        controller.stop()
