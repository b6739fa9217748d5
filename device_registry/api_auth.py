"""Who calls the registry API and what they may do: bearer tokens and their roles' permissions.

Every route but the documentation needs a bearer token whose role grants the route's
permission (see ``api_tokens.PERMISSIONS``). ``AuthFirstRoute`` checks the token and the role
before the request body is read, so an unauthenticated caller learns nothing from a body's
errors; a route names its permission with one of the ``Reader``, ``Writer``... dependencies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from device_registry.api_tokens import DEVICE_INFO, GATEWAY_DEVICES, PERMISSIONS, check_token


class Caller(BaseModel):
    """Who is calling: the token's id, name and role."""

    token_id: str
    name: str
    role: str
    gateway_id: str | None = None  # a gateway token's one gateway
    team: str | None = None  # a person's field team

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"token:{self.token_id}:{self.name}"


_bearer = HTTPBearer(auto_error=False)


def _authenticate(request: Request, authorization: str | None) -> Caller:
    """The caller of a bearer token, or a 401 naming why (missing, unknown, expired)."""
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise StarletteHTTPException(401, "missing bearer token")
    result = check_token(request.app.state.registry_database, secret.strip())
    if result.token is None:
        raise StarletteHTTPException(401, result.refusal)
    token = result.token
    return Caller(
        token_id=token.id,
        name=token.name,
        role=token.role,
        gateway_id=token.gateway_id,
        team=token.team,
    )


def _authorize(who: Caller, permission: str) -> Caller:
    if permission not in PERMISSIONS.get(who.role, frozenset()):
        raise StarletteHTTPException(
            403, f"role {who.role!r} may not do this (needs {permission!r})"
        )
    return who


def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    # The route checked the token before reading the body (AuthFirstRoute); reuse it.
    known = getattr(request.state, "caller", None)
    if isinstance(known, Caller):
        return known
    header = f"Bearer {credentials.credentials}" if credentials is not None else None
    return _authenticate(request, header)


class _Need:
    """A route's permission as a dependency (``permission`` is read by AuthFirstRoute)."""

    def __init__(self, permission: str) -> None:
        self.permission = permission

    def __call__(self, who: Annotated[Caller, Depends(_caller)]) -> Caller:
        """The caller, if its role grants the permission (else 403)."""
        return _authorize(who, self.permission)


def _need(permission: str) -> Callable[..., Caller]:
    return _Need(permission)


class AuthFirstRoute(APIRoute):
    """A route that checks the token and role before FastAPI reads and parses the body.

    FastAPI parses a JSON body before it runs dependencies, so without this a malformed
    body from a caller with no token got 422 (and a detail) instead of 401.
    """

    def get_route_handler(self) -> Callable[[Request], Any]:
        """The usual handler, behind the token and permission check."""
        handler = super().get_route_handler()
        permissions = [
            d.call.permission for d in self.dependant.dependencies if isinstance(d.call, _Need)
        ]
        if not permissions:
            return handler
        permission = permissions[0]

        async def authenticated(request: Request) -> Any:
            authorization = request.headers.get("authorization")
            who = await run_in_threadpool(_authenticate, request, authorization)
            request.state.caller = _authorize(who, permission)
            return await handler(request)

        return authenticated


Reader = Annotated[Caller, Depends(_need("read"))]
Writer = Annotated[Caller, Depends(_need("device.write"))]
Bulk = Annotated[Caller, Depends(_need("device.bulk"))]
Rotator = Annotated[Caller, Depends(_need("credentials"))]
StatusWriter = Annotated[Caller, Depends(_need("status"))]
Catalog = Annotated[Caller, Depends(_need("catalog"))]
Admin = Annotated[Caller, Depends(_need("tokens"))]
GatewayReader = Annotated[Caller, Depends(_need(GATEWAY_DEVICES))]
DeviceInfoWriter = Annotated[Caller, Depends(_need(DEVICE_INFO))]
