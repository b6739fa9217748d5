"""API tokens: random secrets with a role; only their SHA-256 is stored."""

from __future__ import annotations

import secrets

from sqlalchemy import select

from device_registry.database import RegistryDatabase
from device_registry.errors import NotFoundError
from device_registry.models import ApiToken, AuditEntry, utc_now
from device_registry.mqtt_identities import secret_hash
from device_registry.schemas import Role, TokenCreated, TokenPublic

TOKEN_PREFIX = "khr_"  # noqa: S105 - a marker, not a secret

# What each role may do. Routes name a permission, never a role.
PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "technician": frozenset({"read", "device.write", "credentials"}),
    "provisioner": frozenset({"read", "device.write", "device.bulk", "credentials", "status"}),
    "admin": frozenset(
        {"read", "device.write", "device.bulk", "credentials", "status", "catalog", "tokens"}
    ),
}


def create_token(database: RegistryDatabase, *, name: str, role: Role, actor: str) -> TokenCreated:
    """Make a token; its secret is in the result and nowhere else."""
    token_id = secrets.token_hex(4)
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    row = ApiToken(
        id=token_id,
        name=name,
        role=role,
        secret_sha256=secret_hash(secret),
        created_at=utc_now(),
        created_by=actor,
    )
    with database.session() as session:
        session.add(row)
        session.add(
            AuditEntry(
                at=row.created_at,
                actor=actor,
                action="create",
                entity_kind="api_token",
                entity_id=token_id,
                before=None,
                after={"name": name, "role": role},
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


def verify_token(database: RegistryDatabase, secret: str) -> TokenPublic | None:
    """The live token with this secret, or None."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    with database.session() as session:
        row = session.scalar(
            select(ApiToken).where(
                ApiToken.secret_sha256 == secret_hash(secret), ApiToken.revoked_at.is_(None)
            )
        )
        return TokenPublic.model_validate(row, from_attributes=True) if row else None
