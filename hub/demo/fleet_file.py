"""The demo fleet's data file (``hub/demo/data/semarang.json``): its schema and its errors.

The file lists the city's areas (kecamatan, each with its kelurahan, its field team and
one gateway), its sites (pump houses, river gauges, bus depots) and its devices. It is
validated whole before anything is registered; a corrupt or hand-edited file gives ONE
line naming the entry and the field, e.g.
``semarang.json: devices[12] (smg-gauge-07): lat: must be inside the city (-7.2 .. -6.85)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_FILE_BYTES = 32 * 1024 * 1024
# The fleet's coordinates must lie in and around the city (a typo lands elsewhere).
LAT_RANGE = (-7.2, -6.85)
LON_RANGE = (110.2, 110.6)


class FleetFileError(ValueError):
    """The fleet file cannot be used; the message is one line naming the entry and field."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Position(_Entry):
    """A point in the city."""

    lat: float = Field(ge=LAT_RANGE[0], le=LAT_RANGE[1])
    lon: float = Field(ge=LON_RANGE[0], le=LON_RANGE[1])


class TeamEntry(_Entry):
    """A field team that owns devices and is paged for them."""

    id: str = Field(pattern=IDENTIFIER)
    name: str = Field(min_length=1, max_length=200)
    members: list[dict[str, str]] = Field(default_factory=list, max_length=50)
    contact_channels: list[dict[str, str]] = Field(default_factory=list, max_length=20)


class KelurahanEntry(Position):
    """A kelurahan (urban village) of a kecamatan."""

    name: str = Field(min_length=1, max_length=100)


class GatewayEntry(Position):
    """The area's gateway: the agent that polls its Modbus and BLE devices."""

    id: str = Field(pattern=IDENTIFIER)
    site: str | None = Field(default=None, pattern=IDENTIFIER)


class AreaEntry(Position):
    """A kecamatan with its kelurahan, its team and its gateway."""

    kecamatan: str = Field(min_length=1, max_length=100)
    coastal: bool = False
    team: str = Field(pattern=IDENTIFIER)
    gateway: GatewayEntry
    kelurahan: list[KelurahanEntry] = Field(min_length=1, max_length=100)


class SiteEntry(Position):
    """A place that holds devices."""

    id: str = Field(pattern=IDENTIFIER)
    name: str = Field(min_length=1, max_length=200)
    kecamatan: str = Field(min_length=1, max_length=100)
    kelurahan: str | None = Field(default=None, max_length=100)
    address: str = Field(default="", max_length=500)


class DeviceEntry(Position):
    """One simulated device."""

    id: str = Field(pattern=IDENTIFIER)
    family: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    device_type: str = Field(pattern=IDENTIFIER)
    kecamatan: str = Field(min_length=1, max_length=100)
    kelurahan: str | None = Field(default=None, max_length=100)
    site: str | None = Field(default=None, pattern=IDENTIFIER)
    team: str | None = Field(default=None, pattern=IDENTIFIER)
    parent: str | None = Field(default=None, pattern=IDENTIFIER)
    # A protocol address of the device itself (a BLE MAC); Modbus ports are assigned.
    address: str | None = Field(default=None, max_length=255)
    model: str | None = Field(default=None, max_length=100)
    vendor: str | None = Field(default=None, max_length=100)
    tags: dict[str, str] = Field(default_factory=dict, max_length=20)
    driver_config: dict[str, Any] = Field(default_factory=dict)
    # Simulation knobs: coastal, drift_m_per_day, sticks_at_h, dies_at_h, sleeps, route...
    params: dict[str, Any] = Field(default_factory=dict)


class FleetDocument(_Entry):
    """The whole file."""

    version: Literal[1]
    kota: str = Field(min_length=1, max_length=100)
    description: str = ""
    teams: list[TeamEntry] = Field(min_length=1)
    areas: list[AreaEntry] = Field(min_length=1)
    sites: list[SiteEntry] = Field(default_factory=list)
    devices: list[DeviceEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> FleetDocument:
        teams = {t.id for t in self.teams}
        areas = {a.kecamatan: a for a in self.areas}
        sites = {s.id for s in self.sites}
        seen: dict[str, str] = {}

        def claim(key: str, where: str) -> None:
            if key in seen:
                raise _LocatedError(where, "id", f"{key!r} is already used by {seen[key]}")
            seen[key] = where

        for i, team in enumerate(self.teams):
            if team.id in {t.id for t in self.teams[:i]}:
                raise _LocatedError(f"teams[{i}] ({team.id})", "id", "appears twice")
        for i, area in enumerate(self.areas):
            where = f"areas[{i}] ({area.kecamatan})"
            if list(areas).index(area.kecamatan) != i:
                raise _LocatedError(where, "kecamatan", "appears twice")
            if area.team not in teams:
                raise _LocatedError(where, "team", f"unknown team {area.team!r}")
            claim(area.gateway.id, where)
            if area.gateway.site is not None and area.gateway.site not in sites:
                raise _LocatedError(where, "gateway.site", f"unknown site {area.gateway.site!r}")
        for i, site in enumerate(self.sites):
            where = f"sites[{i}] ({site.id})"
            if site.id in {s.id for s in self.sites[:i]}:
                raise _LocatedError(where, "id", "appears twice")
            _check_area(where, site.kecamatan, site.kelurahan, areas)
        for i, device in enumerate(self.devices):
            where = f"devices[{i}] ({device.id})"
            claim(device.id, where)
            _check_area(where, device.kecamatan, device.kelurahan, areas)
            if device.site is not None and device.site not in sites:
                raise _LocatedError(where, "site", f"unknown site {device.site!r}")
            if device.team is not None and device.team not in teams:
                raise _LocatedError(where, "team", f"unknown team {device.team!r}")
        for i, device in enumerate(self.devices):
            if device.parent is not None and device.parent not in seen:
                raise _LocatedError(f"devices[{i}] ({device.id})", "parent", "unknown device")
        return self

    def area(self, kecamatan: str) -> AreaEntry:
        """The area entry of a kecamatan."""
        for area in self.areas:
            if area.kecamatan == kecamatan:
                return area
        raise KeyError(kecamatan)


class _LocatedError(ValueError):
    """A cross-entry problem, located at an entry and a field."""

    def __init__(self, where: str, field: str, message: str) -> None:
        super().__init__(f"{where}: {field}: {message}")


def _check_area(
    where: str, kecamatan: str, kelurahan: str | None, areas: Mapping[str, AreaEntry]
) -> None:
    area = areas.get(kecamatan)
    if area is None:
        raise _LocatedError(where, "kecamatan", f"{kecamatan!r} is not one of the file's areas")
    if kelurahan is not None and kelurahan not in {k.name for k in area.kelurahan}:
        raise _LocatedError(where, "kelurahan", f"{kelurahan!r} is not a kelurahan of {kecamatan}")


def _entry_name(data: Any, loc: tuple[int | str, ...]) -> str:
    """``devices[3] (smg-gauge-07)`` for a pydantic error location."""
    if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
        label = f"{loc[0]}[{loc[1]}]"
        try:
            entry = data[loc[0]][loc[1]]
            key = entry.get("id") or entry.get("kecamatan")
        except (KeyError, IndexError, TypeError, AttributeError):
            key = None
        return f"{label} ({key})" if isinstance(key, str) and key else label
    return str(loc[0]) if loc else "(file)"


def one_line(text: str, limit: int = 300) -> str:
    """A message on one line, shortened."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def parse_fleet(data: Any, *, where: str) -> FleetDocument:
    """Validate a decoded fleet document; FleetFileError is one line naming entry and field."""
    if not isinstance(data, dict):
        raise FleetFileError(f"{where}: must be a JSON object with version, kota, teams, areas")
    try:
        return FleetDocument.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        if first["type"] == "value_error" and isinstance(
            first.get("ctx", {}).get("error"), _LocatedError
        ):
            detail = str(first["ctx"]["error"])
        else:
            entry = _entry_name(data, loc)
            field = ".".join(str(p) for p in loc[2:]) if len(loc) > 2 else ""
            if len(loc) == 1:
                entry, field = "(file)", str(loc[0])
            detail = f"{entry}: {field or '(entry)'}: {first['msg']}"
        more = err.error_count() - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise FleetFileError(one_line(f"{where}: {detail}{suffix}")) from err


def load_fleet_file(path: Path) -> FleetDocument:
    """Read and validate a fleet file; FleetFileError says what is wrong in one line."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FleetFileError(f"{path}: {size} bytes, more than {MAX_FILE_BYTES}")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise FleetFileError(f"{path}: cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise FleetFileError(f"{path}: not UTF-8 text (byte {err.start})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise FleetFileError(
            f"{path.name}: not valid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    except RecursionError as err:
        raise FleetFileError(f"{path.name}: JSON nested too deeply") from err
    return parse_fleet(data, where=path.name)
