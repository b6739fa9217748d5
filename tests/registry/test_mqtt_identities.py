"""Per-device MQTT identities on the real Mosquitto: isolation, rotation, retirement."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest

from device_registry.bulk_import import import_devices, parse_csv
from device_registry.errors import FieldError
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate, DeviceUpdate, MetricSpec
from tests.conftest import MqttClientFactory, MqttTestClient
from tests.registry.conftest import seed_catalog


def publish_reason(client: MqttTestClient, topic: str) -> str:
    """Publish QoS 1 and return the PUBACK reason (MQTT v5)."""
    reasons: list[str] = []
    done = threading.Event()

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, reason: object, _p: object) -> None:
        reasons.append(str(reason))
        done.set()

    client.client.on_publish = on_publish
    client.client.publish(topic, b'{"metrics": {"level_m": 1.0}}', qos=1)
    assert done.wait(10), "no PUBACK"
    return reasons[0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_device_cannot_publish_as_another(
    broker_service: RegistryService, mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    seed_catalog(broker_service)
    a = broker_service.create_device(
        DeviceCreate(id=f"{unique_id}-a", device_type="flood-gauge", state="active"), actor="t"
    )
    b = broker_service.create_device(
        DeviceCreate(id=f"{unique_id}-b", device_type="flood-gauge", state="active"), actor="t"
    )
    assert a.credentials is not None
    assert b.credentials is not None
    assert a.device.mqtt_username == f"{unique_id}-a"
    watcher = mqtt_client()
    # Only this test's devices: other tests share the broker and publish under kota/v1/dev/.
    for tree in (f"kota/v1/dev/{unique_id}-a/#", f"kota/v1/dev/{unique_id}-b/#"):
        watcher.subscribe(tree)
    watcher.subscribe(f"kota/v1/gw/{unique_id}-a/#")
    device_a = mqtt_client(
        a.credentials.username, a.credentials.password, client_id=f"{unique_id}-a"
    )
    own = f"kota/v1/dev/{unique_id}-a/telemetry"
    other = f"kota/v1/dev/{unique_id}-b/telemetry"
    assert publish_reason(device_a, own) == "Success"
    assert publish_reason(device_a, other) == "Not authorized"
    assert publish_reason(device_a, f"kota/v1/gw/{unique_id}-a/dev/x/telemetry") == "Not authorized"
    messages = watcher.wait_for(1)
    watcher.wait_for(2, timeout_s=1.0)
    assert [m.topic for m in watcher.messages] == [own]
    # Subscribing to another device's commands is refused.
    with pytest.raises(PermissionError):
        device_a.subscribe(f"kota/v1/dev/{unique_id}-b/cmd/#")
    device_a.subscribe(f"kota/v1/dev/{unique_id}-a/cmd/#")
    assert messages


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_gateway_cannot_publish_under_another_gateway(
    broker_service: RegistryService, mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    seed_catalog(broker_service)
    gw1 = broker_service.create_device(
        DeviceCreate(id=f"{unique_id}-gw1", device_type="agent", state="active"), actor="t"
    )
    broker_service.create_device(
        DeviceCreate(id=f"{unique_id}-gw2", device_type="agent", state="active"), actor="t"
    )
    assert gw1.credentials is not None
    assert gw1.credentials.publish_prefix == f"kota/v1/gw/{unique_id}-gw1/"
    # A camera behind the gateway gets no identity of its own.
    cam = broker_service.create_device(
        DeviceCreate(
            id=f"{unique_id}-cam",
            device_type="cctv-dome",
            gateway_id=f"{unique_id}-gw1",
            state="active",
        ),
        actor="t",
    )
    assert cam.credentials is None
    watcher = mqtt_client()
    # Only this test's topics: other tests leave retained messages elsewhere under kota/v1.
    for own_topic in (
        f"kota/v1/gw/{unique_id}-gw1/#",
        f"kota/v1/gw/{unique_id}-gw2/#",
        f"kota/v1/dev/{unique_id}-cam/#",
    ):
        watcher.subscribe(own_topic)
    client = mqtt_client(
        gw1.credentials.username, gw1.credentials.password, client_id=gw1.credentials.client_id
    )
    mine = f"kota/v1/gw/{unique_id}-gw1/dev/{unique_id}-cam/telemetry"
    assert publish_reason(client, mine) == "Success"
    assert [m.topic for m in watcher.wait_for(1)] == [mine]
    assert publish_reason(client, f"kota/v1/gw/{unique_id}-gw2/dev/x/telemetry") == "Not authorized"
    assert publish_reason(client, f"kota/v1/dev/{unique_id}-cam/telemetry") == "Not authorized"
    # A marker sent last by the admin: once it arrives, nothing refused can still be in flight.
    marker = f"kota/v1/gw/{unique_id}-gw2/dev/marker/telemetry"
    mqtt_client().publish(marker, b"{}")
    assert [m.topic for m in watcher.wait_for(2)] == [mine, marker]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rotation_and_retirement_revoke_at_once(
    broker_service: RegistryService, mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    seed_catalog(broker_service)
    device_id = f"{unique_id}-g"
    first = broker_service.create_device(
        DeviceCreate(id=device_id, device_type="flood-gauge", state="active"), actor="t"
    )
    assert first.credentials is not None
    live = mqtt_client(device_id, first.credentials.password, client_id=device_id)
    dropped = threading.Event()
    live.client.on_disconnect = lambda *_args: dropped.set()
    rotated = broker_service.rotate_credentials(device_id, actor="t")
    assert rotated.credentials is not None
    assert rotated.credentials.password != first.credentials.password
    assert dropped.wait(10), "the old session was not dropped on rotation"
    live.client.loop_stop()
    stale = mqtt_client(device_id, first.credentials.password, client_id=device_id, connect=False)
    assert stale.connect() == "Not authorized"
    fresh = mqtt_client(device_id, rotated.credentials.password, client_id=device_id)
    assert fresh.connect_reason == "Success"
    # Someone else cannot take the device's session with its password.
    thief = mqtt_client(device_id, rotated.credentials.password, client_id="thief", connect=False)
    assert thief.connect() == "Not authorized"
    gone = threading.Event()
    fresh.client.on_disconnect = lambda *_args: gone.set()
    broker_service.retire_device(device_id, actor="t")
    assert gone.wait(10), "the retired device stayed connected"
    fresh.client.loop_stop()
    retired = mqtt_client(
        device_id, rotated.credentials.password, client_id=device_id, connect=False
    )
    assert retired.connect() == "Not authorized"
    assert broker_service.get_device(device_id).mqtt_username is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_planned_device_gets_identity_on_activation(
    broker_service: RegistryService, mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    seed_catalog(broker_service)
    device_id = f"{unique_id}-p"
    planned = broker_service.create_device(
        DeviceCreate(id=device_id, device_type="flood-gauge"), actor="t"
    )
    assert planned.credentials is None
    activated = broker_service.update_device(device_id, DeviceUpdate(state="active"), actor="t")
    assert activated.credentials is not None
    client = mqtt_client(device_id, activated.credentials.password, client_id=device_id)
    assert client.connect_reason == "Success"
    # Moving the gauge behind a gateway removes its own identity.
    broker_service.create_device(
        DeviceCreate(id=f"{unique_id}-gw", device_type="agent", state="active"), actor="t"
    )
    moved = broker_service.update_device(
        device_id, DeviceUpdate(gateway_id=f"{unique_id}-gw"), actor="t"
    )
    assert moved.device.mqtt_username is None
    with pytest.raises(FieldError):
        broker_service.update_device(device_id, DeviceUpdate(gateway_id=device_id), actor="t")


def test_import_revokes_identities_like_a_single_update(
    broker_service: RegistryService, mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    seed_catalog(broker_service)
    gauge, moved, gateway, kept = (f"{unique_id}-{n}" for n in ("a", "b", "gw", "gw2"))
    first = import_devices(
        broker_service,
        parse_csv(
            "id,device_type,state\n"
            f"{gauge},flood-gauge,active\n{moved},flood-gauge,active\n"
            f"{gateway},agent,active\n{kept},agent,active\n"
        ),
        actor="t",
    )
    assert (first.created, first.errors) == (4, [])
    secret = {c.username: c.password for c in first.credentials}
    assert set(secret) == {gauge, moved, gateway, kept}
    live = mqtt_client(gauge, secret[gauge], client_id=gauge)
    dropped = threading.Event()
    live.client.on_disconnect = lambda *_args: dropped.set()
    # The gauge goes back to planned, the other gauge moves behind a gateway, a gateway
    # goes back to planned: all three lose their broker identity, as on a single update.
    change = parse_csv(
        f"id,state,gateway_id\n{gauge},planned,\n{moved},active,{kept}\n{gateway},planned,\n"
    )
    dry = import_devices(broker_service, change, actor="t", dry_run=True)
    assert (dry.updated, dry.errors, dry.applied) == (3, [], False)
    assert broker_service.get_device(moved).mqtt_username == moved
    assert not dropped.is_set()
    report = import_devices(broker_service, change, actor="t")
    assert (report.updated, report.errors, report.credentials) == (3, [], [])
    assert dropped.wait(10), "the planned gauge stayed connected"
    live.client.loop_stop()
    for device_id in (gauge, moved, gateway):
        stale = mqtt_client(device_id, secret[device_id], client_id=device_id, connect=False)
        assert stale.connect() == "Not authorized", device_id
        assert broker_service.get_device(device_id).mqtt_username is None
    assert mqtt_client(kept, secret[kept], client_id=kept).connect_reason == "Success"
    # Back into service by import: a new identity, the old secret still refused.
    again = import_devices(broker_service, parse_csv(f"id,state\n{gauge},active\n"), actor="t")
    assert [c.username for c in again.credentials] == [gauge]
    # Retiring is the retire command's job (it checks dependants): an import row is refused.
    refused = import_devices(broker_service, parse_csv(f"id,state\n{gauge},retired\n"), actor="t")
    assert [e.field for e in refused.errors] == ["state"]
    assert "retire command" in refused.errors[0].message
    assert broker_service.get_device(gauge).mqtt_username == gauge
    fresh = mqtt_client(gauge, again.credentials[0].password, client_id=gauge)
    assert fresh.connect_reason == "Success"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_gps_tracker_keeps_its_own_identity_through_an_update(
    broker_service: RegistryService, mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    """``mqtt_gps`` speaks MQTT itself, like ``mqtt``: an update must not revoke its login."""
    broker_service.create_type(
        DeviceTypeCreate(
            name=f"{unique_id}-tracker",
            family="gps",
            protocol="mqtt_gps",
            expected_interval_s=30,
            metrics=[MetricSpec(name="lat", unit="deg"), MetricSpec(name="lon", unit="deg")],
        ),
        actor="t",
    )
    bus = f"{unique_id}-bus"
    created = broker_service.create_device(
        DeviceCreate(id=bus, device_type=f"{unique_id}-tracker", state="active"), actor="t"
    )
    assert created.credentials is not None
    updated = broker_service.update_device(bus, DeviceUpdate(tags={"route": "K1"}), actor="t")
    assert updated.device.mqtt_username == bus
    client = mqtt_client(bus, created.credentials.password, client_id=bus)
    assert client.connect_reason == "Success"
    # Accepted (MQTT 5 says "No matching subscribers" when nobody listens), not refused.
    assert publish_reason(client, f"kota/v1/dev/{bus}/telemetry") in {
        "Success",
        "No matching subscribers",
    }
