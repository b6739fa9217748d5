"""Registry tags in InfluxDB (issue 13 item 3): a device type's ``influx_tag_keys`` decide
which of a device's tags become InfluxDB tags; every other tag stays in the registry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from fastapi.testclient import TestClient

from device_registry.api_tokens import create_token
from device_registry.database import RegistryDatabase
from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.directory import (
    DeviceRecord,
    DirectoryError,
    load_device_file,
    record_from_mapping,
    save_device_file,
)
from device_registry.registry_service import RegistryService
from device_registry.schemas import (
    DeviceCreate,
    DeviceTypeCreate,
    DeviceTypeUpdate,
    MetricSpec,
)
from device_registry.web_api import create_app
from hub.settings import Settings
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, payload, wait_until
from tests.registry.conftest import seed_catalog
from tests.registry.test_cli import (  # noqa: F401 - fixtures used by name
    Cli,
    build_the_command_once,
    cli,
)


def gauge_type(**extra: object) -> DeviceTypeCreate:
    """A flood gauge type that promotes ``river`` (unless told otherwise)."""
    fields: dict[str, object] = {
        "name": "river-gauge",
        "family": "flood",
        "protocol": "mqtt",
        "expected_interval_s": 300,
        "metrics": [MetricSpec(name="level_m", unit="m")],
        "influx_tag_keys": ["river"],
        **extra,
    }
    return DeviceTypeCreate.model_validate(fields)


def test_influx_tags_take_only_the_allowed_keys() -> None:
    record = DeviceRecord(
        device_id="g-1",
        family="flood",
        device_type="river-gauge",
        tags=MappingProxyType(
            {"river": "Garang", "pole": "P-7", "site": "bkt-01", "basin": "", "kecamatan": "Tugu"}
        ),
        influx_tag_keys=("river", "basin"),
    )
    assert record.influx_tags() == {
        "device_id": "g-1",
        "family": "flood",
        "site": "bkt-01",
        "kecamatan": "Tugu",
        "river": "Garang",  # allowed; pole is not, basin is empty
    }
    plain = DeviceRecord(
        device_id="g-2", family="flood", device_type="t", tags=MappingProxyType({"river": "x"})
    )
    assert "river" not in plain.influx_tags()


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        (["site"], "reserved"),
        (["device_id"], "reserved"),
        (["River"], "must match"),
        (["river", "river"], "unique"),
        ([f"k{n}" for n in range(9)], "at most 8"),
        (["level_m"], "also metric names"),
    ],
)
def test_bad_influx_tag_keys_are_refused(keys: list[str], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        gauge_type(influx_tag_keys=keys)


def test_keys_may_be_given_comma_separated_as_the_cli_does() -> None:
    assert gauge_type(influx_tag_keys="river, basin").influx_tag_keys == ["river", "basin"]
    assert DeviceTypeUpdate(influx_tag_keys="river").influx_tag_keys == ["river"]


def test_a_device_file_carries_the_keys(tmp_path: Path) -> None:
    record = DeviceRecord(
        device_id="g-1", family="flood", device_type="t", influx_tag_keys=("river",)
    )
    path = tmp_path / "devices.json"
    save_device_file(path, [record])
    assert load_device_file(path) == [record]
    with pytest.raises(DirectoryError, match="influx_tag_keys"):
        record_from_mapping(
            {"device_id": "x", "family": "f", "device_type": "t", "influx_tag_keys": ["site"]},
            where="entry 0",
        )


def test_the_database_directory_applies_the_types_keys(
    service: RegistryService, registry_db: RegistryDatabase
) -> None:
    seed_catalog(service)
    service.create_type(gauge_type(), actor="t")
    service.create_device(
        DeviceCreate(
            id="g-1",
            device_type="river-gauge",
            kota="Semarang",
            kecamatan="Tugu",
            tags={"river": "Garang", "pole": "P-7"},
        ),
        actor="t",
    )
    service.create_device(
        DeviceCreate(id="g-2", device_type="flood-gauge", tags={"river": "Garang"}), actor="t"
    )
    directory = DatabaseDeviceDirectory(registry_db)
    first = directory.get("g-1")
    assert first is not None
    assert first.influx_tag_keys == ("river",)
    assert first.influx_tags() == {
        "device_id": "g-1",
        "family": "flood",
        "kecamatan": "Tugu",
        "river": "Garang",
    }
    other = directory.get("g-2")
    assert other is not None
    assert "river" not in other.influx_tags()  # its type does not allow the key
    # Allowing a key on a type reaches the hub's next refresh; metrics keep their checks.
    service.update_type("flood-gauge", DeviceTypeUpdate(influx_tag_keys=["river"]), actor="t")
    assert directory.refresh() is True
    other = directory.get("g-2")
    assert other is not None
    assert other.influx_tags()["river"] == "Garang"
    from device_registry.errors import FieldError

    with pytest.raises(FieldError, match="also metric names"):
        service.update_type("flood-gauge", DeviceTypeUpdate(influx_tag_keys=["rain_mm"]), actor="t")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_api_shows_and_changes_a_types_keys(service: RegistryService) -> None:
    seed_catalog(service)
    token = create_token(service.database, name="a", role="admin", actor="t").token
    admin = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(service)) as client:
        made = client.post(
            "/api/v1/device-types",
            json=gauge_type().model_dump(mode="json"),
            headers=admin,
        )
        assert made.status_code == 201, made.text
        assert made.json()["influx_tag_keys"] == ["river"]
        changed = client.patch(
            "/api/v1/device-types/river-gauge",
            json={"influx_tag_keys": ["river", "basin"]},
            headers=admin,
        )
        assert changed.json()["influx_tag_keys"] == ["river", "basin"], changed.text
        refused = client.patch(
            "/api/v1/device-types/river-gauge", json={"influx_tag_keys": ["team"]}, headers=admin
        )
        assert refused.status_code == 422
        assert refused.json()["field"] == "body.influx_tag_keys"


@pytest.fixture
def hubs(
    running_stack: RunningStack, test_settings: Settings, tmp_path: Path, unique_id: str
) -> Iterator[HubFactory]:
    """In-process hub workers on the session's broker and this test's InfluxDB database."""
    factory = HubFactory(running_stack, test_settings, tmp_path, unique_id)
    yield factory
    factory.stop_all()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_allowed_tag_reaches_influxdb_and_no_other(
    service: RegistryService,
    registry_db: RegistryDatabase,
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    """Registry -> the hub's device list -> a real hub -> InfluxDB 1.x, tags and all."""
    seed_catalog(service)
    service.create_type(gauge_type(), actor="t")
    allowed, plain = f"{unique_id}-g1", f"{unique_id}-g2"
    tags = {"river": "Garang", "pole": "P-7"}
    service.create_device(
        DeviceCreate(id=allowed, device_type="river-gauge", state="active", tags=tags),
        actor="t",
        issue_credentials=False,
    )
    service.create_device(
        DeviceCreate(id=plain, device_type="flood-gauge", state="active", tags=tags),
        actor="t",
        issue_credentials=False,
    )
    hubs.devices(*DatabaseDeviceDirectory(registry_db).all())
    hubs.start()
    publisher = mqtt_client()
    ts = time.time_ns() // 1_000_000 - 5000
    for device_id in (allowed, plain):
        publisher.publish(f"kota/v1/dev/{device_id}/telemetry", payload({"level_m": 1.5}, ts=ts))

    def rows() -> list[dict[str, object]]:
        return running_stack.influx.rows("SELECT * FROM flood", database=influx_db)

    wait_until(lambda: len(rows()) == 2, what="both flood points")
    by_device = {row["device_id"]: row for row in rows()}
    assert by_device[allowed]["river"] == "Garang"
    assert by_device[plain].get("river") is None
    keys = running_stack.influx.rows("SHOW TAG KEYS FROM flood", database=influx_db)
    tag_keys = {row["tagKey"] for row in keys}
    assert "river" in tag_keys
    assert "pole" not in tag_keys  # never allowed by any type: not a series dimension


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_sets_a_types_keys(cli: Cli) -> None:  # noqa: F811 - the fixture
    cli.run("registry", "types", "add", "river-gauge", "--family", "flood",
            "--protocol", "mqtt", "--interval", "300", "--metric", "level_m:m",
            "--influx-tag-keys", "river,basin")  # fmt: skip
    cli.run("registry", "types", "update", "river-gauge", "--influx-tag-keys", "river")
    cli.run("devices", "add", "g-1", "--type", "river-gauge", "--tag", "river=Garang",
            "--tag", "pole=P-7", "--no-credentials")  # fmt: skip
    from device_registry.database import open_database

    database = open_database(cli.database_url)
    try:
        record = DatabaseDeviceDirectory(database).get("g-1")
    finally:
        database.close()
    assert record is not None
    assert record.influx_tag_keys == ("river",)
    assert record.influx_tags()["river"] == "Garang"
    assert "pole" not in record.influx_tags()
