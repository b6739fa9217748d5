"""Register a whole fleet (types, teams, sites, gateways, devices) in ONE transaction.

The demo's sample city and the city-scale benchmark register thousands of devices at
once. Rows go in as batched inserts; MQTT identities are created through the registry's
own mechanism (``RegistryService.write_transaction``: the broker work happens between
flush and commit, a broker refusal rolls everything back, a failed commit revokes what was
issued). A failure anywhere registers nothing.

Running it again with the fleet registered changes nothing: existing types, teams and
sites are left as the operator may have edited them, devices are updated only where the
plan differs, and an identity whose secret the caller still holds keeps it. Only the
identities that need one are made: gateways, and devices that speak MQTT themselves.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update

from device_registry.errors import FieldError
from device_registry.models import AuditEntry, Device, DeviceType, MqttIdentity, Site, Team, utc_now
from device_registry.mqtt_identities import IdentityKind, IdentitySpec, IssuedSecret
from device_registry.registry_service import LIVE_STATES, RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate, SiteCreate, TeamCreate

# SQLite allows 32,766 bound parameters per statement; a device row binds about 30.
INSERT_BATCH = 500
_COMPARED: tuple[str, ...] = tuple(
    c.key for c in Device.__table__.columns if c.key not in ("created_at", "updated_at", "family")
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetPlan:
    """Everything a fleet registers; devices may reference gateways of the same plan."""

    device_types: Sequence[DeviceTypeCreate] = ()
    teams: Sequence[TeamCreate] = ()
    sites: Sequence[SiteCreate] = ()
    devices: Sequence[DeviceCreate] = ()
    # Devices (not gateways) that publish MQTT themselves and need their own identity.
    own_identities: Collection[str] = frozenset()
    # Identities whose secret the caller still holds: they are not issued again.
    secrets_held: Collection[str] = frozenset()


@dataclass(slots=True, kw_only=True)
class FleetRegistration:
    """What a registration did: counts, its time, and the secrets issued (shown once)."""

    created: dict[str, int] = field(default_factory=dict)
    updated: int = 0
    unchanged: int = 0
    issued: list[IssuedSecret] = field(default_factory=list, repr=False)  # secrets: not shown
    seconds: float = 0.0

    @property
    def changed_anything(self) -> bool:
        """Whether any row or identity was written."""
        return bool(sum(self.created.values()) or self.updated or self.issued)


def _audit(actor: str, kind: str, key: str, after: dict[str, Any]) -> dict[str, Any]:
    return {
        "at": utc_now(),
        "actor": actor,
        "action": "fleet_create",
        "entity_kind": kind,
        "entity_id": key,
        "before": None,
        "after": after,
    }


def _batches(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [rows[i : i + INSERT_BATCH] for i in range(0, len(rows), INSERT_BATCH)]


def register_fleet(service: RegistryService, plan: FleetPlan, *, actor: str) -> FleetRegistration:
    """Write the plan in one transaction; idempotent. Raises a RegistryError naming the entry."""
    started = time.perf_counter()
    result = FleetRegistration()
    now = utc_now()
    with service.write_transaction() as (session, pending, issued):
        types = {t.name: t for t in session.scalars(select(DeviceType))}
        type_rows: list[dict[str, Any]] = []
        for wanted in plan.device_types:
            stored = types.get(wanted.name)
            if stored is not None:
                if stored.family != wanted.family:
                    raise FieldError(
                        f"device_types.{wanted.name}",
                        f"is a {stored.family} type in the registry, not {wanted.family}",
                    )
                continue
            values = wanted.model_dump(mode="json")
            type_rows.append({**values, "created_at": now, "updated_at": now})
            types[wanted.name] = DeviceType(**values)
        audits = [_audit(actor, "device_type", r["name"], {"name": r["name"]}) for r in type_rows]
        if type_rows:
            session.execute(insert(DeviceType), type_rows)
        result.created["device_types"] = len(type_rows)

        team_ids = set(session.scalars(select(Team.id)))
        team_rows = [
            {**t.model_dump(mode="json"), "created_at": now, "updated_at": now}
            for t in plan.teams
            if t.id not in team_ids
        ]
        site_ids = set(session.scalars(select(Site.id)))
        site_rows = [
            {**s.model_dump(mode="json"), "created_at": now, "updated_at": now}
            for s in plan.sites
            if s.id not in site_ids
        ]
        for row in team_rows:
            audits.append(_audit(actor, "team", row["id"], {"name": row["name"]}))
        for row in site_rows:
            audits.append(_audit(actor, "site", row["id"], {"name": row["name"]}))
        for model, rows in ((Team, team_rows), (Site, site_rows)):
            for batch in _batches(rows):
                session.execute(insert(model), batch)
        result.created["teams"], result.created["sites"] = len(team_rows), len(site_rows)
        team_ids |= {t.id for t in plan.teams}
        site_ids |= {s.id for s in plan.sites}

        columns = [getattr(Device, c) for c in _COMPARED]
        existing = {
            r[0]: dict(zip(_COMPARED, r, strict=True))
            for r in session.execute(select(*columns)).all()
        }
        identities = dict(session.execute(select(MqttIdentity.device_id, MqttIdentity.kind)).all())
        planned_gateways = {d.id for d in plan.devices if types[d.device_type].is_gateway}
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for index, device in enumerate(plan.devices):
            where = f"devices.{index} ({device.id})"
            device_type = types.get(device.device_type)
            if device_type is None:
                raise FieldError(f"{where}.device_type", f"unknown {device.device_type!r}")
            for name, known in (("site_id", site_ids), ("team_id", team_ids)):
                value = getattr(device, name)
                if value is not None and value not in known:
                    raise FieldError(f"{where}.{name}", f"unknown {value!r}")
            gateway = device.gateway_id
            if gateway is not None and gateway not in planned_gateways:
                stored_gw = existing.get(gateway)
                if stored_gw is None or not types[stored_gw["device_type"]].is_gateway:
                    raise FieldError(f"{where}.gateway_id", f"{gateway!r} is not a gateway")
            record: dict[str, Any] = dict.fromkeys(_COMPARED)
            record.update(owner_kind="city", state="planned", tags={}, driver_config={})
            record.update(device.model_dump(mode="json", exclude_none=True))
            old = existing.get(device.id)
            if old is None:
                inserts.append(
                    {**record, "family": device_type.family, "created_at": now, "updated_at": now}
                )
                audits.append(
                    _audit(actor, "device", device.id, {"device_type": device.device_type})
                )
            elif old["state"] == "retired":
                raise FieldError(f"{where}.id", "is a retired device; pick another id")
            elif {k: old[k] for k in _COMPARED} == record:
                result.unchanged += 1
            else:
                updates.append({**record, "family": device_type.family, "updated_at": now})
            wants_identity = device_type.is_gateway or device.id in plan.own_identities
            if wants_identity and record["state"] in LIVE_STATES:
                kind: IdentityKind = "gateway" if device_type.is_gateway else "device"
                if identities.get(device.id) != kind or device.id not in plan.secrets_held:
                    pending.create.append(IdentitySpec(device_id=device.id, kind=kind))
        # Gateways, then parents, first: a device's foreign keys name them.
        parents = {d.parent_id for d in plan.devices if d.parent_id}
        inserts.sort(key=lambda r: (r["id"] not in planned_gateways, r["id"] not in parents))
        for batch in _batches(inserts):
            session.execute(insert(Device), batch)
        if updates:
            session.execute(update(Device), updates)
        for batch in _batches(audits):
            session.execute(insert(AuditEntry), batch)
        result.created["devices"], result.updated = len(inserts), len(updates)
        if inserts or updates or type_rows:
            service.bump_revision(session)
    result.issued = list(issued)
    if len(inserts) + len(updates) >= 500:
        service.database.analyze()
    result.seconds = time.perf_counter() - started
    return result
