"""The alerts' JSON API on the hub's alert HTTP server (``[alerts] ack_port``).

    GET  /alerts/api/v1/alerts[?state=firing|resolved|all][&team=T]   open alerts by default
    GET  /alerts/api/v1/alerts/{key}                        one alert, its events, children
    POST /alerts/api/v1/alerts/{key}/ack                    acknowledge (stops its pages)
    POST /alerts/api/v1/alerts/{key}/resolve                close the instance by hand

``{key}`` is ``rule|device``, URL-encoded (``flood-stage%7Cbkt-1``). Every call carries
``Authorization: Bearer <token>``: ``[alerts] api_token``, or a registry API token when the
hub reads the registry database (checked by ``device_registry.api_tokens.check_token``;
viewers may read, technicians, provisioners and admins may also ack and resolve). Errors are
``{"error": "..."}`` with 401 (no or unknown token), 403 (a role that may not), 404 (no such
alert or path), 409 (already resolved, or already acknowledged) and 400 (a bad query).
"""

from __future__ import annotations

import hmac
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from device_registry.api_tokens import check_token
from device_registry.database import RegistryDatabase
from hub.alerts.alert_store import AlertRow, AlertStore, AlertStoreError
from hub.alerts.clock import Clock

PREFIX = "/alerts/api/v1/alerts"
# Registry roles (device_registry/api_tokens.PERMISSIONS) that may read, and act on, alerts.
READ_ROLES = frozenset({"viewer", "technician", "provisioner", "admin"})
ACT_ROLES = frozenset({"technician", "provisioner", "admin"})


class ApiError(Exception):
    """A refused call: its HTTP status and the reason shown to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ApiAuth:
    """Who may call: the hub's own bearer token and/or the registry's API tokens."""

    token: str | None = None
    registry: RegistryDatabase | None = None

    def actor(self, authorization: str | None, *, act: bool) -> str:
        """The caller's name for the alert's events; ApiError 401/403 when refused."""
        scheme, _, secret = (authorization or "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
        if self.token is not None and hmac.compare_digest(secret.encode(), self.token.encode()):
            return "api"
        if self.registry is None:
            raise ApiError(401, "unknown token")
        checked = check_token(self.registry, secret)
        if checked.token is None:
            raise ApiError(401, checked.refusal)
        token = checked.token
        if token.role not in (ACT_ROLES if act else READ_ROLES):
            what = "acknowledge or resolve alerts" if act else "read alerts"
            raise ApiError(403, f"token {token.id} ({token.role}) may not {what}")
        return f"token:{token.id}:{token.name}"


def alert_json(alert: AlertRow) -> dict[str, Any]:
    """An alert as the API returns it."""
    return asdict(alert)


def answer(
    method: str,
    path: str,
    authorization: str | None,
    *,
    auth: ApiAuth,
    database: Path,
    clock: Clock,
) -> tuple[int, dict[str, Any]]:
    """One API call: (HTTP status, JSON body)."""
    try:
        return 200, _route(method, path, authorization, auth, database, clock)
    except ApiError as err:
        return err.status, {"error": err.reason}


def _route(
    method: str, path: str, authorization: str | None, auth: ApiAuth, database: Path, clock: Clock
) -> dict[str, Any]:
    parts = urlsplit(path)
    rest = parts.path[len(PREFIX) :].strip("/")
    segments = [unquote(s) for s in rest.split("/")] if rest else []
    if not parts.path.startswith(PREFIX) or len(segments) > 2:
        raise ApiError(404, f"no such path {parts.path!r}")
    action = segments[1] if len(segments) == 2 else None
    expected = "POST" if action else "GET"
    if action not in (None, "ack", "resolve"):
        raise ApiError(404, f"no such action {action!r} (ack, resolve)")
    if method != expected:
        raise ApiError(405, f"{parts.path} takes {expected}")
    actor = auth.actor(authorization, act=action is not None)
    store = AlertStore(database)
    try:
        if not segments:
            query = parse_qs(parts.query, keep_blank_values=True)
            state = query.get("state", ["firing"])[0]
            if state not in ("firing", "resolved", "all"):
                raise ApiError(400, f"state {state!r}: firing, resolved or all")
            rows = store.alerts(state=None if state == "all" else state)
            if "team" in query:
                # One team's alerts (its devices' team); an empty value: those of no team.
                team = query["team"][0]
                rows = [a for a in rows if a.team == team]
            return {"alerts": [alert_json(a) for a in rows]}
        key = segments[0]
        try:
            alert = store.alert(key)
        except AlertStoreError as err:
            raise ApiError(404, f"no alert {key!r}") from err
        if action is None:
            return {
                "alert": alert_json(alert),
                "events": [dict(e) for e in store.events_of(key)],
                "children": [dict(c) for c in store.children(key)],
            }
        if alert.state != "firing":
            raise ApiError(409, f"alert {key!r} is already resolved")
        if action == "ack" and alert.acked_ms is not None:
            raise ApiError(409, f"alert {key!r} is already acknowledged by {alert.acked_by}")
        if not store.operator_event(key, action, actor, clock.now_ms(), instance=alert.instance):
            raise ApiError(409, f"alert {key!r} changed meanwhile; read it again")
        return {"alert": alert_json(store.alert(key))}
    finally:
        store.close()
