"""A recording HTTP stand-in for Grafana's API (no Grafana can run here): folders, dashboards.

It answers what ``kotahub dashboards push`` asks with Grafana's status codes and JSON, and
records every request. ``refuse_token`` answers 401; a board whose uid is in ``conflicts``
answers 412 like Grafana's version-mismatch unless the push says ``overwrite``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    """One request the stand-in received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class GrafanaStandIn:
    """The stand-in server's state and what it saw."""

    token: str = "glsa_test"
    refuse_token: bool = False
    conflicts: set[str] = field(default_factory=set)
    folders: dict[str, str] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Serve on a free loopback port."""
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body: Any = json.loads(raw) if raw else {}
                stand_in.requests.append(
                    Recorded(method, self.path, dict(self.headers.items()), body)
                )
                if stand_in.refuse_token or self.headers.get("Authorization") != (
                    f"Bearer {stand_in.token}"
                ):
                    self._answer(401, {"message": "Unauthorized"})
                    return
                if method == "GET" and self.path.startswith("/api/folders/"):
                    uid = self.path.rsplit("/", 1)[-1]
                    if uid in stand_in.folders:
                        self._answer(200, {"uid": uid, "title": stand_in.folders[uid]})
                    else:
                        self._answer(404, {"message": "folder not found"})
                elif method == "POST" and self.path == "/api/folders":
                    stand_in.folders[body["uid"]] = body["title"]
                    self._answer(200, {"uid": body["uid"], "title": body["title"]})
                elif method == "POST" and self.path == "/api/dashboards/db":
                    board = body["dashboard"]
                    uid = board["uid"]
                    if uid in stand_in.conflicts and not body.get("overwrite"):
                        self._answer(
                            412,
                            {
                                "message": "The dashboard has been changed by someone else",
                                "status": "version-mismatch",
                            },
                        )
                        return
                    version = stand_in.dashboards.get(uid, {}).get("version", 0) + 1
                    stand_in.dashboards[uid] = {**board, "version": version}
                    self._answer(
                        200, {"status": "success", "uid": uid, "version": version, "id": 1}
                    )
                else:
                    self._answer(404, {"message": "not found"})

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        """Its address."""
        return f"http://127.0.0.1:{self.port}"
