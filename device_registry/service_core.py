"""The registry service's plumbing: a write is one transaction with its broker work inside.

MQTT identities are created after the database rows are flushed and before the commit, so
a broker refusal rolls the write back; if the commit itself fails, the fresh identities
are revoked again. Every write is audited and bumps the change counter.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from device_registry.database import RegistryDatabase
from device_registry.errors import ConflictError
from device_registry.family_types import (
    driver_families,
)
from device_registry.identity_planning import PendingIdentities
from device_registry.models import (
    AuditEntry,
    Device,
    MqttIdentity,
    RegistryRevision,
    Team,
    utc_now,
)
from device_registry.mqtt_identities import (
    IdentityProvisioner,
    IssuedSecret,
)
from drivers.framework import DriverFamily

LockedRow = TypeVar("LockedRow", Device, Team)


class ServiceCore:
    """The service's database, broker identities and driver families, and its write plumbing."""

    def __init__(
        self,
        database: RegistryDatabase,
        identities: IdentityProvisioner | None = None,
        *,
        families: Mapping[str, DriverFamily] | None = None,
    ) -> None:
        self.database = database
        self.identities = identities
        # Driver families whose metric tables bound their types (None: all installed).
        self._families = families

    @property
    def families(self) -> Mapping[str, DriverFamily]:
        """The driver families whose metric tables seed and bound the device types."""
        if self._families is None:
            self._families = driver_families()
        return self._families

    # -- plumbing -----------------------------------------------------------------------
    @contextmanager
    def write_transaction(self) -> Iterator[tuple[Session, PendingIdentities, list[IssuedSecret]]]:
        """A write transaction whose broker work happens between flush and commit."""
        pending = PendingIdentities()
        issued: list[IssuedSecret] = []
        session = self.database.sessions()
        try:
            with session.begin():
                yield session, pending, issued
                session.flush()
                issued += self._apply_identities(session, pending)
        except IntegrityError as err:
            if issued and self.identities is not None:
                self.identities.revoke([item.spec for item in issued])
            raise ConflictError("(database)", f"constraint violated: {err.orig}") from err
        except BaseException:
            if issued and self.identities is not None:
                self.identities.revoke([item.spec for item in issued])
            raise
        finally:
            session.close()

    def _apply_identities(self, session: Session, pending: PendingIdentities) -> list[IssuedSecret]:
        if self.identities is None:
            return []
        if pending.revoke:
            self.identities.revoke(pending.revoke)
        if not pending.create:
            return []
        issued = self.identities.create(pending.create)
        now = utc_now()
        for item in issued:
            session.merge(
                MqttIdentity(
                    device_id=item.spec.device_id,
                    username=item.spec.username,
                    kind=item.spec.kind,
                    secret_sha256=item.sha256,
                    created_at=now,
                )
            )
        return issued

    @staticmethod
    def bump_revision(session: Session) -> None:
        """Count a change that the hub's cached directory must pick up."""
        session.execute(
            update(RegistryRevision)
            .where(RegistryRevision.id == 1)
            .values(counter=RegistryRevision.counter + 1)
        )

    @staticmethod
    def lock_row(session: Session, model: type[LockedRow], key: str) -> LockedRow | None:
        """Read a row for a read-modify-write, locked until the transaction ends.

        PostgreSQL: ``SELECT ... FOR UPDATE``. SQLite ignores ``FOR UPDATE`` and runs a
        SELECT outside any transaction until the first write, so a no-op write comes first:
        it takes the database's write lock (waiting for the current writer), and the read
        that follows sees the newest committed row and nobody can change it meanwhile.
        """
        if session.get_bind().dialect.name == "sqlite":
            session.execute(
                update(RegistryRevision)
                .where(RegistryRevision.id == 1)
                .values(counter=RegistryRevision.counter)
            )
        return session.get(model, key, with_for_update=True, populate_existing=True)

    @staticmethod
    def _audit(
        session: Session,
        *,
        actor: str,
        action: str,
        kind: str,
        key: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        session.add(
            AuditEntry(
                at=utc_now(),
                actor=actor,
                action=action,
                entity_kind=kind,
                entity_id=key,
                before=before,
                after=after,
            )
        )

    def revision(self) -> int:
        """The change counter (bumped by every write that the hub's cache must see)."""
        with self.database.session() as session:
            return int(session.scalar(select(RegistryRevision.counter)) or 0)
