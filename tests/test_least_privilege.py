"""Least privilege, through the real broker's ACLs (dynamic security, as `stack up` sets it).

Each identity connects over TLS with its own password and tries what it must not do: the
hub reading everything or speaking for a device, a gateway speaking for another gateway,
the admin reading device topics. A refusal is a SUBACK code of 0x80 or more, or a
publish that reaches nobody (Mosquitto acknowledges it and drops it); each refusal is
paired with the allowed case, so that "nothing arrived" means "refused", not "broken".
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator

import pytest

from device_registry.mqtt_identities import IdentitySpec
from drivers.contract import DEADLETTER_TOPIC, SUBSCRIPTION_FILTERS, hub_probe_topic
from hub.local_stack import (
    LocalStack,
    agent_login,
    bootstrap_dynsec,
    hub_login,
    mqtt_tls_context,
)
from hub.settings import ConfigError, load_settings
from tests.broker_security import AclClient, SecureStack, secure_stack
from tests.conftest import make_settings

REFUSED = 0x80  # SUBACK reason codes from 0x80 up are failures (0x87: not authorized)
# Long enough for a QoS 1 message on loopback, many times over; a refusal shows as absence.
NOT_DELIVERED_S = 1.5
BODY = json.dumps({"metrics": {"level_m": 1.0}})
Connect = Callable[..., AclClient]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    """A broker bootstrapped the way a new install's is (admin: control topic only)."""
    with secure_stack(tmp_path_factory, "least-privilege") as stack:
        yield stack


@pytest.fixture
def connect(broker: SecureStack) -> Iterator[Connect]:
    """Factory of TLS clients logged in as a given identity; closed afterwards."""
    made: list[AclClient] = []

    def factory(username: str, password: str, client_id: str | None = None) -> AclClient:
        client = AclClient(
            broker.settings.mqtt.host,
            broker.tls_port,
            username,
            password,
            tls=mqtt_tls_context(broker.settings),
            client_id=client_id,
        )
        assert client.connect_reason == "Success", (username, client.connect_reason)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


def test_hub_reads_the_contract_topics_but_not_everything(
    broker: SecureStack, connect: Connect
) -> None:
    hub = connect("kotahub-hub", broker.hub_password)
    assert hub.subscribe("#") >= REFUSED
    assert hub.subscribe("kota/#") >= REFUSED
    assert hub.subscribe("$CONTROL/dynamic-security/#") >= REFUSED
    assert hub.subscribe("kota/v1/dev/x/cmd/#") >= REFUSED
    for topic in SUBSCRIPTION_FILTERS:
        assert hub.subscribe(topic) < REFUSED, topic
    # Shared subscriptions (scale-out) and the shared-subscription probe are allowed too.
    assert hub.subscribe(f"$share/workers/{SUBSCRIPTION_FILTERS[0]}") < REFUSED
    assert hub.subscribe(f"$share/workers/{hub_probe_topic('kotahub-hub-1')}") < REFUSED


def test_hub_cannot_publish_a_devices_telemetry(
    broker: SecureStack,
    connect: Connect,
    unique_id: str,
) -> None:
    gauge = f"{unique_id}-g"
    issued = broker.identities(IdentitySpec(device_id=gauge, kind="device"))
    watcher = connect("kotahub-hub", broker.hub_password)
    topic = f"kota/v1/dev/{gauge}/telemetry"
    assert watcher.subscribe(topic) < REFUSED
    hub = connect("kotahub-hub", broker.hub_password)
    hub.publish(topic, BODY)
    assert watcher.received(topic, NOT_DELIVERED_S) == []
    # The device itself may: the same watcher sees it.
    connect(gauge, issued[gauge].password, client_id=gauge).publish(topic, BODY)
    assert len(watcher.received(topic, 10)) == 1


def test_hub_publishes_dead_letters_and_its_probe_only(
    broker: SecureStack,
    connect: Connect,
    unique_id: str,
) -> None:
    watcher = connect("kotahub-hub", broker.hub_password)
    probe = hub_probe_topic(f"{unique_id}-hub")
    assert watcher.subscribe(probe) < REFUSED
    hub = connect("kotahub-hub", broker.hub_password)
    hub.publish(probe, b"probe")
    assert len(watcher.received(probe, 10)) == 1
    # Another hub topic than dead-letter and probe is refused (nobody can read it back,
    # so the hub's own subscription attempt shows the boundary).
    assert watcher.subscribe("kota/v1/hub/#") >= REFUSED
    assert watcher.subscribe(DEADLETTER_TOPIC) >= REFUSED


def test_gateway_cannot_publish_under_another_gateway(
    broker: SecureStack,
    connect: Connect,
    unique_id: str,
) -> None:
    mine, other = f"{unique_id}-gwa", f"{unique_id}-gwb"
    issued = broker.identities(
        IdentitySpec(device_id=mine, kind="gateway"), IdentitySpec(device_id=other, kind="gateway")
    )
    watcher = connect("kotahub-hub", broker.hub_password)
    assert watcher.subscribe("kota/v1/gw/+/dev/+/telemetry") < REFUSED
    agent = connect(mine, issued[mine].password, client_id=mine)
    foreign = f"kota/v1/gw/{other}/dev/{unique_id}-d/telemetry"
    own = f"kota/v1/gw/{mine}/dev/{unique_id}-d/telemetry"
    agent.publish(foreign, BODY)
    agent.publish(f"kota/v1/dev/{unique_id}-d/telemetry", BODY)
    agent.publish(own, BODY)
    assert len(watcher.received(own, 10)) == 1
    assert [m.topic for m in watcher.messages] == [own]
    # Nor read another gateway's traffic.
    assert agent.subscribe(f"kota/v1/gw/{other}/#") >= REFUSED
    # And a gateway identity logs in with its pinned client id only.
    intruder = AclClient(
        broker.settings.mqtt.host,
        broker.tls_port,
        mine,
        issued[mine].password,
        tls=mqtt_tls_context(broker.settings),
        client_id=f"{mine}-other",
    )
    try:
        assert intruder.connect_reason == "Not authorized"
    finally:
        intruder.close()


def test_admin_controls_identities_but_cannot_read_device_topics(
    broker: SecureStack,
    connect: Connect,
    unique_id: str,
) -> None:
    gauge = f"{unique_id}-g"
    # Dynamic-security control works (identities() logs in as the admin, over TLS).
    issued = broker.identities(IdentitySpec(device_id=gauge, kind="device"))
    admin = connect(broker.settings.mqtt.username, broker.admin_password)
    assert admin.subscribe("#") >= REFUSED
    assert admin.subscribe("kota/v1/dev/+/telemetry") >= REFUSED
    assert admin.subscribe(f"kota/v1/dev/{gauge}/#") >= REFUSED
    watcher = connect("kotahub-hub", broker.hub_password)
    topic = f"kota/v1/dev/{gauge}/telemetry"
    assert watcher.subscribe(topic) < REFUSED
    admin.publish(topic, BODY)  # nor speak for a device
    connect(gauge, issued[gauge].password, client_id=gauge).publish(topic, BODY)
    assert len(watcher.received(topic, 10)) == 1
    assert len(watcher.messages) == 1


def test_new_install_defaults_pick_the_least_privileged_identities(
    broker: SecureStack, tmp_path: object
) -> None:
    # The hub: its own identity from the state folder, whatever admin password it was handed.
    assert hub_login(broker.settings, "admin-password") == ("kotahub-hub", broker.hub_password)
    # The agent: its gateway's identity; without the password the registry issued, it
    # does not start (it never borrows the admin's).
    agent = load_settings(None, state_dir=broker.settings.state_dir, agent={"gateway_id": "gw-1"})
    with pytest.raises(ConfigError, match=r"agent.mqtt_password: not set for gateway identity"):
        agent_login(agent, "gw-1")
    agent = load_settings(
        None,
        state_dir=broker.settings.state_dir,
        agent={"gateway_id": "gw-1", "mqtt_password": "issued-once"},
    )
    assert agent_login(agent, "gw-1") == ("gw-1", "issued-once")


def test_stack_up_gives_an_older_install_the_hub_identity(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A state folder from before the hub had an identity: admin only, no [hub] credentials.
    state = tmp_path_factory.mktemp("upgrade") / ".kotahub"
    settings = make_settings(state)
    admin_password = "old-install-admin-password"
    bootstrap_dynsec(
        state / "mosquitto" / "dynamic-security.json", settings.mqtt.username, admin_password
    )
    (state / "credentials.toml").write_text(
        f'[mqtt]\nusername = "{settings.mqtt.username}"\npassword = "{admin_password}"\n'
    )
    assert hub_login(settings, admin_password) == (settings.mqtt.username, admin_password)
    stack = LocalStack(settings)
    stack.up()
    try:
        username, password = hub_login(settings, admin_password)
        assert username == "kotahub-hub"
        assert stat.S_IMODE((state / "credentials.toml").stat().st_mode) == 0o600
        hub = AclClient(settings.mqtt.host, settings.mqtt.port, username, password)
        try:
            assert hub.connect_reason == "Success"
            assert hub.subscribe(SUBSCRIPTION_FILTERS[0]) < REFUSED
            assert hub.subscribe("#") >= REFUSED
        finally:
            hub.close()
        # The next start finds it and changes nothing.
        stack.up()
        assert hub_login(settings, admin_password) == (username, password)
    finally:
        stack.down()
