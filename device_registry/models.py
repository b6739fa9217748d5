"""The registry's tables as SQLAlchemy 2 typed models.

Schema changes go through an Alembic migration in ``migrations/versions``; the test suite
checks that the migrated schema matches these models.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utc_now() -> dt.datetime:
    """The current time, timezone-aware in UTC."""
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of the registry's tables."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class DeviceType(Base):
    """A kind of device: its family, protocol, reporting interval and metric schema."""

    __tablename__ = "device_types"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    protocol: Mapped[str] = mapped_column(String(32))
    expected_interval_s: Mapped[float] = mapped_column(Float)
    # [{"name": "level_m", "unit": "m", "kind": "number"}, ...]
    metrics: Mapped[list[Any]] = mapped_column(JSON, default=list)
    is_gateway: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    # Device tag keys the hub writes as InfluxDB tags for this type (bounded cardinality).
    influx_tag_keys: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Site(Base):
    """A place that holds devices: a pump house, an intersection, a pole, an RT post."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str] = mapped_column(Text, default="")
    kecamatan: Mapped[str | None] = mapped_column(String(100))
    kelurahan: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Team(Base):
    """A field team that owns devices and gets paged for them."""

    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # [{"name": ..., "role": ..., "phone": ..., "email": ...}]
    members: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # [{"kind": "telegram|whatsapp|sms|email|phone", "address": ...}]
    contact_channels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Device(Base):
    """One field device (or gateway) and where, whose and in which state it is."""

    __tablename__ = "devices"
    __table_args__ = (
        Index("ix_devices_area", "kota", "kecamatan", "kelurahan", "rw", "rt"),
        Index("ix_devices_kecamatan", "kecamatan"),
        Index("ix_devices_kelurahan", "kelurahan"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_type: Mapped[str] = mapped_column(ForeignKey("device_types.name"), index=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    vendor: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(100))
    serial: Mapped[str | None] = mapped_column(String(100), index=True)
    firmware_version: Mapped[str | None] = mapped_column(String(64))
    protocol_address: Mapped[str | None] = mapped_column(String(255))
    credentials_ref: Mapped[str | None] = mapped_column(String(255))
    gateway_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"), index=True)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"), index=True)
    kota: Mapped[str | None] = mapped_column(String(100))
    kecamatan: Mapped[str | None] = mapped_column(String(100))
    kelurahan: Mapped[str | None] = mapped_column(String(100))
    rw: Mapped[str | None] = mapped_column(String(8))
    rt: Mapped[str | None] = mapped_column(String(8))
    team_id: Mapped[str | None] = mapped_column(ForeignKey("teams.id"), index=True)
    owner_kind: Mapped[str] = mapped_column(String(16), default="city", index=True)
    install_date: Mapped[dt.date | None] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16), default="planned", index=True)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    driver_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class MqttIdentity(Base):
    """The MQTT identity of a device or gateway; the secret is kept only as a hash."""

    __tablename__ = "mqtt_identities"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    username: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class DeviceReplacement(Base):
    """One swap of the physical unit behind a device id (history of replacements)."""

    __tablename__ = "device_replacements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str] = mapped_column(Text, default="")
    old_unit: Mapped[dict[str, Any]] = mapped_column(JSON)
    new_unit: Mapped[dict[str, Any]] = mapped_column(JSON)


class DeviceStatus(Base):
    """Last known status of a device, pushed by the hub (the ``online`` filter reads it)."""

    __tablename__ = "device_status"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    online: Mapped[bool] = mapped_column(Boolean, index=True)
    reason: Mapped[str] = mapped_column(String(200), default="")
    last_seen: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_readings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class AuditEntry(Base):
    """Who changed what, when, with the before and after images."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_entity", "entity_kind", "entity_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(32))
    entity_kind: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class ApiToken(Base):
    """An API token; only the SHA-256 of its secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    created_by: Mapped[str] = mapped_column(String(100))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Role "gateway" only: the one gateway whose device list the token may read.
    gateway_id: Mapped[str | None] = mapped_column(String(64))
    # A person's field team (a teams.id): the technician page's alerts start filtered to it.
    team: Mapped[str | None] = mapped_column(String(64))


class RegistryRevision(Base):
    """A single-row change counter: bumped by every device write, read by the hub's cache."""

    __tablename__ = "registry_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    counter: Mapped[int] = mapped_column(BigInteger, default=0)
