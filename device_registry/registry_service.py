"""The registry's service layer: every write checks references, is audited and bumps the
change counter, all in one transaction.

MQTT identities are created after the database rows are flushed and before the commit, so
a broker refusal rolls the write back; if the commit itself fails, the fresh identities
are revoked again. The API, the CLI and the importer all go through this class.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from device_registry.database import RegistryDatabase
from device_registry.errors import ConflictError, FieldError, NotFoundError
from device_registry.family_types import (
    check_family_metrics,
    declared_type,
    driver_families,
)
from device_registry.models import (
    AuditEntry,
    Device,
    DeviceReplacement,
    DeviceStatus,
    DeviceType,
    MqttIdentity,
    RegistryRevision,
    Site,
    Team,
    utc_now,
)
from device_registry.mqtt_identities import (
    IdentityProvisioner,
    IdentitySpec,
    IssuedSecret,
)
from device_registry.schemas import (
    AuditPublic,
    CrossFieldError,
    DeviceCreate,
    DevicePublic,
    DeviceQuery,
    DeviceReplace,
    DeviceStatusPublic,
    DeviceStatusUpdate,
    DeviceTypeCreate,
    DeviceTypePublic,
    DeviceTypeUpdate,
    DeviceUpdate,
    DeviceWritten,
    MetricSpec,
    MqttCredentials,
    Page,
    ReplacementPublic,
    SiteCreate,
    SitePublic,
    SiteUpdate,
    TeamCreate,
    TeamPublic,
    TeamUpdate,
    check_area,
    check_position,
    check_tag_keys_not_metrics,
)
from drivers.framework import DriverFamily

SeedAction = Literal["created", "updated", "unchanged"]
LIVE_STATES = ("active", "maintenance")
LockedRow = TypeVar("LockedRow", Device, Team)
DEVICE_COLUMNS: tuple[str, ...] = tuple(c.key for c in Device.__table__.columns)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def device_snapshot(device: Device) -> dict[str, Any]:
    """A device's columns as a JSON-ready dict (for the audit log)."""
    return {
        key: _jsonable(getattr(device, key))
        for key in DEVICE_COLUMNS
        if key not in ("created_at", "updated_at")
    }


def row_snapshot(row: Any, keys: Sequence[str]) -> dict[str, Any]:
    """Some attributes of a row as a JSON-ready dict."""
    return {key: _jsonable(getattr(row, key)) for key in keys}


def device_public(device: Device, mqtt_username: str | None) -> DevicePublic:
    """The API view of a device row."""
    data = {key: getattr(device, key) for key in DEVICE_COLUMNS}
    return DevicePublic.model_validate({**data, "mqtt_username": mqtt_username})


def credentials_public(item: IssuedSecret) -> MqttCredentials:
    """The one-time view of a new secret."""
    return MqttCredentials(
        username=item.spec.username,
        client_id=item.spec.username,
        password=item.password,
        publish_prefix=item.spec.publish_prefix,
    )


def identity_spec(device: Device, device_type: DeviceType) -> IdentitySpec | None:
    """The MQTT identity a device needs, if any.

    Gateways (and agents) always speak MQTT; a device needs its own identity only when it
    speaks MQTT itself and reports directly, not through a gateway.
    """
    return _identity_spec(device.id, device.gateway_id, device_type)


def speaks_mqtt_itself(protocol: str) -> bool:
    """True for a type whose devices publish over MQTT themselves (``mqtt``, ``mqtt_gps``...).

    ``mqtt_<flavour>`` names a native-MQTT device with a payload of that flavour (the GPS
    family's trackers are ``mqtt_gps``); each needs a broker identity of its own.
    """
    return protocol == "mqtt" or protocol.startswith("mqtt_")


def _identity_spec(
    device_id: str, gateway_id: str | None, device_type: DeviceType
) -> IdentitySpec | None:
    if device_type.is_gateway:
        return IdentitySpec(device_id=device_id, kind="gateway")
    if speaks_mqtt_itself(device_type.protocol) and gateway_id is None:
        return IdentitySpec(device_id=device_id, kind="device")
    return None


_CatalogRow = TypeVar("_CatalogRow", Site, Team)
_PublicT = TypeVar("_PublicT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """What a device's new state means for its MQTT identity: revoke the old, create a new."""

    revoke: IdentitySpec | None = None
    create: IdentitySpec | None = None


def plan_identity_change(
    *,
    device_id: str,
    state: str,
    gateway_id: str | None,
    device_type: DeviceType,
    existing_kind: str | None,
    issue_credentials: bool,
) -> IdentityChange:
    """The identity work a device's (new) state, gateway and type imply.

    The one rule for every write path (single update, create, bulk import): a device keeps
    an identity only while it is live and needs one of that kind; otherwise the existing
    identity is revoked. A missing identity is created only when credentials are wanted.
    """
    spec = _identity_spec(device_id, gateway_id, device_type)
    wanted = spec is not None and state in LIVE_STATES
    revoke: IdentitySpec | None = None
    if existing_kind is not None and (spec is None or not wanted or spec.kind != existing_kind):
        revoke = IdentitySpec(device_id=device_id, kind=_kind(existing_kind))
        existing_kind = None
    create = spec if wanted and existing_kind is None and issue_credentials else None
    return IdentityChange(revoke=revoke, create=create)


@dataclass(slots=True)
class PendingIdentities:
    """Broker work to do before the commit, and what to undo if the commit fails."""

    create: list[IdentitySpec] = field(default_factory=list)
    revoke: list[IdentitySpec] = field(default_factory=list)


class RegistryService:
    """Devices, device types, sites and teams, with audit and MQTT identities."""

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

    # -- device types -------------------------------------------------------------------
    def create_type(self, data: DeviceTypeCreate, *, actor: str) -> DeviceTypePublic:
        """Register a device type; a known family's type declares only its table's metrics."""
        check_family_metrics(data.family, data.metrics, self.families)
        with self.write_transaction() as (session, _pending, _issued):
            if session.get(DeviceType, data.name) is not None:
                raise ConflictError("name", f"device type {data.name!r} already exists")
            row = self._insert_type(session, data.model_dump(mode="json"), actor=actor)
            self.bump_revision(session)
        return _type_public(row)

    def _insert_type(self, session: Session, values: dict[str, Any], *, actor: str) -> DeviceType:
        """Add a new device type row and its audit entry (created and updated now)."""
        now = utc_now()
        row = DeviceType(**values, created_at=now, updated_at=now)
        session.add(row)
        self._audit(
            session,
            actor=actor,
            action="create",
            kind="device_type",
            key=values["name"],
            before=None,
            after=values,
        )
        return row

    def update_type(self, name: str, data: DeviceTypeUpdate, *, actor: str) -> DeviceTypePublic:
        """Change a device type's interval, metrics, description or influx tag keys."""
        keys = ("expected_interval_s", "metrics", "description", "influx_tag_keys")
        with self.write_transaction() as (session, _pending, _issued):
            row = session.get(DeviceType, name)
            if row is None:
                raise NotFoundError("device type", name)
            if data.metrics is not None:
                check_family_metrics(row.family, data.metrics, self.families)
            metrics = data.metrics
            if metrics is None:
                metrics = [MetricSpec.model_validate(m) for m in row.metrics or ()]
            keys_now = data.influx_tag_keys
            try:
                check_tag_keys_not_metrics(
                    list(row.influx_tag_keys or ()) if keys_now is None else keys_now, metrics
                )
            except ValueError as err:
                raise FieldError("influx_tag_keys", str(err)) from err
            before = row_snapshot(row, keys)
            # DeviceTypeUpdate refuses null for these NOT NULL columns at validation.
            for key, value in data.model_dump(mode="json", exclude_unset=True).items():
                setattr(row, key, value)
            row.updated_at = utc_now()
            self._audit(
                session,
                actor=actor,
                action="update",
                kind="device_type",
                key=name,
                before=before,
                after=row_snapshot(row, keys),
            )
            self.bump_revision(session)
        return _type_public(row)

    def seed_types(self, *, actor: str) -> list[tuple[str, SeedAction]]:
        """Create or update the device types the driver families declare; idempotent.

        A new type is created whole. An existing one gets the family's metrics (the
        family's table is the schema); its interval, protocol and description stay as
        the operator set them. A type of that name in another family is refused.
        """
        results: list[tuple[str, SeedAction]] = []
        with self.write_transaction() as (session, _pending, _issued):
            changed = False
            for family in sorted(self.families.values(), key=lambda f: f.name):
                for spec in family.device_types:
                    wanted = declared_type(family, spec)
                    row = session.get(DeviceType, wanted.name)
                    if row is None:
                        self._insert_type(session, wanted.model_dump(mode="json"), actor=actor)
                        results.append((wanted.name, "created"))
                        changed = True
                        continue
                    if row.family != family.name:
                        raise ConflictError(
                            "name",
                            f"device type {row.name!r} is a {row.family} type; the "
                            f"{family.name} family declares a type of that name",
                        )
                    metrics = [m.model_dump(mode="json") for m in wanted.metrics]
                    if _same_metrics(row.metrics, metrics):
                        results.append((wanted.name, "unchanged"))
                        continue
                    before = row_snapshot(row, ("metrics",))
                    row.metrics = metrics
                    row.updated_at = utc_now()
                    self._audit(
                        session,
                        actor=actor,
                        action="update",
                        kind="device_type",
                        key=wanted.name,
                        before=before,
                        after=row_snapshot(row, ("metrics",)),
                    )
                    results.append((wanted.name, "updated"))
                    changed = True
            if changed:
                self.bump_revision(session)
        return results

    def list_types(self) -> list[DeviceTypePublic]:
        """Every device type."""
        with self.database.session() as session:
            return [_type_public(r) for r in session.scalars(select(DeviceType).order_by("name"))]

    def get_type(self, name: str) -> DeviceTypePublic:
        """One device type."""
        with self.database.session() as session:
            row = session.get(DeviceType, name)
            if row is None:
                raise NotFoundError("device type", name)
            return _type_public(row)

    # -- sites and teams ----------------------------------------------------------------
    def create_site(self, data: SiteCreate, *, actor: str) -> SitePublic:
        """Register a site."""
        return SitePublic.model_validate(self._create_simple(Site, "site", data, actor))

    def update_site(self, key: str, data: SiteUpdate, *, actor: str) -> SitePublic:
        """Change a site."""
        return SitePublic.model_validate(self._update_simple(Site, "site", key, data, actor))

    def create_team(self, data: TeamCreate, *, actor: str) -> TeamPublic:
        """Register a team."""
        return TeamPublic.model_validate(self._create_simple(Team, "team", data, actor))

    def update_team(self, key: str, data: TeamUpdate, *, actor: str) -> TeamPublic:
        """Change a team."""
        return TeamPublic.model_validate(self._update_simple(Team, "team", key, data, actor))

    def edit_team(
        self, key: str, edit: Callable[[TeamPublic], TeamUpdate], *, actor: str
    ) -> TeamPublic:
        """Change a team from its current value (add or remove one member) in one transaction.

        ``edit`` gets the team as stored and returns the changes; the row is locked before
        it is read (``lock_row``), so two concurrent edits cannot lose one another. An edit
        that changes nothing writes nothing.
        """
        keys = list(TeamUpdate.model_fields)
        with self.write_transaction() as (session, _pending, _issued):
            row = self.lock_row(session, Team, key)
            if row is None:
                raise NotFoundError("team", key)
            current = TeamPublic.model_validate(row, from_attributes=True)
            before = row_snapshot(row, keys)
            for name, value in edit(current).model_dump(mode="json", exclude_unset=True).items():
                setattr(row, name, value)
            after = row_snapshot(row, keys)
            if after == before:
                return current
            row.updated_at = utc_now()
            self._audit(
                session,
                actor=actor,
                action="update",
                kind="team",
                key=key,
                before=before,
                after=after,
            )
            self.bump_revision(session)
        return TeamPublic.model_validate({"id": key, **after})

    def _create_simple(
        self, model: type[Site] | type[Team], kind: str, data: SiteCreate | TeamCreate, actor: str
    ) -> dict[str, Any]:
        values = data.model_dump(mode="json")
        with self.write_transaction() as (session, _pending, _issued):
            if session.get(model, data.id) is not None:
                raise ConflictError("id", f"{kind} {data.id!r} already exists")
            now = utc_now()
            session.add(model(**values, created_at=now, updated_at=now))
            self._audit(
                session,
                actor=actor,
                action="create",
                kind=kind,
                key=data.id,
                before=None,
                after=values,
            )
            self.bump_revision(session)
        return values

    def _update_simple(
        self,
        model: type[Site] | type[Team],
        kind: str,
        key: str,
        data: SiteUpdate | TeamUpdate,
        actor: str,
    ) -> dict[str, Any]:
        keys = [k for k in type(data).model_fields if k != "id"]
        with self.write_transaction() as (session, _pending, _issued):
            row = session.get(model, key)
            if row is None:
                raise NotFoundError(kind, key)
            before = row_snapshot(row, keys)
            # SiteUpdate/TeamUpdate refuse null for NOT NULL columns at validation.
            changes = data.model_dump(mode="json", exclude_unset=True)
            for name, value in changes.items():
                setattr(row, name, value)
            setattr(row, "updated_at", utc_now())  # noqa: B010 - Site | Team both have it
            after = row_snapshot(row, keys)
            self._audit(
                session,
                actor=actor,
                action="update",
                kind=kind,
                key=key,
                before=before,
                after=after,
            )
            self.bump_revision(session)
        return {"id": key, **after}

    def _list_catalog(self, model: type[_CatalogRow], public: type[_PublicT]) -> list[_PublicT]:
        """Every row of a catalog table (sites, teams), ordered by id."""
        with self.database.session() as session:
            return [
                public.model_validate(r, from_attributes=True)
                for r in session.scalars(select(model).order_by(model.id))
            ]

    def _get_catalog(
        self, model: type[_CatalogRow], public: type[_PublicT], kind: str, key: str
    ) -> _PublicT:
        """One row of a catalog table, or NotFoundError naming its kind."""
        with self.database.session() as session:
            row = session.get(model, key)
            if row is None:
                raise NotFoundError(kind, key)
            return public.model_validate(row, from_attributes=True)

    def list_sites(self) -> list[SitePublic]:
        """Every site."""
        return self._list_catalog(Site, SitePublic)

    def get_site(self, key: str) -> SitePublic:
        """One site."""
        return self._get_catalog(Site, SitePublic, "site", key)

    def list_teams(self) -> list[TeamPublic]:
        """Every team."""
        return self._list_catalog(Team, TeamPublic)

    def get_team(self, key: str) -> TeamPublic:
        """One team."""
        return self._get_catalog(Team, TeamPublic, "team", key)

    # -- devices: checks ----------------------------------------------------------------
    @staticmethod
    def check_references(session: Session, device: Device) -> DeviceType:
        """Check every reference of a device row; raise FieldError naming the field."""
        # Without this, the lookups below would flush the unchecked row first and turn a
        # bad reference into a foreign-key error that names no field.
        with session.no_autoflush:
            return RegistryService._check_references(session, device)

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
            RegistryService._check_no_cycle(session, device.id, name, target)
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
                pending.revoke.append(IdentitySpec(device_id=device_id, kind=_kind(existing.kind)))
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
                IdentitySpec(device_id=device_id, kind=_kind(existing.kind))
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
                    IdentitySpec(device_id=device_id, kind=_kind(existing.kind))
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

    def set_status(self, reports: Sequence[DeviceStatusUpdate]) -> int:
        """Store status reports (from the hub); unknown devices are refused by name."""
        with self.database.session() as session:
            ids = [r.device_id for r in reports]
            known = set(session.scalars(select(Device.id).where(Device.id.in_(ids))))
            for index, report in enumerate(reports):
                if report.device_id not in known:
                    raise FieldError(f"[{index}].device_id", f"unknown device {report.device_id!r}")
            now = utc_now()
            for report in reports:
                session.merge(
                    DeviceStatus(
                        device_id=report.device_id,
                        online=report.online,
                        reason=report.reason,
                        last_seen=report.last_seen,
                        last_readings=report.last_readings,
                        updated_at=now,
                    )
                )
        return len(reports)

    # -- devices: reads -----------------------------------------------------------------
    def get_device(self, device_id: str) -> DevicePublic:
        """One device."""
        with self.database.session() as session:
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError("device", device_id)
            return device_public(device, self._username(session, device_id))

    def get_status(self, device_id: str) -> DeviceStatusPublic:
        """Last known status and readings of a device."""
        with self.database.session() as session:
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError("device", device_id)
            device_type = session.get(DeviceType, device.device_type)
            status = session.get(DeviceStatus, device_id)
            return DeviceStatusPublic(
                device_id=device_id,
                online=status.online if status else None,
                reason=status.reason if status else "no status reported yet",
                last_seen=status.last_seen if status else None,
                last_readings=dict(status.last_readings) if status else {},
                expected_interval_s=device_type.expected_interval_s if device_type else 0.0,
            )

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


def _kind(value: str) -> Any:
    return "gateway" if value == "gateway" else "device"


def device_filters(stmt: Select[Any], query: DeviceQuery) -> Select[Any]:
    """Apply a DeviceQuery's filters (not its paging) to a select over devices."""
    exact = {
        "family": Device.family,
        "device_type": Device.device_type,
        "state": Device.state,
        "team_id": Device.team_id,
        "site_id": Device.site_id,
        "gateway_id": Device.gateway_id,
        "owner_kind": Device.owner_kind,
        "kota": Device.kota,
        "kecamatan": Device.kecamatan,
        "kelurahan": Device.kelurahan,
        "rw": Device.rw,
        "rt": Device.rt,
        "serial": Device.serial,
    }
    for name, column in exact.items():
        value = getattr(query, name)
        if value is not None:
            stmt = stmt.where(column == value)
    if query.q:
        pattern = "%" + query.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            or_(
                Device.id.ilike(pattern, escape="\\"),
                Device.serial.ilike(pattern, escape="\\"),
                Device.model.ilike(pattern, escape="\\"),
                Device.vendor.ilike(pattern, escape="\\"),
            )
        )
    if query.online is not None:
        online_ids = select(DeviceStatus.device_id).where(DeviceStatus.online.is_(True))
        stmt = stmt.where(
            Device.id.in_(online_ids) if query.online else Device.id.not_in(online_ids)
        )
    return stmt


def _same_metrics(stored: list[Any] | None, wanted: list[dict[str, Any]]) -> bool:
    """Whether a stored metric list equals the wanted one (defaults filled in)."""
    try:
        current = [MetricSpec.model_validate(m).model_dump(mode="json") for m in stored or ()]
    except ValueError:
        return False
    return current == wanted


def _type_public(row: DeviceType) -> DeviceTypePublic:
    return DeviceTypePublic.model_validate(row, from_attributes=True)
