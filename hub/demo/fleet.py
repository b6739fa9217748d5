"""The demo fleet: load it (sample or city scale), register it once, give simulators their devices.

``register_fleet(service, scale=, fleet_file=, state_dir=)`` validates the fleet, decides
each device's gateway (devices that speak MQTT themselves have none and get their own
broker identity; the rest report through their area's gateway), lets protocol-level
simulators assign addresses (``drivers.simulation.AddressAssigner``), and registers
everything in ONE transaction (``device_registry.fleet_registration``). Running it again
changes nothing and keeps the secrets: they live in ``<state_dir>/demo/fleet-secrets.json``
(0600) and are never printed. It returns the ``SimulatedDevice``s for the simulators and
each gateway's login for its agent.

Families with no ``drivers/<family>/simulator.py`` yet (cctv, wifi, atcs at the time of
writing) are registered with stand-in device types and simulated at the MQTT level by
``hub.demo.mqtt_stand_ins``; ``all_simulators()`` gives the real simulators plus those
stand-ins.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from device_registry.family_types import declared_type, driver_families
from device_registry.fleet_registration import FleetPlan, FleetRegistration
from device_registry.fleet_registration import register_fleet as register_plan
from device_registry.registry_service import RegistryService, speaks_mqtt_itself
from device_registry.schemas import DeviceCreate, DeviceTypeCreate, SiteCreate, TeamCreate
from drivers.framework import DriverFamily
from drivers.simulation import (
    AddressAssigner,
    ChildMapper,
    FamilySimulator,
    SimulatedDevice,
    discover_simulators,
)
from hub.demo.fleet_city import DEFAULT_SEED, city_document
from hub.demo.fleet_file import FleetDocument, FleetFileError, load_fleet_file, parse_fleet
from hub.demo.mqtt_stand_ins import (
    STAND_IN_GATEWAY_SUFFIX as STAND_IN_SUFFIX,
)
from hub.demo.mqtt_stand_ins import (
    STAND_IN_TYPES,
    stand_in_gateway,
    stand_in_simulators,
)

log = logging.getLogger(__name__)
DEFAULT_FLEET_FILE = Path(__file__).with_name("data") / "semarang.json"
SECRETS_FILE = "fleet-secrets.json"
GATEWAY_TYPE = DeviceTypeCreate(
    name="kotahub_gateway",
    family="gateway",
    protocol="mqtt",
    expected_interval_s=60,
    is_gateway=True,
    description="Kotahub agent on a gateway: polls its area's Modbus and BLE devices",
)
DEFAULT_FIRST_PORT = 15020
ACTOR = "kotahub-demo"
Scale = Literal["sample", "city"]

__all__ = ["FleetFileError", "FleetGateway", "LoadedFleet", "all_simulators", "register_fleet"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetGateway:
    """A gateway of the fleet and the broker identity its agent logs in with."""

    gateway_id: str
    kecamatan: str
    lat: float
    lon: float
    mqtt_username: str | None
    mqtt_password: str | None = field(repr=False)  # never printed


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedFleet:
    """The registered fleet: simulated devices, gateways, and what registration did."""

    devices: tuple[SimulatedDevice, ...]
    gateways: tuple[FleetGateway, ...]
    registered_now: bool
    registration: FleetRegistration


def all_simulators() -> dict[str, FamilySimulator]:
    """Every family's simulator: ``drivers/<family>/simulator.py``, else an MQTT stand-in."""
    found = discover_simulators()
    for family, simulator in stand_in_simulators().items():
        found.setdefault(family, simulator)
    return found


def load_document(scale: Scale, fleet_file: Path | None, seed: int = DEFAULT_SEED) -> FleetDocument:
    """The fleet to register: the file (default the sample) or the city generated from a seed."""
    if scale == "city":
        return parse_fleet(city_data(seed), where=f"city fleet (seed {seed})")
    return load_fleet_file(fleet_file or DEFAULT_FLEET_FILE)


def city_data(seed: int = DEFAULT_SEED, fraction: float = 1.0) -> dict[str, Any]:
    """The city's fleet document (``fraction`` of its size) with the real simulators' types.

    Written to a file, it is a fleet file (the city bench's ``--city-fraction``).
    """
    data = city_document(seed, fraction)
    _prefer_real_types(data["devices"], driver_families(), discover_simulators())
    return data


def _prefer_real_types(
    devices: list[dict[str, Any]],
    families: Mapping[str, DriverFamily],
    simulators: Mapping[str, FamilySimulator],
) -> None:
    """A family that ships ``simulator.py`` replaces its stand-in type by its first declared one.

    Stand-in children of a replaced device (an ATCS controller's detectors) become the
    family's child type, parented and mapped in their parent's config as the sample fleet
    has them, when its simulator is a ``ChildMapper``; otherwise they are dropped.
    """
    replaced: dict[str, dict[str, Any]] = {}
    for device in devices:
        family = families.get(device["family"])
        if (
            device["device_type"] in STAND_IN_TYPES
            and family is not None
            and family.device_types
            and device["family"] in simulators
        ):
            device["device_type"] = family.device_types[0].name
            replaced[device["id"]] = device
    children: dict[str, tuple[ChildMapper, list[str]]] = {}
    kept: list[dict[str, Any]] = []
    for device in devices:
        parent = replaced.get(device.get("parent") or "")
        if parent is None or device["device_type"] not in STAND_IN_TYPES:
            kept.append(device)
            continue
        simulator = simulators.get(parent["family"])
        if isinstance(simulator, ChildMapper):
            device["family"] = parent["family"]
            device["device_type"] = simulator.child_device_type
            children.setdefault(parent["id"], (simulator, []))[1].append(device["id"])
            kept.append(device)
    for parent_id, (mapper, child_ids) in children.items():
        config = replaced[parent_id].get("driver_config") or {}
        replaced[parent_id]["driver_config"] = mapper.map_children(config, child_ids)
    devices[:] = kept


def reports_without_gateway(
    family: str, device_type: str, families: Mapping[str, DriverFamily]
) -> bool:
    """Whether a device of this declared type speaks MQTT itself, so no gateway serves it.

    The registry's rule (``speaks_mqtt_itself`` on the type's protocol) decides, the same
    one that gives such a device a broker identity of its own: one source of truth.
    """
    known = families.get(family)
    if known is None:
        return False
    try:
        spec = known.device_type(device_type)
    except KeyError:
        return False  # not declared: the fleet's type check reports it in one line
    return speaks_mqtt_itself(spec.protocol)


def secrets_path(state_dir: Path) -> Path:
    """Where the simulators' and agents' broker secrets are kept (0600)."""
    return state_dir / "demo" / SECRETS_FILE


def read_secrets(state_dir: Path) -> dict[str, str]:
    """Stored secrets, username -> password; an unreadable file counts as none."""
    try:
        data = json.loads(secrets_path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}


def write_secrets(state_dir: Path, secrets: Mapping[str, str]) -> None:
    """Write the secrets file atomically, readable by its owner only."""
    path = secrets_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(dict(sorted(secrets.items())), handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def simulated_devices(
    doc: FleetDocument,
    families: Mapping[str, DriverFamily],
    simulators: Mapping[str, FamilySimulator],
    *,
    first_port: int = DEFAULT_FIRST_PORT,
) -> list[SimulatedDevice]:
    """The file's devices as simulators see them, with addresses assigned where needed."""
    gateways = {a.kecamatan: a.gateway.id for a in doc.areas}

    def gateway_of(d: Any) -> str | None:
        if d.device_type in STAND_IN_TYPES:
            return stand_in_gateway(gateways[d.kecamatan])
        if reports_without_gateway(d.family, d.device_type, families):
            return None
        return gateways[d.kecamatan]

    devices = [
        SimulatedDevice(
            device_id=d.id,
            family=d.family,
            device_type=d.device_type,
            gateway_id=gateway_of(d),
            kecamatan=d.kecamatan,
            kelurahan=d.kelurahan,
            lat=d.lat,
            lon=d.lon,
            address=d.address,
            driver_config=dict(d.driver_config),
            params=dict(d.params),
            tags=dict(d.tags),
        )
        for d in doc.devices
    ]
    if not 1024 <= first_port <= 65535:
        raise ValueError(f"first_port: {first_port} is not a port from 1024 to 65535")
    port = first_port
    by_id = {d.device_id: d for d in devices}
    for family in sorted({d.family for d in devices}):
        simulator = simulators.get(family)
        if not isinstance(simulator, AddressAssigner):
            continue
        mine = [d for d in devices if d.family == family]
        assigned = simulator.assign_addresses(mine, port)
        by_id.update(assigned)
        used = simulator.ports_used(list(assigned.values()))
        port = max(used, default=port - 1) + 1
        if port > 65536:
            raise ValueError(
                f"first_port: {first_port} leaves too few ports for the {family} devices "
                f"(they would need up to port {port - 1})"
            )
    return [by_id[d.device_id] for d in devices]


def _device_types(
    doc: FleetDocument, families: Mapping[str, DriverFamily], simulators: Mapping[str, Any]
) -> list[DeviceTypeCreate]:
    wanted = {(d.family, d.device_type) for d in doc.devices}
    out = [GATEWAY_TYPE]
    for family_name, type_name in sorted(wanted):
        family = families.get(family_name)
        if family is not None and any(s.name == type_name for s in family.device_types):
            out.append(declared_type(family, family.device_type(type_name)))
        elif type_name in STAND_IN_TYPES:
            out.append(STAND_IN_TYPES[type_name])
        else:
            index = next(i for i, d in enumerate(doc.devices) if d.device_type == type_name)
            raise FleetFileError(
                f"devices[{index}] ({doc.devices[index].id}): device_type: {type_name!r} is "
                f"neither declared by drivers/{family_name} nor a stand-in type"
            )
    return out


def _is_stand_in(device: SimulatedDevice) -> bool:
    return device.device_type in STAND_IN_TYPES and device.gateway_id is not None


def fleet_plan(
    doc: FleetDocument,
    devices: Sequence[SimulatedDevice],
    families: Mapping[str, DriverFamily],
    simulators: Mapping[str, Any],
    secrets_held: set[str],
) -> FleetPlan:
    """What the registry is asked to hold for this fleet."""
    entries = {d.id: d for d in doc.devices}
    rows = [
        DeviceCreate(
            id=a.gateway.id,
            device_type=GATEWAY_TYPE.name,
            state="active",
            latitude=a.gateway.lat,
            longitude=a.gateway.lon,
            site_id=a.gateway.site,
            kota=doc.kota,
            kecamatan=a.kecamatan,
            team_id=a.team,
        )
        for a in doc.areas
    ]
    stand_in_gateways = sorted({d.gateway_id or "" for d in devices if _is_stand_in(d)})
    areas = {a.gateway.id: a for a in doc.areas}
    for gateway_id in stand_in_gateways:
        area = areas[gateway_id.removesuffix(STAND_IN_SUFFIX)]
        rows.append(
            DeviceCreate(
                id=gateway_id,
                device_type=GATEWAY_TYPE.name,
                state="active",
                latitude=area.gateway.lat,
                longitude=area.gateway.lon,
                kota=doc.kota,
                kecamatan=area.kecamatan,
                team_id=area.team,
                tags={"role": "mqtt_stand_in"},
            )
        )
    for device in devices:
        entry = entries[device.device_id]
        area = doc.area(device.kecamatan)
        rows.append(
            DeviceCreate(
                id=device.device_id,
                device_type=device.device_type,
                state="active",
                gateway_id=device.gateway_id,
                parent_id=entry.parent,
                latitude=device.lat,
                longitude=device.lon,
                site_id=entry.site,
                kota=doc.kota,
                kecamatan=device.kecamatan,
                kelurahan=device.kelurahan,
                team_id=entry.team or area.team,
                vendor=entry.vendor,
                model=entry.model,
                protocol_address=device.address,
                tags=dict(entry.tags) or None,
                driver_config=dict(device.driver_config) or None,
            )
        )
    return FleetPlan(
        device_types=_device_types(doc, families, simulators),
        teams=[TeamCreate.model_validate(t.model_dump()) for t in doc.teams],
        sites=[
            SiteCreate(
                id=s.id,
                name=s.name,
                latitude=s.lat,
                longitude=s.lon,
                address=s.address,
                kecamatan=s.kecamatan,
                kelurahan=s.kelurahan,
            )
            for s in doc.sites
        ],
        devices=rows,
        own_identities={d.device_id for d in devices if d.gateway_id is None},
        secrets_held=secrets_held,
    )


def register_fleet(
    service: RegistryService,
    *,
    scale: Scale = "sample",
    fleet_file: Path | None = None,
    state_dir: Path,
    seed: int = DEFAULT_SEED,
    first_port: int = DEFAULT_FIRST_PORT,
) -> LoadedFleet:
    """Validate, register once (one transaction), and return devices and gateway logins.

    Raises FleetFileError (one line) for a bad file and the registry's errors (one line,
    naming the entry) for a refused registration; either way nothing is registered.
    """
    doc = load_document(scale, fleet_file, seed)
    families = driver_families()
    simulators = all_simulators()
    devices = simulated_devices(doc, families, simulators, first_port=first_port)
    stored = read_secrets(state_dir)
    plan = fleet_plan(doc, devices, families, simulators, set(stored))
    registration = register_plan(service, plan, actor=ACTOR)
    if registration.issued:
        stored.update({item.spec.username: item.password for item in registration.issued})
        write_secrets(state_dir, stored)
    log.info(
        "fleet: %d devices (%s created, %d updated, %d unchanged, %d identities issued) in %.1f s",
        len(devices),
        registration.created.get("devices", 0),
        registration.updated,
        registration.unchanged,
        len(registration.issued),
        registration.seconds,
    )
    # Native-MQTT devices log in as themselves; stand-ins as their area's stand-in gateway.
    with_logins = tuple(
        replace(d, mqtt_username=d.device_id, mqtt_password=stored.get(d.device_id))
        if d.gateway_id is None
        else replace(d, mqtt_username=d.gateway_id, mqtt_password=stored.get(d.gateway_id))
        if _is_stand_in(d)
        else d
        for d in devices
    )
    gateways = tuple(
        FleetGateway(
            gateway_id=a.gateway.id,
            kecamatan=a.kecamatan,
            lat=a.gateway.lat,
            lon=a.gateway.lon,
            mqtt_username=a.gateway.id,
            mqtt_password=stored.get(a.gateway.id),
        )
        for a in doc.areas
    )
    return LoadedFleet(
        devices=with_logins,
        gateways=gateways,
        registered_now=registration.changed_anything,
        registration=registration,
    )
