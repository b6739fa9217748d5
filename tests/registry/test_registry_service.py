"""Service layer on both databases: references, audit, change counter, search."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect

from device_registry.database import RegistryDatabase
from device_registry.errors import ConflictError, FieldError, NotFoundError
from device_registry.models import Base
from device_registry.registry_service import RegistryService
from device_registry.schemas import (
    DeviceCreate,
    DevicePublic,
    DeviceQuery,
    DeviceReplace,
    DeviceStatusUpdate,
    DeviceUpdate,
    TeamMember,
    TeamPublic,
    TeamUpdate,
)
from tests.registry.conftest import seed_catalog


def camera(device_id: str, **extra: object) -> DeviceCreate:
    """A camera behind no NVR, in an RT of Kecamatan Semarang Utara."""
    fields: dict[str, object] = {
        "id": device_id,
        "device_type": "cctv-dome",
        "state": "active",
        "kota": "Semarang",
        "kecamatan": "Semarang Utara",
        "kelurahan": "Bandarharjo",
        "rw": "3",
        "rt": "5",
        "team_id": "dpu-drainage",
        "serial": f"SN-{device_id}",
        **extra,
    }
    return DeviceCreate.model_validate(fields)


def test_migrated_schema_matches_models(registry_db: RegistryDatabase) -> None:
    tables = set(inspect(registry_db.engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_create_update_retire_is_audited_and_bumps_counter(service: RegistryService) -> None:
    seed_catalog(service)
    start = service.revision()
    written = service.create_device(camera("cam-1"), actor="alice")
    assert written.device.family == "cctv"
    assert written.credentials is None  # an ONVIF camera has no MQTT identity
    service.update_device("cam-1", DeviceUpdate(firmware_version="5.7.1"), actor="bob")
    service.retire_device("cam-1", actor="carol", reason="pole knocked down")
    assert service.revision() == start + 3
    audit, _swaps = service.history("cam-1")
    assert [(a.actor, a.action) for a in audit] == [
        ("carol", "retire"),
        ("bob", "update"),
        ("alice", "create"),
    ]
    assert audit[1].before is not None
    assert audit[1].before["firmware_version"] is None
    assert audit[1].after is not None
    assert audit[1].after["firmware_version"] == "5.7.1"
    assert service.get_device("cam-1").state == "retired"
    with pytest.raises(ConflictError):
        service.update_device("cam-1", DeviceUpdate(state="active"), actor="bob")


def test_bad_references_are_refused_and_change_nothing(service: RegistryService) -> None:
    seed_catalog(service)
    before = service.revision()
    cases = {
        "device_type": camera("x1", device_type="no-such-type"),
        "site_id": camera("x2", site_id="nowhere"),
        "team_id": camera("x3", team_id="ghosts"),
        "gateway_id": camera("x4", gateway_id="missing-gw"),
        "parent_id": camera("x5", parent_id="missing-nvr"),
    }
    for field, data in cases.items():
        with pytest.raises(FieldError) as caught:
            service.create_device(data, actor="t")
        assert caught.value.field == field
    service.create_device(camera("not-a-gw"), actor="t")
    with pytest.raises(FieldError, match="not a gateway"):
        service.create_device(camera("x6", gateway_id="not-a-gw"), actor="t")
    assert service.revision() == before + 1
    assert service.list_devices(DeviceQuery()).total == 1
    with pytest.raises(ConflictError):
        service.create_device(camera("not-a-gw"), actor="t")


def test_input_models_name_the_field() -> None:
    with pytest.raises(ValidationError, match="rt is set but rw is not"):
        DeviceCreate(id="a", device_type="t", kota="S", kecamatan="K", kelurahan="L", rt="1")
    with pytest.raises(ValidationError, match="latitude"):
        DeviceCreate(id="a", device_type="t", latitude=91, longitude=0)
    with pytest.raises(ValidationError, match="id"):
        DeviceCreate(id="bad/id", device_type="t")
    with pytest.raises(ValidationError, match="reserved"):
        DeviceCreate(id="kotahub-admin", device_type="t")
    with pytest.raises(ValidationError, match="extra"):
        DeviceCreate.model_validate({"id": "a", "device_type": "t", "colour": "red"})


def test_search_filter_pagination_and_online(service: RegistryService) -> None:
    seed_catalog(service)
    for index in range(12):
        kecamatan = "Semarang Utara" if index % 2 else "Gayamsari"
        service.create_device(camera(f"cam-{index:02}", kecamatan=kecamatan), actor="t")
    service.create_device(
        DeviceCreate(id="gauge-1", device_type="flood-gauge", site_id="bkt-01"), actor="t"
    )
    page = service.list_devices(DeviceQuery(family="cctv", kecamatan="Gayamsari", limit=4))
    assert page.total == 6
    assert [d.id for d in page.items] == ["cam-00", "cam-02", "cam-04", "cam-06"]
    second = service.list_devices(DeviceQuery(family="cctv", kecamatan="Gayamsari", offset=4))
    assert [d.id for d in second.items] == ["cam-08", "cam-10"]
    assert service.list_devices(DeviceQuery(serial="SN-cam-03")).items[0].id == "cam-03"
    assert service.list_devices(DeviceQuery(q="gauge")).total == 1
    assert service.list_devices(DeviceQuery(q="%")).total == 0  # LIKE wildcards are literal
    assert service.list_devices(DeviceQuery(state="planned")).total == 1
    service.set_status(
        [
            DeviceStatusUpdate(device_id="cam-01", online=True, last_readings={"online": True}),
            DeviceStatusUpdate(device_id="cam-02", online=False, reason="no frames"),
        ]
    )
    assert [d.id for d in service.list_devices(DeviceQuery(online=True)).items] == ["cam-01"]
    assert service.list_devices(DeviceQuery(online=False)).total == 12
    status = service.get_status("cam-02")
    assert status.online is False
    assert status.reason == "no frames"
    assert status.expected_interval_s == 60
    with pytest.raises(FieldError, match="unknown device"):
        service.set_status([DeviceStatusUpdate(device_id="ghost", online=True)])


def test_replace_keeps_history_and_id(service: RegistryService) -> None:
    seed_catalog(service)
    service.create_device(camera("cam-r", vendor="Hikvision", model="DS-2CD"), actor="t")
    written = service.replace_device(
        "cam-r", DeviceReplace(serial="SN-NEW", model="DS-2CE", reason="water damage"), actor="u"
    )
    assert written.device.serial == "SN-NEW"
    assert written.device.kelurahan == "Bandarharjo"
    _audit, swaps = service.history("cam-r")
    assert swaps[0].old_unit["serial"] == "SN-cam-r"
    assert swaps[0].new_unit["model"] == "DS-2CE"
    assert swaps[0].reason == "water damage"


def test_gateway_with_children_cannot_retire(service: RegistryService) -> None:
    seed_catalog(service)
    service.create_device(DeviceCreate(id="nvr-1", device_type="nvr-4ch"), actor="t")
    service.create_device(camera("cam-c", parent_id="nvr-1"), actor="t")
    with pytest.raises(ConflictError, match="parent"):
        service.retire_device("nvr-1", actor="t")
    with pytest.raises(NotFoundError):
        service.retire_device("nvr-404", actor="t")
    service.retire_device("cam-c", actor="t")
    service.retire_device("nvr-1", actor="t")


def add_label(
    service: RegistryService, kind: str, label: str, seen: Callable[[list[str]], None]
) -> None:
    """Add a tag to cam-1 or a member to the team from its current value, as the CLI does."""
    if kind == "device tags":

        def edit_device(current: DevicePublic) -> DeviceUpdate:
            seen(sorted(current.tags))
            return DeviceUpdate(tags={**current.tags, label: "x"})

        service.edit_device("cam-1", edit_device, actor=label)
    else:

        def edit_team(current: TeamPublic) -> TeamUpdate:
            seen(sorted(m.name for m in current.members))
            return TeamUpdate(members=[*current.members, TeamMember(name=label)])

        service.edit_team("dpu-drainage", edit_team, actor=label)


@pytest.mark.parametrize("kind", ["device tags", "team members"])
def test_concurrent_edits_from_the_current_value_lose_nothing(
    service: RegistryService, kind: str
) -> None:
    seed_catalog(service)
    service.create_device(camera("cam-1"), actor="t")
    first_inside, second_inside = threading.Event(), threading.Event()
    seen: dict[str, list[str]] = {}
    failures: list[BaseException] = []

    def first_seen(labels: list[str]) -> None:
        seen["first"] = labels
        first_inside.set()
        # While the first edit holds the row, the second must not read it: if it could, it
        # would write back the value without "first" (a lost update) and set the event.
        second_inside.wait(0.5)

    def second_seen(labels: list[str]) -> None:
        seen["second"] = labels
        second_inside.set()

    def run_first() -> None:
        try:
            add_label(service, kind, "first", first_seen)
        except BaseException as err:  # reported by the assertion below
            failures.append(err)

    thread = threading.Thread(target=run_first)
    thread.start()
    assert first_inside.wait(10)
    add_label(service, kind, "second", second_seen)
    thread.join(10)
    assert failures == []
    assert seen == {"first": [], "second": ["first"]}
    if kind == "device tags":
        assert service.get_device("cam-1").tags == {"first": "x", "second": "x"}
    else:
        assert [m.name for m in service.get_team("dpu-drainage").members] == ["first", "second"]
    assert [a.actor for a in service.audit_log(limit=2)] == ["second", "first"]
