"""Pydantic models at the registry's edges: what the API, CLI and importer accept and return.

Create/Update/Public per resource, as in the full-stack FastAPI template. Updates are
partial: only the fields sent are changed; ``null`` clears an optional field.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from device_registry.models import Base, Device, DeviceType, Site, Team
from drivers.contract import (
    METRIC_NAME,
    METRIC_NAME_PATTERN,
    RESERVED_METRIC_NAMES,
    MetricKind,
)

DeviceStateName = Literal["planned", "active", "maintenance", "retired"]
OwnerKind = Literal["city", "corporate", "community"]
Role = Literal["admin", "technician", "viewer", "provisioner", "gateway"]
# People's roles; "gateway" is a field agent's, scoped to one gateway (TokenCreate.gateway_id).
ROLES: tuple[Role, ...] = ("admin", "technician", "viewer", "provisioner")
GATEWAY_ROLE: Role = "gateway"

# Ids become MQTT topic levels and usernames: no '/', '+', '#', spaces or leading dots.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
METRIC_PATTERN = METRIC_NAME_PATTERN
Identifier = Annotated[str, Field(pattern=ID_PATTERN, min_length=1, max_length=64)]
ShortText = Annotated[str, Field(min_length=1, max_length=100)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
AREA_LEVELS: tuple[str, ...] = ("kota", "kecamatan", "kelurahan", "rw", "rt")
# Ids the broker reserves for Kotahub's own services.
RESERVED_PREFIX = "kotahub"
# Fixed path segments under /api/v1/devices/: a device with one of these ids could never be
# read at /devices/{id} (the fixed route answers first). A test holds this to the routes.
ROUTE_DEVICE_IDS: frozenset[str] = frozenset({"export", "import", "bulk"})
# Measurements the hub writes itself; a family is a measurement name, so these are refused,
# and so is any name ending in EVENT_SUFFIX (family X's events go to ``X_event``).
RESERVED_FAMILIES: frozenset[str] = frozenset({"deadletter", "hub", "device_status", "alert"})
EVENT_SUFFIX = "_event"
# Bounds on a device's tags: every CSV export has a column per distinct key, and a type may
# make some of them InfluxDB tags (``influx_tag_keys``).
MAX_TAGS = 32
MAX_TAG_KEY_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 200
TAG_KEY_PATTERN = re.compile(r"[A-Za-z0-9_]{1,64}")
# A type may promote at most this many tag keys to InfluxDB tags (series cardinality).
MAX_INFLUX_TAG_KEYS = 8
# driver_config is free-form JSON, but deep nesting only ever comes from an attack.
MAX_CONFIG_DEPTH = 16
T = TypeVar("T")


class _Strict(BaseModel):
    """Base of input models: unknown fields are refused, strings are trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Update(_Strict):
    """Base of partial updates: an explicit ``null`` clears a field only if its column may be NULL.

    ``stored_in`` names the table the update writes; the nullability of its columns is the
    one source of truth, so a new NOT NULL column is protected without touching this code.
    """

    stored_in: ClassVar[type[Base]]

    @field_validator("*", mode="before")
    @classmethod
    def _null_only_where_nullable(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name in cls.not_clearable():
            raise ValueError(f"{info.field_name} cannot be cleared (null): it always has a value")
        return value

    @classmethod
    def not_clearable(cls) -> frozenset[str]:
        """The fields whose column is NOT NULL: sending ``null`` for them is refused."""
        columns = cls.stored_in.__table__.columns
        return frozenset(
            name for name in cls.model_fields if name in columns and not columns[name].nullable
        )


class MetricSpec(_Strict):
    """One metric a device type reports, with its unit and kind (``drivers.contract``).

    ``number`` is stored as a float, ``integer`` as an InfluxDB integer; the hub refuses a
    value of another kind, and any metric its device's type does not declare.
    """

    name: str = Field(pattern=METRIC_PATTERN)
    unit: str = Field(default="", max_length=32)
    kind: MetricKind = "number"

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_METRIC_NAMES:
            raise ValueError(f"{value!r} is reserved (an InfluxDB key or a registry tag)")
        return value


class DeviceTypeCreate(_Strict):
    """A new device type."""

    name: Identifier
    family: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    protocol: str = Field(pattern=r"^[a-z][a-z0-9_+-]{0,31}$")
    expected_interval_s: float = Field(gt=0, le=7 * 86400)
    metrics: list[MetricSpec] = Field(default_factory=list)
    is_gateway: bool = False
    description: str = Field(default="", max_length=2000)
    # Device tag keys that become InfluxDB tags on this type's points (beside the fixed
    # enrichment tags); every other device tag stays in the registry only.
    influx_tag_keys: list[str] = Field(default_factory=list)

    @field_validator("family")
    @classmethod
    def _not_a_hub_measurement(cls, value: str) -> str:
        return check_family_name(value)

    @field_validator("influx_tag_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        return split_tag_keys(value)

    @field_validator("influx_tag_keys")
    @classmethod
    def _valid_keys(cls, value: list[str]) -> list[str]:
        return check_influx_tag_keys(value)

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, value: list[MetricSpec]) -> list[MetricSpec]:
        names = [m.name for m in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate metric name(s) {duplicates}")
        return value

    @model_validator(mode="after")
    def _tags_are_not_metrics(self) -> DeviceTypeCreate:
        check_tag_keys_not_metrics(self.influx_tag_keys, self.metrics)
        return self


def check_family_name(value: str) -> str:
    """Refuse a family named like a measurement the hub writes (``hub``, ``x_event``...)."""
    if value in RESERVED_FAMILIES or value.endswith(EVENT_SUFFIX):
        raise ValueError(
            f"family {value!r} is reserved: the hub writes the measurements "
            f"{', '.join(sorted(RESERVED_FAMILIES))} and <family>{EVENT_SUFFIX} itself"
        )
    return value


def split_tag_keys(value: Any) -> Any:
    """``"river,basin"`` (a CLI option) as ``["river", "basin"]``; lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def check_influx_tag_keys(value: list[str]) -> list[str]:
    """Keys a type promotes to InfluxDB tags: few, unique, metric-like names, not reserved."""
    if len(value) > MAX_INFLUX_TAG_KEYS:
        raise ValueError(f"at most {MAX_INFLUX_TAG_KEYS} influx tag keys per type")
    if len(set(value)) != len(value):
        raise ValueError("influx tag keys must be unique")
    for key in value:
        if METRIC_NAME.fullmatch(key) is None:
            raise ValueError(f"influx tag key {key!r} must match {METRIC_NAME_PATTERN}")
        if key in RESERVED_METRIC_NAMES:
            raise ValueError(f"influx tag key {key!r} is reserved (the hub sets that tag)")
    return value


def check_tag_keys_not_metrics(keys: list[str], metrics: list[MetricSpec]) -> None:
    """A tag key equal to a field key makes InfluxQL queries ambiguous: refuse it."""
    clash = sorted(set(keys) & {m.name for m in metrics})
    if clash:
        raise ValueError(f"influx tag key(s) {clash} are also metric names of the type")


class DeviceTypeUpdate(_Update):
    """Changes to a device type."""

    stored_in = DeviceType

    expected_interval_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    metrics: list[MetricSpec] | None = None
    description: str | None = Field(default=None, max_length=2000)
    influx_tag_keys: list[str] | None = None

    @field_validator("influx_tag_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        return split_tag_keys(value)

    @field_validator("influx_tag_keys")
    @classmethod
    def _valid_keys(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_influx_tag_keys(value)


class DeviceTypePublic(BaseModel):
    """A device type as the API returns it."""

    name: str
    family: str
    protocol: str
    expected_interval_s: float
    metrics: list[MetricSpec]
    is_gateway: bool
    description: str
    influx_tag_keys: list[str] = []


class SiteCreate(_Strict):
    """A new site."""

    id: Identifier
    name: ShortText
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    address: str = Field(default="", max_length=500)
    kecamatan: str | None = Field(default=None, max_length=100)
    kelurahan: str | None = Field(default=None, max_length=100)


class SiteUpdate(_Update):
    """Changes to a site."""

    stored_in = Site

    name: ShortText | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    address: str | None = Field(default=None, max_length=500)
    kecamatan: str | None = Field(default=None, max_length=100)
    kelurahan: str | None = Field(default=None, max_length=100)


class SitePublic(BaseModel):
    """A site as the API returns it."""

    id: str
    name: str
    latitude: float | None
    longitude: float | None
    address: str
    kecamatan: str | None
    kelurahan: str | None


class TeamMember(_Strict):
    """A person in a field team."""

    name: ShortText
    role: str = Field(default="", max_length=100)
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9 ()-]{5,20}$")
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ContactChannel(_Strict):
    """Where a team is paged."""

    kind: Literal["telegram", "whatsapp", "sms", "email", "phone", "webhook"]
    address: str = Field(min_length=1, max_length=300)


class TeamCreate(_Strict):
    """A new team."""

    id: Identifier
    name: ShortText
    members: list[TeamMember] = Field(default_factory=list)
    contact_channels: list[ContactChannel] = Field(default_factory=list)


class TeamUpdate(_Update):
    """Changes to a team."""

    stored_in = Team

    name: ShortText | None = None
    members: list[TeamMember] | None = None
    contact_channels: list[ContactChannel] | None = None


class TeamPublic(BaseModel):
    """A team as the API returns it."""

    id: str
    name: str
    members: list[TeamMember]
    contact_channels: list[ContactChannel]


class _DeviceFields(_Strict):
    """Fields that a device create and a device update share."""

    vendor: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=100)
    serial: str | None = Field(default=None, max_length=100)
    firmware_version: str | None = Field(default=None, max_length=64)
    protocol_address: str | None = Field(default=None, max_length=255)
    credentials_ref: str | None = Field(default=None, max_length=255)
    gateway_id: Identifier | None = None
    parent_id: Identifier | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    site_id: Identifier | None = None
    kota: str | None = Field(default=None, max_length=100)
    kecamatan: str | None = Field(default=None, max_length=100)
    kelurahan: str | None = Field(default=None, max_length=100)
    rw: str | None = Field(default=None, pattern=r"^[0-9]{1,3}$")
    rt: str | None = Field(default=None, pattern=r"^[0-9]{1,3}$")
    team_id: Identifier | None = None
    install_date: dt.date | None = None
    tags: dict[str, str] | None = None
    driver_config: dict[str, Any] | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_tags(value)

    @field_validator("driver_config")
    @classmethod
    def _shallow(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and json_depth(value) > MAX_CONFIG_DEPTH:
            raise ValueError(f"nested deeper than {MAX_CONFIG_DEPTH} levels")
        return value


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    """A device's tags: bounded in number and size, and storable as InfluxDB 1.x tags."""
    if len(tags) > MAX_TAGS:
        raise ValueError(f"{len(tags)} tags: at most {MAX_TAGS} per device")
    for key, value in tags.items():
        if TAG_KEY_PATTERN.fullmatch(key) is None:
            raise ValueError(
                f"tag key {key[:80]!r} must be 1-{MAX_TAG_KEY_LENGTH} letters, digits or '_'"
            )
        if len(value) > MAX_TAG_VALUE_LENGTH:
            raise ValueError(f"tag {key}: at most {MAX_TAG_VALUE_LENGTH} characters")
        # InfluxDB 1.x line protocol has no escape for a newline in a tag value, and a
        # trailing backslash escapes the separator after it: neither can be stored.
        if any(ord(c) < 32 or c == "\x7f" for c in value):
            raise ValueError(f"tag {key}: no newlines or other control characters")
        if value.endswith("\\"):
            raise ValueError(f"tag {key}: a value cannot end with a backslash")
    return tags


def json_depth(value: Any) -> int:
    """How deeply a JSON value nests (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


class CrossFieldError(ValueError):
    """A check over several fields failed; ``fields`` names the ones at fault."""

    def __init__(self, fields: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.fields = fields

    @property
    def field(self) -> str:
        """The fields at fault as one comma-separated name (``rw,kelurahan``)."""
        return ",".join(self.fields)


def check_area(values: dict[str, Any]) -> None:
    """Kota > kecamatan > kelurahan > RW > RT: a level needs every level above it."""
    for upper, lower in itertools.pairwise(AREA_LEVELS):
        if values.get(lower) and not values.get(upper):
            raise CrossFieldError(
                (lower, upper), f"{lower} is set but {upper} is not (kota > kecamatan > ... > rt)"
            )


def check_position(values: dict[str, Any]) -> None:
    """Latitude and longitude come together."""
    latitude, longitude = values.get("latitude"), values.get("longitude")
    if (latitude is None) != (longitude is None):
        given, missing = (
            ("latitude", "longitude") if longitude is None else ("longitude", "latitude")
        )
        raise CrossFieldError(
            (given, missing), f"{given} is given but {missing} is not: they come together"
        )


class DeviceCreate(_DeviceFields):
    """A new device."""

    id: Identifier
    device_type: Identifier
    owner_kind: OwnerKind = "city"
    state: DeviceStateName = "planned"

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.lower().startswith(RESERVED_PREFIX):
            raise ValueError(f"ids starting with {RESERVED_PREFIX!r} are reserved")
        if value.lower() in ROUTE_DEVICE_IDS:
            raise ValueError(
                f"{value!r} is a path of the API (/devices/{value.lower()}): "
                f"ids {', '.join(sorted(ROUTE_DEVICE_IDS))} are reserved"
            )
        return value

    @field_validator("state")
    @classmethod
    def _not_retired(cls, value: str) -> str:
        if value == "retired":
            raise ValueError("retired is not set here: retire a device with its retire command")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeviceCreate:
        check_area(self.model_dump())
        check_position(self.model_dump())
        for name in ("gateway_id", "parent_id"):
            if getattr(self, name) == self.id:
                raise CrossFieldError((name,), "a device cannot be its own gateway or parent")
        return self


class DeviceUpdate(_DeviceFields, _Update):
    """Changes to a device; only the fields sent change."""

    stored_in = Device

    device_type: Identifier | None = None
    owner_kind: OwnerKind | None = None
    state: Literal["planned", "active", "maintenance"] | None = None


class DeviceReplace(_Strict):
    """The new physical unit that takes over a device id."""

    serial: str = Field(min_length=1, max_length=100)
    vendor: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=100)
    firmware_version: str | None = Field(default=None, max_length=64)
    protocol_address: str | None = Field(default=None, max_length=255)
    reason: str = Field(default="", max_length=500)


class DevicePublic(BaseModel):
    """A device as the API returns it."""

    id: str
    device_type: str
    family: str
    vendor: str | None
    model: str | None
    serial: str | None
    firmware_version: str | None
    protocol_address: str | None
    credentials_ref: str | None
    gateway_id: str | None
    parent_id: str | None
    latitude: float | None
    longitude: float | None
    site_id: str | None
    kota: str | None
    kecamatan: str | None
    kelurahan: str | None
    rw: str | None
    rt: str | None
    team_id: str | None
    owner_kind: str
    install_date: dt.date | None
    state: str
    tags: dict[str, str]
    driver_config: dict[str, Any]
    mqtt_username: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime


class MqttCredentials(BaseModel):
    """An MQTT identity's secret: returned once, never stored in clear."""

    username: str
    client_id: str
    password: str
    publish_prefix: str


class DeviceWritten(BaseModel):
    """A device after a write, with new MQTT credentials when the write created some."""

    device: DevicePublic
    credentials: MqttCredentials | None = None


class DeviceStatusUpdate(_Strict):
    """A status report for one device (from the hub)."""

    device_id: Identifier
    online: bool
    reason: str = Field(default="", max_length=200)
    last_seen: dt.datetime | None = None
    last_readings: dict[str, float | bool | str] = Field(default_factory=dict)


class DeviceStatusPublic(BaseModel):
    """Last known status and readings of a device."""

    device_id: str
    online: bool | None
    reason: str
    last_seen: dt.datetime | None
    last_readings: dict[str, Any]
    # Each metric's time when the live readings source knows it (pushed readings have none).
    last_readings_at: dict[str, dt.datetime] = Field(default_factory=dict)
    expected_interval_s: float
    # Set when the live readings source failed and ``last_readings`` are the pushed ones.
    readings_source_error: str | None = None


class ReplacementPublic(BaseModel):
    """One unit swap in a device's history."""

    at: dt.datetime
    actor: str
    reason: str
    old_unit: dict[str, Any]
    new_unit: dict[str, Any]


class AuditPublic(BaseModel):
    """One audit log entry."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    entity_kind: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class DeviceQuery(_Strict):
    """Search and filter parameters for listing devices."""

    q: str | None = Field(default=None, max_length=100)
    serial: str | None = Field(default=None, max_length=100)
    family: str | None = Field(default=None, max_length=32)
    device_type: str | None = Field(default=None, max_length=64)
    state: DeviceStateName | None = None
    team_id: str | None = Field(default=None, max_length=64)
    site_id: str | None = Field(default=None, max_length=64)
    gateway_id: str | None = Field(default=None, max_length=64)
    owner_kind: OwnerKind | None = None
    kota: str | None = Field(default=None, max_length=100)
    kecamatan: str | None = Field(default=None, max_length=100)
    kelurahan: str | None = Field(default=None, max_length=100)
    rw: str | None = Field(default=None, max_length=8)
    rt: str | None = Field(default=None, max_length=8)
    online: bool | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)


class Page(BaseModel, Generic[T]):
    """One page of a list, with the total that matched."""

    items: list[T]
    total: int
    limit: int
    offset: int


class TokenCreate(_Strict):
    """A new API token; ``expires_in_s`` makes it expire (never, when unset)."""

    name: ShortText
    role: Role
    expires_in_s: int | None = Field(default=None, gt=0, le=10 * 366 * 86400)
    # Role "gateway" only, and required there: the gateway whose devices the token reads.
    gateway_id: Identifier | None = None
    # A person's field team (a team's id); a gateway token has none.
    team: Identifier | None = None

    @model_validator(mode="after")
    def _gateway_scope(self) -> TokenCreate:
        if (self.role == GATEWAY_ROLE) != (self.gateway_id is not None):
            raise CrossFieldError(
                ("gateway_id",), "gateway_id is required with role gateway, and only there"
            )
        if self.role == GATEWAY_ROLE and self.team is not None:
            raise CrossFieldError(("team",), "a gateway token has no team")
        return self


class TokenPublic(BaseModel):
    """An API token's metadata (never its secret)."""

    id: str
    name: str
    role: str
    created_at: dt.datetime
    created_by: str
    revoked_at: dt.datetime | None
    expires_at: dt.datetime | None = None
    gateway_id: str | None = None
    team: str | None = None


class TokenCreated(TokenPublic):
    """A new token, with its secret shown this once."""

    token: str
