"""API tokens: random secrets with a role; only their SHA-256 is stored."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from device_registry.database import RegistryDatabase
from device_registry.errors import FieldError, NotFoundError
from device_registry.models import ApiToken, AuditEntry, Team, utc_now
from device_registry.mqtt_identities import secret_hash
from device_registry.schemas import GATEWAY_ROLE, Role, TokenCreated, TokenPublic

TOKEN_PREFIX = "khr_"  # noqa: S105 - a marker, not a secret

# What each role may do. Routes name a permission, never a role. "gateway.devices" reads a
# gateway's device list: every person who may read, and a gateway token for its own gateway
# only (the route compares the token's gateway_id); a gateway token reads nothing else.
GATEWAY_DEVICES = "gateway.devices"
# A gateway's agent reports what its own devices say they are (model, firmware, serial);
# device_info_api writes the change to the device record. Nobody else needs to.
DEVICE_INFO = "gateway.device_info"
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read", GATEWAY_DEVICES}),
    "technician": frozenset({"read", "device.write", "credentials", GATEWAY_DEVICES}),
    "provisioner": frozenset(
        {"read", "device.write", "device.bulk", "credentials", "status", GATEWAY_DEVICES}
    ),
    "admin": frozenset(
        {
            "read",
            "device.write",
            "device.bulk",
            "credentials",
            "status",
            "catalog",
            "tokens",
            GATEWAY_DEVICES,
            DEVICE_INFO,
        }
    ),
    GATEWAY_ROLE: frozenset({GATEWAY_DEVICES, DEVICE_INFO}),
}


_DURATION = re.compile(r"([0-9]{1,6})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` as seconds; ValueError names the format."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r}: expected a positive number and a unit s, m, h, d or w (30d)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def create_token(
    database: RegistryDatabase,
    *,
    name: str,
    role: Role,
    actor: str,
    expires_in_s: int | None = None,
    gateway_id: str | None = None,
    team: str | None = None,
) -> TokenCreated:
    """Make a token (expiring after ``expires_in_s`` if given); its secret is shown once.

    Role ``gateway`` needs ``gateway_id`` (the one gateway it may read), no other role takes
    one; ``ValueError`` says so, as the API's body check (``TokenCreate``) does. ``team`` is
    a person's field team, a known team's id (``FieldError`` otherwise).
    """
    if (role == GATEWAY_ROLE) != (gateway_id is not None):
        raise ValueError("gateway_id: required with role gateway, and only with that role")
    if role == GATEWAY_ROLE and team is not None:
        raise ValueError("team: a gateway token has no team")
    token_id = secrets.token_hex(4)
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = utc_now()
    row = ApiToken(
        id=token_id,
        name=name,
        role=role,
        secret_sha256=secret_hash(secret),
        created_at=now,
        created_by=actor,
        expires_at=now + dt.timedelta(seconds=expires_in_s) if expires_in_s else None,
        gateway_id=gateway_id,
        team=team,
    )
    with database.session() as session:
        if team is not None and session.get(Team, team) is None:
            raise FieldError("team", f"unknown team {team!r} (see the registry's teams)")
        session.add(row)
        session.add(
            AuditEntry(
                at=row.created_at,
                actor=actor,
                action="create",
                entity_kind="api_token",
                entity_id=token_id,
                before=None,
                after={
                    "name": name,
                    "role": role,
                    "expires_at": row.expires_at.isoformat() if row.expires_at else None,
                    "gateway_id": gateway_id,
                    "team": team,
                },
            )
        )
    return TokenCreated(
        **TokenPublic.model_validate(row, from_attributes=True).model_dump(), token=secret
    )


def revoke_token(database: RegistryDatabase, token_id: str, *, actor: str) -> TokenPublic:
    """Revoke a token at once."""
    with database.session() as session:
        row = session.get(ApiToken, token_id)
        if row is None:
            raise NotFoundError("token", token_id)
        if row.revoked_at is None:
            row.revoked_at = utc_now()
            session.add(
                AuditEntry(
                    at=row.revoked_at,
                    actor=actor,
                    action="revoke",
                    entity_kind="api_token",
                    entity_id=token_id,
                    before=None,
                    after={"revoked": True},
                )
            )
        return TokenPublic.model_validate(row, from_attributes=True)


def list_tokens(database: RegistryDatabase) -> list[TokenPublic]:
    """Every token's metadata."""
    with database.session() as session:
        rows = session.scalars(select(ApiToken).order_by(ApiToken.created_at))
        return [TokenPublic.model_validate(r, from_attributes=True) for r in rows]


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """What a presented secret is: a live token, or why it is refused (``refusal``)."""

    token: TokenPublic | None
    refusal: str = ""


def check_token(
    database: RegistryDatabase, secret: str, *, now: dt.datetime | None = None
) -> TokenCheck:
    """The live token with this secret, or the reason it is refused (unknown, revoked, expired)."""
    if not secret.startswith(TOKEN_PREFIX):
        return TokenCheck(None, "unknown or revoked token")
    with database.session() as session:
        row = session.scalar(
            select(ApiToken).where(
                ApiToken.secret_sha256 == secret_hash(secret), ApiToken.revoked_at.is_(None)
            )
        )
        if row is None:
            return TokenCheck(None, "unknown or revoked token")
        token = TokenPublic.model_validate(row, from_attributes=True)
    expires = token.expires_at
    if expires is not None:
        # SQLite hands back naive datetimes; the registry writes UTC.
        expires = expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
        if (now or utc_now()) >= expires:
            stamp = f"{expires.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
            return TokenCheck(None, f"token {token.id} ({token.name}) expired at {stamp}")
    return TokenCheck(token)


def verify_token(database: RegistryDatabase, secret: str) -> TokenPublic | None:
    """The live, unexpired token with this secret, or None."""
    return check_token(database, secret).token
