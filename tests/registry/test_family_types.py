"""Device types seeded from the driver families' metric tables, and held to them.

The registry's types are the hub's schema; a family's metric table is what its drivers
send. ``seed_types`` (``kotahub registry types seed``) creates the types the families
declare and brings their metrics back in line; a type of a known family may declare only
that family's metrics, with the table's kind.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from device_registry.database import RegistryDatabase
from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.errors import ConflictError, FieldError
from device_registry.models import DeviceType
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate, DeviceTypeUpdate, MetricSpec
from drivers.contract import MetricKind
from drivers.framework import discover_families


def _declared() -> dict[str, tuple[str, dict[str, MetricKind]]]:
    """Type name -> (family, metric schema) as the driver families declare them."""
    out = {}
    for family in discover_families().values():
        for spec in family.device_types:
            table = {m.key: m.kind for m in family.type_table(spec)}
            out[spec.name] = (family.measurement(spec), {k: table[k] for k in spec.metrics})
    return out


def test_seed_creates_every_declared_type_and_is_idempotent(
    registry_db: RegistryDatabase,
) -> None:
    service = RegistryService(registry_db)
    first = dict(service.seed_types(actor="test"))
    declared = _declared()
    assert first == dict.fromkeys(declared, "created")
    for name, (family, schema) in declared.items():
        found = service.get_type(name)
        assert found.family == family
        assert {m.name: m.kind for m in found.metrics} == schema
    gauge = service.get_type("vegapuls_c21")
    assert [(m.name, m.unit) for m in gauge.metrics] == [
        ("level_m", "m"),
        ("sensor_status", ""),
        ("signal_quality_db", "dB"),
    ]
    revision = service.revision()
    assert dict(service.seed_types(actor="test")) == dict.fromkeys(declared, "unchanged")
    assert service.revision() == revision  # nothing changed: the hub reloads nothing


def test_seed_brings_drifted_metrics_back_and_keeps_the_operators_interval(
    registry_db: RegistryDatabase,
) -> None:
    service = RegistryService(registry_db)
    service.seed_types(actor="test")
    service.update_type("pump_station_plc", DeviceTypeUpdate(expected_interval_s=30), actor="ops")
    # A type edited behind the registry's back (or seeded by an older release).
    with registry_db.session() as session:
        session.execute(
            update(DeviceType)
            .where(DeviceType.name == "pump_station_plc")
            .values(metrics=[{"name": "pump_on", "unit": "", "kind": "number"}])
        )
    results = dict(service.seed_types(actor="test"))
    assert results["pump_station_plc"] == "updated"
    assert results["vegapuls_c21"] == "unchanged"
    plc = service.get_type("pump_station_plc")
    assert plc.expected_interval_s == 30
    assert {m.name: m.kind for m in plc.metrics} == _declared()["pump_station_plc"][1]


def test_seed_refuses_a_same_named_type_of_another_family(registry_db: RegistryDatabase) -> None:
    service = RegistryService(registry_db)
    service.create_type(
        DeviceTypeCreate(
            name="gps_tracker", family="cctv", protocol="onvif", expected_interval_s=60
        ),
        actor="test",
    )
    with pytest.raises(ConflictError, match="gps_tracker"):
        service.seed_types(actor="test")


def test_a_known_familys_type_declares_only_its_tables_metrics(
    registry_db: RegistryDatabase,
) -> None:
    service = RegistryService(registry_db)

    def flood_type(name: str, *metrics: MetricSpec) -> DeviceTypeCreate:
        return DeviceTypeCreate(
            name=name,
            family="flood",
            protocol="mqtt",
            expected_interval_s=300,
            metrics=list(metrics),
        )

    with pytest.raises(FieldError) as unknown:
        service.create_type(
            flood_type("radar", MetricSpec(name="level_m"), MetricSpec(name="flow_m3s")),
            actor="test",
        )
    assert unknown.value.field == "metrics.1.name"
    assert "'flow_m3s' is not in the flood family's metric table" in unknown.value.message
    with pytest.raises(FieldError) as kind:
        service.create_type(flood_type("plc", MetricSpec(name="pumps_running")), actor="test")
    assert kind.value.field == "metrics.0.kind"
    assert "pumps_running is integer in the flood family's metric table" in kind.value.message
    # The table's metrics with the table's kinds are fine, under any type name.
    service.create_type(flood_type("radar", MetricSpec(name="level_m", unit="m")), actor="test")
    with pytest.raises(FieldError):
        service.update_type(
            "radar", DeviceTypeUpdate(metrics=[MetricSpec(name="flow_m3s")]), actor="test"
        )
    # A family no driver knows (parking meters) is not checked: there is no table to drift from.
    service.create_type(
        DeviceTypeCreate(
            name="meter",
            family="parking_meter",
            protocol="mqtt",
            expected_interval_s=60,
            metrics=[MetricSpec(name="coins", kind="integer")],
        ),
        actor="test",
    )


def test_database_directory_gives_each_device_its_types_schema(
    registry_db: RegistryDatabase,
) -> None:
    service = RegistryService(registry_db)
    service.seed_types(actor="test")
    service.create_device(
        DeviceCreate(id="plc-1", device_type="pump_station_plc", state="active"), actor="test"
    )
    service.create_device(
        DeviceCreate(id="plc-2", device_type="pump_station_plc", state="active"), actor="test"
    )
    directory = DatabaseDeviceDirectory(registry_db)
    plc = directory.get("plc-1")
    assert plc is not None
    assert dict(plc.metrics) == _declared()["pump_station_plc"][1]
    other = directory.get("plc-2")
    assert other is not None
    assert other.metrics is plc.metrics  # one mapping per type, shared by its devices
    service.update_type(
        "pump_station_plc",
        DeviceTypeUpdate(metrics=[MetricSpec(name="pump_on", kind="boolean")]),
        actor="test",
    )
    assert directory.refresh()
    changed = directory.get("plc-1")
    assert changed is not None
    assert dict(changed.metrics) == {"pump_on": "boolean"}
