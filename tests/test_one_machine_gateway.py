"""A new install's defaults, through the real broker: the admin reads nothing, and `kotahub run`
gives its in-process agent the gateway's own identity (issue 12).

The stack here is started with the default settings (``stack.admin_acl`` unset, so
"control"), unlike the session stack, whose admin is given "full" to watch test traffic.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from device_registry.api_tokens import create_token
from device_registry.database import open_database
from device_registry.mqtt_identities import DynamicSecurityClient, DynsecIdentities, IdentitySpec
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate
from drivers.flood.simulated_station import SimulatedStation
from hub.agent.gateway_credential import credential_path, ensure_gateway_credential
from hub.influxql import InfluxQL
from hub.local_stack import LocalStack, agent_login, broker_admin, mqtt_connect_check, mqtt_password
from hub.settings import ConfigError, Settings, load_settings
from tests.broker_security import AclClient
from tests.conftest import free_port
from tests.test_one_machine import wait_until

REFUSED = 0x80


@pytest.fixture(scope="module")
def default_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A stack whose settings name no admin_acl: what `kotahub stack up` gives a new install."""
    state = tmp_path_factory.mktemp("defaults") / ".kotahub"
    settings = load_settings(
        None,
        state_dir=state,
        mqtt={"port": free_port(), "tls_port": free_port()},
        influx={"url": f"http://127.0.0.1:{free_port()}"},
        stack={"influx_rpc_port": free_port(), "start_timeout_s": 60},
    )
    assert settings.stack.admin_acl == "control"
    stack = LocalStack(settings)
    stack.up()
    try:
        yield settings
    finally:
        stack.down()


def admin_client(settings: Settings) -> AclClient:
    mq = settings.mqtt
    return AclClient(mq.host, mq.port, mq.username, mqtt_password(settings))


def test_the_default_admin_may_use_the_control_topic_only(default_stack: Settings) -> None:
    admin = admin_client(default_stack)
    try:
        assert admin.connect_reason == "Success"
        for topic in ("#", "kota/#", "kota/v1/dev/+/telemetry", "$SYS/#"):
            assert admin.subscribe(topic) >= REFUSED, topic
        assert admin.subscribe("$CONTROL/dynamic-security/#") < REFUSED
    finally:
        admin.close()
    # And with that alone the registry manages identities.
    client = DynamicSecurityClient(broker_admin(default_stack))
    try:
        issued = DynsecIdentities(client).create([IdentitySpec(device_id="acl-gw", kind="gateway")])
    finally:
        client.close()
    mq = default_stack.mqtt
    ok, reason = mqtt_connect_check(
        mq.host, mq.port, "acl-gw", issued[0].password, 10, client_id="acl-gw"
    )
    assert ok, reason


@pytest.fixture
def registry(default_stack: Settings, tmp_path: Path) -> Iterator[RegistryService]:
    """A registry of this test's own that makes identities on the default stack's broker."""
    database = open_database(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    client = DynamicSecurityClient(broker_admin(default_stack))
    try:
        yield RegistryService(database, DynsecIdentities(client))
    finally:
        client.close()
        database.close()


def with_gateway(settings: Settings, state: Path, gateway_id: str, **agent: object) -> Settings:
    return settings.model_copy(
        update={
            "state_dir": state,
            "agent": settings.agent.model_copy(update={"gateway_id": gateway_id, **agent}),
        }
    )


def test_the_gateway_credential_is_made_once_kept_0600_and_replaced_when_refused(
    default_stack: Settings, registry: RegistryService, tmp_path: Path, unique_id: str
) -> None:
    gw = f"gw-{unique_id}"
    # Credentials of the stack (admin) live in its state folder; the agent's file in this one.
    settings = with_gateway(default_stack, default_stack.state_dir, gw)
    settings = settings.model_copy(
        update={
            "agent": settings.agent.model_copy(
                update={"credential_file": tmp_path / "agent" / f"{gw}.secret"}
            )
        }
    )
    with pytest.raises(ConfigError, match=r"agent\.mqtt_password: not set"):
        agent_login(settings, gw)
    ready = ensure_gateway_credential(settings, registry, gw)
    username, password = agent_login(ready, gw)
    assert username == gw
    path = credential_path(settings, gw)
    assert path.read_text().strip() == password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert registry.get_type(registry.get_device(gw).device_type).is_gateway
    mq = default_stack.mqtt
    assert mqtt_connect_check(mq.host, mq.port, gw, password, 10, client_id=gw)[0]
    # Its identity publishes under its own gw/ prefix only: not the admin's, not everything.
    gateway = AclClient(mq.host, mq.port, gw, password, client_id=gw)
    try:
        assert gateway.subscribe(f"kota/v1/gw/{gw}/#") < REFUSED
        assert gateway.subscribe("#") >= REFUSED
        assert gateway.subscribe("kota/v1/gw/other/#") >= REFUSED
    finally:
        gateway.close()

    # The next start takes the kept secret; nothing new is issued.
    assert agent_login(ensure_gateway_credential(settings, registry, gw), gw) == (gw, password)
    # A kept secret the broker refuses (rotated elsewhere, a damaged file) is replaced.
    path.write_text("not-the-secret\n")
    renewed = agent_login(ensure_gateway_credential(settings, registry, gw), gw)[1]
    assert renewed not in (password, "not-the-secret")
    assert path.read_text().strip() == renewed
    assert mqtt_connect_check(mq.host, mq.port, gw, renewed, 10, client_id=gw)[0]
    assert not mqtt_connect_check(mq.host, mq.port, gw, password, 10, client_id=gw)[0]

    # Given in the settings, the password is used as it is: no file, no registry write.
    given = with_gateway(default_stack, tmp_path / "other", "gw-given", mqtt_password="s3cret")
    assert ensure_gateway_credential(given, registry, "gw-given") is given
    assert not credential_path(given, "gw-given").exists()
    # An id the registry holds as something else is not made a gateway.
    registry.create_type(
        DeviceTypeCreate(name="plain", family="flood", protocol="mqtt", expected_interval_s=60),
        actor="t",
    )
    registry.create_device(DeviceCreate(id=f"dev-{unique_id}", device_type="plain"), actor="t")
    with pytest.raises(ConfigError, match=r"is a plain in the registry, not a gateway"):
        ensure_gateway_credential(
            with_gateway(default_stack, tmp_path / "x", f"dev-{unique_id}"),
            registry,
            f"dev-{unique_id}",
        )


def test_kotahub_run_with_a_gateway_id_just_works(
    default_stack: Settings, tmp_path: Path, unique_id: str
) -> None:
    gw, device = f"gw-{unique_id}", f"{unique_id}-gauge"
    state = default_stack.state_dir
    api_port = free_port()
    database_url = f"sqlite:///{tmp_path / 'reg.sqlite3'}"
    database = open_database(database_url)
    token = create_token(database, name="ops", role="admin", actor="test").token
    database.close()
    config = tmp_path / "kotahub.toml"
    mq = default_stack.mqtt
    secret_file = tmp_path / "agent" / "gw.secret"
    config.write_text(
        f'state_dir = "{state}"\n'
        f"[mqtt]\nport = {mq.port}\ntls_port = {mq.resolved_tls_port}\n"
        f'[influx]\nurl = "{default_stack.influx.url}"\n'
        f'[ingest]\nclient_id = "{unique_id}-hub"\nmetrics_port = 0\n'
        f'[registry]\napi_port = {api_port}\ndatabase_url = "{database_url}"\n'
        "api_tls = true\n"
        f'[agent]\ngateway_id = "{gw}"\nbuffer_dir = "{tmp_path / "agent"}"\n'
        f'credential_file = "{secret_file}"\nrefresh_interval_s = 0.5\n'
    )
    # The gauge's Modbus server, on a loop of its own (this test is not async).
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="modbus-loop", daemon=True).start()
    station = SimulatedStation(port=free_port())
    asyncio.run_coroutine_threadsafe(station.start(), loop).result(10)
    station.set_registers(1, 3, [1])
    station.set_int16(1, 4, 5)
    run = subprocess.Popen(
        [sys.executable, "-m", "hub", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    password = ""
    api: httpx.Client | None = None
    try:
        wait_until(lambda: secret_file.is_file() or run.poll() is not None, 60)
        assert run.poll() is None, "kotahub run exited"
        password = secret_file.read_text().strip()
        # https with the broker's certificate: the one CA file a field gateway keeps.
        api = httpx.Client(
            base_url=f"https://127.0.0.1:{api_port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            verify=ssl.create_default_context(cafile=str(state / "mosquitto" / "tls" / "ca.crt")),
        )

        def api_up() -> bool:
            try:
                return api.get("/api/v1/me").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(api_up, 30)
        # The gateway is in the registry now; give it a gauge (a real Modbus server).
        created = api.post(
            "/api/v1/devices",
            json={
                "id": device,
                "device_type": "generic_4_20ma",
                "state": "active",
                "gateway_id": gw,
                "protocol_address": f"127.0.0.1:{station.port}",
                "driver_config": {"timeout_s": 0.3, "poll_interval_s": 0.3},
            },
        )
        assert created.status_code == 201, created.text

        # The agent publishes it under its gateway's topic, as that identity (the broker's
        # ACL lets it write kota/v1/gw/{gw}/ only); the hub takes it (the registry assigns
        # the gauge to that gateway) and writes it to InfluxDB.
        influx = InfluxQL(default_stack.influx.url)

        def written() -> bool:
            rows = influx.rows(
                f"SELECT level_m FROM flood WHERE device_id = '{device}'",
                database=default_stack.influx.database,
            )
            return any(row.get("level_m") == 0.5 for row in rows)

        wait_until(written, 40)
        influx.close()
    finally:
        if api is not None:
            api.close()
        run.send_signal(signal.SIGTERM)
        output = run.communicate(timeout=60)[0]
        print(output)
        asyncio.run_coroutine_threadsafe(station.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    assert run.returncode == 0, output
    assert password
    assert password not in output  # never printed
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
