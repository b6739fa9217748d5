"""The technician page's view of the alert API: where the page finds it, and CORS for it.

The page is served by the registry API (``/app/``) and calls the alert HTTP server
(``[alerts] ack_port``), another origin, with its bearer token in ``Authorization``: the
browser sends a preflight ``OPTIONS`` first. The server answers only the origins given
here (the registry API's own address, or ``[alerts] page_origins``), never ``*``.
"""

from __future__ import annotations

from hub.settings import Settings

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"


def page_origins(settings: Settings) -> frozenset[str]:
    """Origins whose pages may call the alert API: the configured ones, else the registry's."""
    if settings.alerts.page_origins:
        return frozenset(o.rstrip("/") for o in settings.alerts.page_origins)
    registry = settings.registry
    scheme = "https" if registry.api_tls else "http"
    hosts = {registry.api_host}
    if registry.api_host in ("127.0.0.1", "localhost"):
        hosts |= {"127.0.0.1", "localhost"}  # the same machine under either name
    return frozenset(f"{scheme}://{host}:{registry.api_port}" for host in hosts)


def alerts_page_url(settings: Settings) -> str:
    """The alert server's address for the page's settings.json; "" when it is not served."""
    cfg = settings.alerts
    if not cfg.rules or not cfg.ack_port:
        return ""
    if cfg.page_url:
        return cfg.page_url.rstrip("/")
    if cfg.link_base_url:
        return cfg.link_base_url.rstrip("/")  # the links' public address is the same server
    host = "127.0.0.1" if cfg.ack_host in ("0.0.0.0", "") else cfg.ack_host
    return f"http://{host}:{cfg.ack_port}"


def cors_headers(
    origin: str | None, allowed: frozenset[str], *, preflight: bool
) -> list[tuple[str, str]]:
    """The CORS headers for a request from ``origin``: none unless it is an allowed one."""
    headers = [("Vary", "Origin")]
    if origin is None or origin not in allowed:
        return headers
    headers.append(("Access-Control-Allow-Origin", origin))
    if preflight:
        headers += [
            ("Access-Control-Allow-Methods", ALLOWED_METHODS),
            ("Access-Control-Allow-Headers", ALLOWED_HEADERS),
            ("Access-Control-Max-Age", "600"),
        ]
    return headers
