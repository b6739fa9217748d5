"""The registry service's devices: references checked, writes with their MQTT identities, reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from device_registry.errors import ConflictError, FieldError, NotFoundError
from device_registry.identity_planning import (
    PendingIdentities,
    credentials_public,
    identity_kind,
    plan_identity_change,
)
from device_registry.models import (
    AuditEntry,
    Device,
    DeviceReplacement,
    DeviceType,
    MqttIdentity,
    Site,
    Team,
    utc_now,
)
from device_registry.mqtt_identities import (
    IdentitySpec,
    IssuedSecret,
)
from device_registry.registry_rows import (
    device_filters,
    device_public,
    device_snapshot,
    row_snapshot,
)
from device_registry.schemas import (
    AuditPublic,
    CrossFieldError,
    DeviceCreate,
    DevicePublic,
    DeviceQuery,
    DeviceReplace,
    DeviceUpdate,
    DeviceWritten,
    Page,
    ReplacementPublic,
    check_area,
    check_position,
)
from device_registry.service_core import ServiceCore


class DeviceService(ServiceCore):
    """Devices: reference checks, writes with their MQTT identities, reads and history."""

    # -- devices: checks ----------------------------------------------------------------
    @staticmethod
    def check_references(session: Session, device: Device) -> DeviceType:
        """Check every reference of a device row; raise FieldError naming the field."""
        # Without this, the lookups below would flush the unchecked row first and turn a
        # bad reference into a foreign-key error that names no field.
        with session.no_autoflush:
            return DeviceService._check_references(session, device)

    @staticmethod
    def _check_references(session: Session, device: Device) -> DeviceType:
        device_type = session.get(DeviceType, device.device_type)
        if device_type is None:
            raise FieldError("device_type", f"unknown device type {device.device_type!r}")
        if device.site_id is not None and session.get(Site, device.site_id) is None:
            raise FieldError("site_id", f"unknown site {device.site_id!r}")
        if device.team_id is not None and session.get(Team, device.team_id) is None:
            raise FieldError("team_id", f"unknown team {device.team_id!r}")
        for name in ("gateway_id", "parent_id"):
            target_id = getattr(device, name)
            if target_id is None:
                continue
            if target_id == device.id:
                raise FieldError(name, "a device cannot refer to itself")
            target = session.get(Device, target_id)
            if target is None:
                raise FieldError(name, f"unknown device {target_id!r}")
            if target.state == "retired":
                raise FieldError(name, f"device {target_id!r} is retired")
            DeviceService._check_no_cycle(session, device.id, name, target)
            if name == "gateway_id":
                target_type = session.get(DeviceType, target.device_type)
                if target_type is None or not target_type.is_gateway:
                    raise FieldError(name, f"device {target_id!r} is not a gateway")
        return device_type

    @staticmethod
    def _check_no_cycle(session: Session, device_id: str, name: str, target: Device) -> None:
        """Refuse a parent (or gateway) chain that leads back to the device itself."""
        chain = [device_id, target.id]
        seen = set(chain)
        current: Device | None = target
        while current is not None:
            above = getattr(current, name)
            if above is None:
                return
            chain.append(above)
            if above == device_id:
                raise FieldError(name, "reference cycle: " + " -> ".join(chain))
            if above in seen:
                return  # an older cycle above: not this write's doing
            seen.add(above)
            current = session.get(Device, above)

    def _username(self, session: Session, device_id: str) -> str | None:
        return session.scalar(
            select(MqttIdentity.username).where(MqttIdentity.device_id == device_id)
        )

    def _plan_identity(
        self,
        session: Session,
        pending: PendingIdentities,
        device: Device,
        device_type: DeviceType,
        *,
        issue_credentials: bool,
    ) -> None:
        """Queue the identity changes that a device's new state implies."""
        existing = session.get(MqttIdentity, device.id)
        change = plan_identity_change(
            device_id=device.id,
            state=device.state,
            gateway_id=device.gateway_id,
            device_type=device_type,
            existing_kind=existing.kind if existing is not None else None,
            issue_credentials=issue_credentials,
        )
        if change.revoke is not None and existing is not None:
            pending.revoke.append(change.revoke)
            session.delete(existing)
        if change.create is not None:
            pending.create.append(change.create)

    # -- devices: writes ----------------------------------------------------------------
    def create_device(
        self, data: DeviceCreate, *, actor: str, issue_credentials: bool = True
    ) -> DeviceWritten:
        """Register a device; a live MQTT device or gateway gets its identity now."""
        with self.write_transaction() as (session, pending, issued):
            if session.get(Device, data.id) is not None:
                raise ConflictError("id", f"device {data.id!r} already exists")
            values = data.model_dump(exclude_none=True)
            now = utc_now()
            device = Device(**{"tags": {}, "driver_config": {}, **values})
            device.created_at = device.updated_at = now
            device_type = self.check_references(session, device)
            device.family = device_type.family
            session.add(device)
            self._plan_identity(
                session, pending, device, device_type, issue_credentials=issue_credentials
            )
            self._audit(
                session,
                actor=actor,
                action="create",
                kind="device",
                key=device.id,
                before=None,
                after=device_snapshot(device),
            )
            self.bump_revision(session)
        secret = issued[0] if issued else None
        return DeviceWritten(
            device=device_public(device, secret.spec.username if secret else None),
            credentials=credentials_public(secret) if secret else None,
        )

    def update_device(
        self, device_id: str, data: DeviceUpdate, *, actor: str, issue_credentials: bool = True
    ) -> DeviceWritten:
        """Change a device; moving it into service creates its identity."""
        return self.edit_device(
            device_id, lambda _current: data, actor=actor, issue_credentials=issue_credentials
        )

    def edit_device(
        self,
        device_id: str,
        edit: Callable[[DevicePublic], DeviceUpdate],
        *,
        actor: str,
        issue_credentials: bool = True,
    ) -> DeviceWritten:
        """Change a device from its current value (e.g. merge tags) in one transaction.

        ``edit`` gets the device as stored and returns the changes; the row is locked before
        it is read (``lock_row``), so two concurrent edits cannot lose one another.
        """
        with self.write_transaction() as (session, pending, issued):
            device = self.lock_row(session, Device, device_id)
            if device is None:
                raise NotFoundError("device", device_id)
            if device.state == "retired":
                raise ConflictError("state", f"device {device_id!r} is retired")
            before = device_snapshot(device)
            data = edit(device_public(device, self._username(session, device_id)))
            # DeviceUpdate refuses null for NOT NULL columns (type, state, tags...) itself.
            for key, value in data.model_dump(exclude_unset=True).items():
                setattr(device, key, value)
            merged = device_snapshot(device)
            try:
                check_area(merged)
                check_position(merged)
            except CrossFieldError as err:
                raise FieldError(err.field, str(err)) from err
            device_type = self.check_references(session, device)
            device.family = device_type.family
            after = device_snapshot(device)
            if after == before:
                return DeviceWritten(
                    device=device_public(device, self._username(session, device.id))
                )
            device.updated_at = utc_now()
            self._plan_identity(
                session, pending, device, device_type, issue_credentials=issue_credentials
            )
            self._audit(
                session,
                actor=actor,
                action="update",
                kind="device",
                key=device_id,
                before=before,
                after=after,
            )
            self.bump_revision(session)
            session.flush()
            username = self._username(session, device_id)
        secret = issued[0] if issued else None
        return DeviceWritten(
            device=device_public(device, secret.spec.username if secret else username),
            credentials=credentials_public(secret) if secret else None,
        )

    def retire_device(self, device_id: str, *, actor: str, reason: str = "") -> DevicePublic:
        """Retire a device: its MQTT identity is deleted and its session dropped at once."""
        with self.write_transaction() as (session, pending, _issued):
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError("device", device_id)
            if device.state == "retired":
                raise ConflictError("state", f"device {device_id!r} is already retired")
            users = session.scalars(
                select(Device.id).where(
                    or_(Device.gateway_id == device_id, Device.parent_id == device_id),
                    Device.state != "retired",
                )
            ).all()
            if users:
                raise ConflictError(
                    "id",
                    f"device {device_id!r} is gateway or parent of {len(users)} live device(s) "
                    f"(first: {users[0]!r}); move or retire them first",
                )
            before = device_snapshot(device)
            device.state = "retired"
            device.updated_at = utc_now()
            existing = session.get(MqttIdentity, device_id)
            if existing is not None:
                pending.revoke.append(
                    IdentitySpec(device_id=device_id, kind=identity_kind(existing.kind))
                )
                session.delete(existing)
            self._audit(
                session,
                actor=actor,
                action="retire",
                kind="device",
                key=device_id,
                before=before,
                after={**device_snapshot(device), "reason": reason},
            )
            self.bump_revision(session)
        return device_public(device, None)

    def rotate_credentials(self, device_id: str, *, actor: str) -> DeviceWritten:
        """Issue a new MQTT secret; the old one stops working and its session drops."""
        if self.identities is None:
            raise ConflictError("id", "MQTT identities are disabled (registry.mqtt_identities)")
        with self.write_transaction() as (session, _pending, _issued):
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError("device", device_id)
            existing = session.get(MqttIdentity, device_id)
            if existing is None:
                raise ConflictError(
                    "id",
                    f"device {device_id!r} has no MQTT identity (only live gateways and "
                    "MQTT devices without a gateway have one)",
                )
            item = self.identities.rotate(
                IdentitySpec(device_id=device_id, kind=identity_kind(existing.kind))
            )
            existing.secret_sha256 = item.sha256
            existing.rotated_at = utc_now()
            self._audit(
                session,
                actor=actor,
                action="rotate_credentials",
                kind="device",
                key=device_id,
                before=None,
                after={"username": existing.username},
            )
        return DeviceWritten(
            device=device_public(device, existing.username), credentials=credentials_public(item)
        )

    def replace_device(self, device_id: str, data: DeviceReplace, *, actor: str) -> DeviceWritten:
        """Swap the physical unit behind a device id: history kept, credentials moved.

        The device id, its data series, location and team stay; the unit's serial, vendor,
        model and firmware change. The MQTT identity moves to the new unit with a new
        secret, so the failed unit can no longer connect.
        """
        unit_keys = ("serial", "vendor", "model", "firmware_version", "protocol_address")
        with self.write_transaction() as (session, _pending, _issued):
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError("device", device_id)
            if device.state == "retired":
                raise ConflictError("state", f"device {device_id!r} is retired")
            before = device_snapshot(device)
            old_unit = row_snapshot(device, unit_keys)
            for key, value in data.model_dump(exclude={"reason"}, exclude_none=True).items():
                setattr(device, key, value)
            device.updated_at = utc_now()
            new_unit = row_snapshot(device, unit_keys)
            session.add(
                DeviceReplacement(
                    device_id=device_id,
                    at=device.updated_at,
                    actor=actor,
                    reason=data.reason,
                    old_unit=old_unit,
                    new_unit=new_unit,
                )
            )
            existing = session.get(MqttIdentity, device_id)
            item: IssuedSecret | None = None
            if existing is not None and self.identities is not None:
                item = self.identities.rotate(
                    IdentitySpec(device_id=device_id, kind=identity_kind(existing.kind))
                )
                existing.secret_sha256 = item.sha256
                existing.rotated_at = device.updated_at
            self._audit(
                session,
                actor=actor,
                action="replace",
                kind="device",
                key=device_id,
                before=before,
                after={**device_snapshot(device), "reason": data.reason},
            )
            self.bump_revision(session)
            username = existing.username if existing is not None else None
        return DeviceWritten(
            device=device_public(device, username),
            credentials=credentials_public(item) if item else None,
        )

    # -- devices: reads -----------------------------------------------------------------
    def get_device(self, device_id: str) -> DevicePublic:
        """One device."""
        with self.database.session() as session:
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError("device", device_id)
            return device_public(device, self._username(session, device_id))

    def history(self, device_id: str) -> tuple[list[AuditPublic], list[ReplacementPublic]]:
        """A device's audit entries and unit replacements, newest first."""
        with self.database.session() as session:
            if session.get(Device, device_id) is None:
                raise NotFoundError("device", device_id)
            audit = session.scalars(
                select(AuditEntry)
                .where(AuditEntry.entity_kind == "device", AuditEntry.entity_id == device_id)
                .order_by(AuditEntry.id.desc())
            )
            swaps = session.scalars(
                select(DeviceReplacement)
                .where(DeviceReplacement.device_id == device_id)
                .order_by(DeviceReplacement.id.desc())
            )
            return (
                [AuditPublic.model_validate(a, from_attributes=True) for a in audit],
                [ReplacementPublic.model_validate(s, from_attributes=True) for s in swaps],
            )

    def audit_log(
        self, *, entity_kind: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[AuditPublic]:
        """Recent audit entries, newest first."""
        stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
        if entity_kind:
            stmt = stmt.where(AuditEntry.entity_kind == entity_kind)
        with self.database.session() as session:
            return [
                AuditPublic.model_validate(a, from_attributes=True) for a in session.scalars(stmt)
            ]

    def list_devices(self, query: DeviceQuery) -> Page[DevicePublic]:
        """Search and filter devices, one page at a time, ordered by id."""
        # Plain columns, not ORM objects: a page of 100 devices is built several times
        # faster, which is most of the API's list latency.
        stmt: Select[Any] = select(*Device.__table__.columns, MqttIdentity.username).outerjoin(
            MqttIdentity, MqttIdentity.device_id == Device.id
        )
        filtered = device_filters(stmt, query)
        count_stmt = device_filters(select(func.count()).select_from(Device), query)
        with self.database.session() as session:
            total = int(session.scalar(count_stmt) or 0)
            rows = session.execute(
                filtered.order_by(Device.id).limit(query.limit).offset(query.offset)
            ).all()
        items = [DevicePublic.model_validate(row._mapping) for row in rows]
        return Page[DevicePublic](items=items, total=total, limit=query.limit, offset=query.offset)
