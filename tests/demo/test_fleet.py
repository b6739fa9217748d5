"""The demo fleet: file validation, one-transaction and idempotent registration, identities."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from device_registry.database import RegistryDatabase, open_database
from device_registry.errors import RegistryError
from device_registry.family_types import driver_families
from device_registry.identity_planning import identity_spec
from device_registry.models import Device, DeviceType, MqttIdentity
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService, speaks_mqtt_itself
from drivers.contract import device_topic
from drivers.flood.device_types import published_metrics
from drivers.simulation import FaultBoard, SimClock, SimulatorContext
from hub.demo.fleet import (
    DEFAULT_FLEET_FILE,
    read_secrets,
    register_fleet,
    reports_without_gateway,
    secrets_path,
)
from hub.demo.fleet_city import sample_document
from hub.demo.fleet_file import FleetFileError, load_fleet_file, parse_fleet
from hub.registry_thresholds import STAGES
from tests.conftest import MqttClientFactory, RunningStack
from tests.demo.helpers import tugu_fleet

KECAMATAN = {
    "Semarang Tengah", "Semarang Utara", "Semarang Timur", "Semarang Selatan", "Semarang Barat",
    "Gayamsari", "Candisari", "Gajahmungkur", "Genuk", "Pedurungan", "Tembalang", "Banyumanik",
    "Gunungpati", "Mijen", "Ngaliyan", "Tugu",
}  # fmt: skip


@pytest.fixture
def database(tmp_path: Path) -> Iterator[RegistryDatabase]:
    db = open_database(f"sqlite:///{tmp_path}/registry.sqlite3")
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def service(database: RegistryDatabase) -> RegistryService:
    svc = RegistryService(database, None)
    svc.seed_types(actor="test")
    return svc


def count_devices(database: RegistryDatabase) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(Device)) or 0)


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_the_committed_file_is_the_generator_output_and_covers_the_city() -> None:
    assert json.loads(DEFAULT_FLEET_FILE.read_text(encoding="utf-8")) == sample_document()
    doc = load_fleet_file(DEFAULT_FLEET_FILE)
    assert {a.kecamatan for a in doc.areas} == KECAMATAN
    assert len({a.gateway.id for a in doc.areas}) == 16
    assert 200 <= len(doc.devices) <= 600
    assert {d.family for d in doc.devices} == {"flood", "gps", "ble", "cctv", "wifi", "atcs"}


def test_registration_is_idempotent_and_keeps_the_file_s_areas(
    service: RegistryService, database: RegistryDatabase, tmp_path: Path
) -> None:
    first = register_fleet(service, state_dir=tmp_path)
    assert first.registered_now
    total = count_devices(database)
    assert total == len(first.devices) + 16  # plus one gateway per area
    again = register_fleet(service, state_dir=tmp_path)
    assert not again.registered_now
    assert again.registration.unchanged == total
    assert count_devices(database) == total
    assert [d.address for d in again.devices] == [d.address for d in first.devices]
    gps = [d for d in first.devices if d.family == "gps"]
    assert gps
    assert all(d.gateway_id is None for d in gps)
    assert all(
        d.gateway_id and d.gateway_id.startswith("gw-") for d in first.devices if d.family != "gps"
    )


def test_a_failure_half_way_registers_nothing(
    service: RegistryService, database: RegistryDatabase, tmp_path: Path
) -> None:
    document = sample_document()
    # A type no family declares, on the last device: found only after the rest is planned.
    document["devices"][-1]["device_type"] = "no_such_type"
    with pytest.raises(FleetFileError, match=r"devices\[\d+\] .*device_type"):
        register_fleet(service, fleet_file=write(tmp_path, document), state_dir=tmp_path)
    assert count_devices(database) == 0
    # A registry-side refusal (a retired id) half way: the transaction rolls back whole.
    good = sample_document()
    register_fleet(service, fleet_file=write(tmp_path, good), state_dir=tmp_path)
    before = count_devices(database)
    victim = good["devices"][len(good["devices"]) // 2]["id"]
    service.retire_device(victim, actor="test")
    grown = copy.deepcopy(good)
    grown["devices"].append({**good["devices"][0], "id": "smg-new-gauge-99"})
    with pytest.raises(RegistryError, match=victim):
        register_fleet(service, fleet_file=write(tmp_path, grown), state_dir=tmp_path)
    assert count_devices(database) == before


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["devices"][3].update(lat=-8.5), r"devices\[3\] \(.+\): lat:"),
        (
            lambda d: d["devices"][5].pop("kecamatan"),
            r"devices\[5\] \(.+\): kecamatan: Field required",
        ),
        (
            lambda d: d["devices"][7].update(kecamatan="Atlantis"),
            r"devices\[7\].*kecamatan.*Atlantis",
        ),
        (
            lambda d: d["devices"][8].update(id=d["devices"][2]["id"]),
            r"devices\[8\].*id.*already used",
        ),
        (lambda d: d["areas"][0].update(team="nobody"), r"areas\[0\] \(Semarang Tengah\): team"),
        (lambda d: d["devices"][1].update(colour="red"), r"devices\[1\].*colour: Extra inputs"),
        (lambda d: d.update(version=2), r"\(file\): version"),
    ],
)
def test_hand_edits_give_one_line_naming_entry_and_field(
    tmp_path: Path, edit: Any, expected: str
) -> None:
    document = sample_document()
    edit(document)
    with pytest.raises(FleetFileError, match=expected) as caught:
        load_fleet_file(write(tmp_path, document))
    assert "\n" not in str(caught.value)


def test_corrupt_files_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    path.write_bytes(b'{"version": 1, "kota": ')
    with pytest.raises(FleetFileError, match="not valid JSON at line 1"):
        load_fleet_file(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(FleetFileError, match="not UTF-8"):
        load_fleet_file(path)
    with pytest.raises(FleetFileError, match="cannot read"):
        load_fleet_file(tmp_path / "missing.json")


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
BASE = sample_document()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    section=st.sampled_from(["devices", "areas", "sites", "teams"]),
    index=st.integers(0, 5),
    key=st.sampled_from(["id", "lat", "lon", "kecamatan", "family", "name", "team", "params", "x"]),
    value=json_values,
)
def test_no_edit_crashes_the_loader(section: str, index: int, key: str, value: Any) -> None:
    document = copy.deepcopy(BASE)
    document[section][index][key] = value
    message = refusal(document)
    if message is not None:
        assert "\n" not in message
        assert message.startswith("fleet.json: ")


@given(value=json_values)
def test_any_json_document_is_refused_in_one_line(value: Any) -> None:
    message = refusal(value)
    assert message is not None  # nothing but a whole fleet is a fleet
    assert "\n" not in message


def refusal(document: Any) -> str | None:
    """The loader's one-line refusal of a document, or None when it accepts it."""
    try:
        parse_fleet(document, where="fleet.json")
    except FleetFileError as err:
        return str(err)
    return None


# -- identities on the real broker --------------------------------------------------------
@pytest.fixture
def broker_service(
    running_stack: RunningStack, database: RegistryDatabase
) -> Iterator[RegistryService]:
    client = DynamicSecurityClient(
        BrokerAdmin(
            host=running_stack.mqtt_host,
            port=running_stack.mqtt_port,
            username=running_stack.settings.mqtt.username,
            password=running_stack.mqtt_password,
        )
    )
    try:
        svc = RegistryService(database, DynsecIdentities(client))
        svc.seed_types(actor="test")
        yield svc
    finally:
        client.close()


async def test_a_vehicle_publishes_under_its_own_registry_identity(
    broker_service: RegistryService,
    database: RegistryDatabase,
    tmp_path: Path,
    unique_id: str,
    running_stack: RunningStack,
    mqtt_client: MqttClientFactory,
) -> None:
    path = write(tmp_path, tugu_fleet(unique_id))
    fleet = await asyncio.to_thread(
        register_fleet, broker_service, fleet_file=path, state_dir=tmp_path
    )
    stored = read_secrets(tmp_path)
    assert stat.S_IMODE(secrets_path(tmp_path).stat().st_mode) == 0o600
    vehicles = [d for d in fleet.devices if d.family == "gps"]
    assert vehicles
    assert all(d.mqtt_password == stored[d.device_id] for d in vehicles)
    assert fleet.gateways[0].mqtt_password == stored[fleet.gateways[0].gateway_id]
    shown = repr(fleet)  # what a log line or a traceback would print
    assert not [name for name, secret in stored.items() if secret in shown]
    with database.session() as session:
        kinds = dict(session.execute(select(MqttIdentity.device_id, MqttIdentity.kind)).all())
    assert kinds[fleet.gateways[0].gateway_id] == "gateway"
    assert all(kinds[d.device_id] == "device" for d in vehicles)
    # Again: nothing new is issued, the stored secrets stay valid.
    again = await asyncio.to_thread(
        register_fleet, broker_service, fleet_file=path, state_dir=tmp_path
    )
    assert again.registration.issued == []
    assert read_secrets(tmp_path) == stored

    from drivers.gps.simulator import GpsSimulator

    bus = vehicles[0]
    listener = mqtt_client()
    listener.subscribe(device_topic(bus.device_id, "telemetry"))
    simulator = GpsSimulator()
    ctx = SimulatorContext(
        clock=SimClock(60),
        faults=FaultBoard(),
        mqtt_host=running_stack.mqtt_host,
        mqtt_port=running_stack.mqtt_port,
        state_dir=tmp_path,
    )
    task = asyncio.create_task(simulator.run([bus], ctx))
    try:
        messages = await asyncio.to_thread(listener.wait_for, 2, 20.0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(messages) >= 2
    payload = json.loads(messages[0].payload)
    # off_route_m: the bus carries its registry tag ``route`` (drivers/gps/routes.json).
    assert set(payload["metrics"]) == {"lat", "lon", "speed_kmh", "heading", "off_route_m"}
    assert simulator.stats.by_device()[bus.device_id] >= 2


def test_a_broker_that_refuses_the_identities_leaves_nothing_registered(
    running_stack: RunningStack, database: RegistryDatabase, tmp_path: Path, unique_id: str
) -> None:
    # The real broker, reached with a wrong admin password: it refuses the registry's login
    # when the identities are made, after every row was flushed.
    client = DynamicSecurityClient(
        BrokerAdmin(
            host=running_stack.mqtt_host,
            port=running_stack.mqtt_port,
            username=running_stack.settings.mqtt.username,
            password="not-the-admin-password",
            timeout_s=5,
        )
    )
    service = RegistryService(database, DynsecIdentities(client))
    service.seed_types(actor="test")
    path = write(tmp_path, tugu_fleet(unique_id))
    try:
        with pytest.raises(RegistryError, match="refused the registry's admin login"):
            register_fleet(service, fleet_file=path, state_dir=tmp_path)
    finally:
        client.close()
    assert count_devices(database) == 0
    assert not secrets_path(tmp_path).exists()


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_in_the_file_are_refused_in_one_line(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fleet.json"
        path.write_bytes(data)
        with pytest.raises(FleetFileError) as caught:
            load_fleet_file(path)
    assert "\n" not in str(caught.value)


def water_level_gauges(devices: list[Device]) -> list[Device]:
    """The sample's flood devices that publish a water level (not rain gauges or pumps)."""
    return [
        d for d in devices if d.family == "flood" and "level_m" in published_metrics(d.device_type)
    ]


def test_every_sample_gauge_is_registered_with_four_rising_flood_stages(
    service: RegistryService, database: RegistryDatabase, tmp_path: Path
) -> None:
    register_fleet(service, state_dir=tmp_path)
    with database.session() as session:
        gauges = water_level_gauges(list(session.scalars(select(Device))))
        assert len(gauges) >= 40  # three or four a kecamatan
        for gauge in gauges:
            # The attributes the flood-stage rule and the Flood board read, in rising order.
            stages = [float(gauge.tags[name]) for name in STAGES]
            assert stages == sorted(set(stages)), f"{gauge.id}: stages {stages} do not rise"
    entries = {d.id: d for d in load_fleet_file(DEFAULT_FLEET_FILE).devices}
    for gauge in gauges:
        params = entries[gauge.id].params
        # Siaga 4 above ordinary high water (base, and the ~0.56 m spring tide at the coast).
        high = float(params["base_m"]) + (0.56 if params.get("coastal") else 0.0)
        assert float(gauge.tags["siaga4_m"]) > high, gauge.id


def test_a_device_reports_without_gateway_exactly_when_the_registry_gives_it_an_identity(
    service: RegistryService, database: RegistryDatabase, tmp_path: Path
) -> None:
    register_fleet(service, state_dir=tmp_path)
    with database.session() as session:
        types = {t.name: t for t in session.scalars(select(DeviceType))}
        devices = [
            d for d in session.scalars(select(Device)) if not types[d.device_type].is_gateway
        ]
        # What the registry decides per device: a broker identity of its own, or none.
        own_identity = {d.id: identity_spec(d, types[d.device_type]) is not None for d in devices}
    assert any(d.gateway_id is None for d in devices)  # the vehicles
    assert any(d.gateway_id is not None for d in devices)
    for device in devices:
        itself = speaks_mqtt_itself(types[device.device_type].protocol)
        assert (device.gateway_id is None) == itself, device.id
        assert own_identity[device.id] == itself, device.id


def test_the_registry_s_protocol_rule_decides_not_the_family_s_driver() -> None:
    families = driver_families()
    flood = families["flood"]  # a polled family: the old per-family rule said "gateway"
    native = dataclasses.replace(flood.device_types[0], name="mqtt_level", protocol="mqtt_level")
    changed = {**families, "flood": dataclasses.replace(flood, device_types=(native,))}
    assert reports_without_gateway("flood", "mqtt_level", changed)
    assert not reports_without_gateway("flood", flood.device_types[0].name, families)
    assert reports_without_gateway("gps", "gps_tracker", families)
    assert not reports_without_gateway("flood", "no_such_type", families)
    assert not reports_without_gateway("no_such_family", "gps_tracker", families)
