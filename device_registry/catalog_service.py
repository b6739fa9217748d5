"""The registry service's device types (seeded from the driver families), sites and teams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from device_registry.errors import ConflictError, FieldError, NotFoundError
from device_registry.family_types import (
    check_family_metrics,
    declared_type,
)
from device_registry.models import (
    DeviceType,
    Site,
    Team,
    utc_now,
)
from device_registry.registry_rows import (
    row_snapshot,
)
from device_registry.schemas import (
    DeviceTypeCreate,
    DeviceTypePublic,
    DeviceTypeUpdate,
    MetricSpec,
    SiteCreate,
    SitePublic,
    SiteUpdate,
    TeamCreate,
    TeamPublic,
    TeamUpdate,
    check_tag_keys_not_metrics,
)
from device_registry.service_core import ServiceCore

SeedAction = Literal["created", "updated", "unchanged"]
_CatalogRow = TypeVar("_CatalogRow", Site, Team)
_PublicT = TypeVar("_PublicT", bound=BaseModel)


class CatalogService(ServiceCore):
    """Device types, sites and teams: what devices refer to."""

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
                    if row.family != wanted.family:
                        raise ConflictError(
                            "name",
                            f"device type {row.name!r} is a {row.family} type; the "
                            f"{family.name} family declares a {wanted.family} type of that name",
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


def _same_metrics(stored: list[Any] | None, wanted: list[dict[str, Any]]) -> bool:
    """Whether a stored metric list equals the wanted one (defaults filled in)."""
    try:
        current = [MetricSpec.model_validate(m).model_dump(mode="json") for m in stored or ()]
    except ValueError:
        return False
    return current == wanted


def _type_public(row: DeviceType) -> DeviceTypePublic:
    return DeviceTypePublic.model_validate(row, from_attributes=True)
