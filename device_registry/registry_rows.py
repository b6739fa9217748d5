"""Device rows as the API shows them and the audit log stores them, and a query as filters."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, or_, select

from device_registry.models import (
    Device,
    DeviceStatus,
)
from device_registry.schemas import (
    DevicePublic,
    DeviceQuery,
)

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
