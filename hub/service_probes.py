"""Is a hub or a registry API running on this state's ports? For ``kotahub stack status``.

The stack's own parts (Mosquitto, InfluxDB) are processes it started and recorded; the
hub and the API are started by the operator (``kotahub run``, ``kotahub hub run``, a
service manager), so they are found by asking their ports: the hub's ``/readyz`` on
``ingest.metrics_port`` (docs/ingest.md) and the API's ``/api/v1/me``, which answers 401
with a problem document to a caller without a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import httpx
import psutil

from hub.settings import Settings

ServiceState = Literal["running", "not ready", "not running", "not responding"]
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceStatus:
    """What ``kotahub stack status`` reports for the hub or the registry API."""

    name: str
    state: ServiceState
    port: int
    pid: int | None = None
    detail: str = ""


def listener_pid(port: int) -> int | None:
    """PID of the process listening on a TCP port, when the system tells us."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def _url(host: str, port: int, path: str) -> str:
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}{path}"


def probe_hub(settings: Settings) -> ServiceStatus:
    """The hub's readiness from its ``/readyz`` (200 ready, 503 names the failing checks)."""
    ingest = settings.ingest
    port = ingest.metrics_port
    if port == 0:
        return ServiceStatus(
            name="hub", state="not running", port=0, detail="ingest.metrics_port = 0: no probe"
        )
    try:
        resp = httpx.get(_url(ingest.metrics_host, port, "/readyz"), timeout=PROBE_TIMEOUT_S)
    except httpx.TimeoutException:
        return ServiceStatus(
            name="hub", state="not responding", port=port, detail="/readyz timed out"
        )
    except httpx.HTTPError:
        return ServiceStatus(name="hub", state="not running", port=port)
    try:
        body = resp.json()
    except ValueError:
        body = {}
    checks = body.get("checks", {}) if isinstance(body, dict) else {}
    failing = sorted(name for name, ok in checks.items() if not ok)
    if resp.status_code == 200:
        detail = "buffering: InfluxDB not answering" if body.get("writer_buffering") else ""
        state: ServiceState = "running"
    elif resp.status_code == 503:
        state, detail = "not ready", "failing: " + (", ".join(failing) or "unknown")
    else:
        state, detail = "not responding", f"/readyz answered {resp.status_code}"
    return ServiceStatus(name="hub", state=state, port=port, pid=listener_pid(port), detail=detail)


def probe_api(settings: Settings) -> ServiceStatus:
    """The registry API, if it answers on ``registry.api_port`` as the registry does."""
    registry = settings.registry
    port = registry.api_port
    try:
        resp = httpx.get(_url(registry.api_host, port, "/api/v1/me"), timeout=PROBE_TIMEOUT_S)
    except httpx.TimeoutException:
        return ServiceStatus(
            name="registry API", state="not responding", port=port, detail="timed out"
        )
    except httpx.HTTPError:
        return ServiceStatus(name="registry API", state="not running", port=port)
    # Without a token the registry says 401 with a problem document; anything else is
    # another program on the port.
    if resp.status_code == 401 and "problem+json" in resp.headers.get("content-type", ""):
        return ServiceStatus(
            name="registry API",
            state="running",
            port=port,
            pid=listener_pid(port),
            detail=_url(registry.api_host, port, "/"),
        )
    return ServiceStatus(
        name="registry API",
        state="not responding",
        port=port,
        detail=f"port answered {resp.status_code}: another program?",
    )


def probe_services(settings: Settings) -> list[ServiceStatus]:
    """The hub and the registry API that answer on this state's ports (none when none do).

    A hub whose process does not hold this state's write-ahead log is another state's
    (another checkout's ``kotahub run`` on the default port) and is left out.
    """
    from hub.ingest.ingest_service import wal_directory
    from hub.start_checks import WAL_LOCK_FILE, lock_holder

    found = []
    hub = probe_hub(settings)
    if hub.state != "not running":
        holder = lock_holder(wal_directory(settings) / WAL_LOCK_FILE)
        if hub.pid is None or holder is None or holder == hub.pid:
            found.append(hub)
    api = probe_api(settings)
    if api.state != "not running":
        found.append(api)
    return found
