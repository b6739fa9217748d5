"""BLE provisioning against a FAKE bleak client backend (no test machine has a BLE radio).

``FakeBleakClientBackend`` plugs into the real ``bleak.BleakClient`` through its
``backend=`` argument and stands in for a new device's GATT server: it answers the
provisioning service's reads and opens the settings written, as a device would. The
registry and the broker are real: the credentials the device received log in to Mosquitto.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from firmware_tools.ble_provisioning import (
    DEVICE_ID_UUID,
    DEVICE_KEY_UUID,
    RESULT_UUID,
    SERVICE_UUID,
    SETTINGS_UUID,
    NetworkSettings,
    open_envelope,
    parse_device_id,
    parse_result,
    provision,
)
from firmware_tools.errors import FirmwareError
from firmware_tools.provisioning_cli import (
    ProvisioningRuntime,
    provision_app,
    set_ble_backend,
    set_provisioning_runtime_loader,
)
from firmware_tools.simulated_fleet import ota_device_type
from tests.conftest import MqttTestClient, RunningStack


class FakeGattDevice:
    """A FAKE new device's provisioning GATT server: its id, key, and what it was written."""

    def __init__(self, device_id: str, *, with_key: bool) -> None:
        self.device_id = device_id
        self.key = X25519PrivateKey.generate() if with_key else None
        self.settings: dict[str, Any] | None = None
        self.envelopes: list[bytes] = []
        self.result = b'{"state": "error", "reason": "not_provisioned"}'

    def read(self, uuid: str) -> bytes:
        if uuid == DEVICE_ID_UUID:
            return self.device_id.encode()
        if uuid == DEVICE_KEY_UUID:
            if self.key is None:
                return b""
            return self.key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        if uuid == RESULT_UUID:
            return self.result
        raise BleakError(f"not readable: {uuid}")

    def write(self, uuid: str, data: bytes) -> None:
        if uuid != SETTINGS_UUID:
            raise BleakError(f"not writable: {uuid}")
        self.envelopes.append(data)
        try:
            self.settings = orjson.loads(open_envelope(data, self.key, self.device_id))
            self.result = b'{"state": "ok"}'
        except Exception:
            self.result = b'{"state": "error", "reason": "cannot_open_settings"}'


class FakeBleakClientBackend(BaseBleakClient):
    """FAKE bleak client backend: connects to a FakeGattDevice by address."""

    devices: ClassVar[dict[str, FakeGattDevice]] = {}

    def __init__(self, address_or_ble_device: Any, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.get("disconnected_callback"),
            timeout=kwargs.get("timeout", 10.0),
        )
        self._connected = False

    @property
    def mtu_size(self) -> int:
        return 247

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if self.address not in self.devices:
            raise BleakError(f"device {self.address} not found")
        services = BleakGATTServiceCollection()
        service = BleakGATTService(None, 1, SERVICE_UUID)
        services.add_service(service)
        for handle, (uuid, props) in enumerate(
            [
                (DEVICE_ID_UUID, ["read"]),
                (DEVICE_KEY_UUID, ["read"]),
                (SETTINGS_UUID, ["write"]),
                (RESULT_UUID, ["read"]),
            ],
            start=2,
        ):
            char = BleakGATTCharacteristic(None, handle, uuid, props, lambda: 244, service)  # type: ignore[arg-type]
            services.add_characteristic(char)
        self.services = services
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = False

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def unpair(self) -> None:
        raise NotImplementedError

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, **kwargs: Any
    ) -> bytearray:
        return bytearray(self.devices[self.address].read(characteristic.uuid))

    async def read_gatt_descriptor(self, descriptor: Any, **kwargs: Any) -> bytearray:
        raise NotImplementedError

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: Any, response: bool
    ) -> None:
        self.devices[self.address].write(characteristic.uuid, bytes(data))

    async def write_gatt_descriptor(self, descriptor: Any, data: Any) -> None:
        raise NotImplementedError

    async def start_notify(self, characteristic: Any, callback: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def stop_notify(self, characteristic: Any) -> None:
        raise NotImplementedError


@pytest.fixture
def registry(running_stack: RunningStack, tmp_path: Path) -> Iterator[RegistryService]:
    s = running_stack.settings
    client = DynamicSecurityClient(
        BrokerAdmin(
            host=s.mqtt.host,
            port=s.mqtt.port,
            username=s.mqtt.username,
            password=running_stack.mqtt_password,
        )
    )
    database = open_database(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    service = RegistryService(database, DynsecIdentities(client))
    service.create_type(ota_device_type(), actor="test")
    try:
        yield service
    finally:
        client.close()
        database.close()


def network(running_stack: RunningStack) -> NetworkSettings:
    s = running_stack.settings
    return NetworkSettings(
        wifi_ssid="kota-semarang",
        wifi_password="w1f1-secret",
        mqtt_host=s.mqtt.host,
        mqtt_port=s.mqtt.port,
        mqtt_tls=False,
    )


@pytest.mark.parametrize("with_key", [True, False], ids=["encrypted", "plain"])
def test_a_new_device_is_provisioned_registered_and_logs_in(
    running_stack: RunningStack, registry: RegistryService, unique_id: str, with_key: bool
) -> None:
    device = FakeGattDevice(f"{unique_id}-ble", with_key=with_key)
    address = f"AA:BB:CC:{unique_id[-6:-4]}:{unique_id[-4:-2]}:{unique_id[-2:]}"
    FakeBleakClientBackend.devices[address] = device
    done = asyncio.run(
        provision(
            address,
            network(running_stack),
            registry,
            device_type="ota_gauge",
            backend=FakeBleakClientBackend,
        )
    )
    assert done.device_id == device.device_id
    assert done.encrypted is with_key
    assert registry.get_device(device.device_id).state == "active"
    assert device.settings is not None
    assert device.settings["wifi"] == {"ssid": "kota-semarang", "password": "w1f1-secret"}
    # Encrypted: neither the WiFi nor the MQTT password crosses the air in clear.
    secret = device.settings["mqtt"]["password"].encode()
    assert (secret in device.envelopes[0]) is not with_key
    assert (b"w1f1-secret" in device.envelopes[0]) is not with_key
    # The device logs in to the real broker with what it was given.
    mqtt = device.settings["mqtt"]
    client = MqttTestClient(
        mqtt["host"], mqtt["port"], mqtt["username"], mqtt["password"], mqtt["username"]
    )
    try:
        assert client.connect() == "Success"
    finally:
        client.close()
    # Provisioned again (a replaced board): new secret, the old one is refused.
    again = asyncio.run(
        provision(
            address,
            network(running_stack),
            registry,
            device_type="ota_gauge",
            backend=FakeBleakClientBackend,
        )
    )
    assert again.credentials.password != mqtt["password"]
    stale = MqttTestClient(
        mqtt["host"], mqtt["port"], mqtt["username"], mqtt["password"], mqtt["username"]
    )
    try:
        assert stale.connect() != "Success"
    finally:
        stale.close()


def test_a_device_that_cannot_open_its_settings_is_reported(
    running_stack: RunningStack, registry: RegistryService, unique_id: str
) -> None:
    device = FakeGattDevice(f"{unique_id}-bad", with_key=True)
    device.key = X25519PrivateKey.generate()  # it lost the key it advertised: cannot decrypt
    real_read = device.read
    other = X25519PrivateKey.generate()
    device.read = lambda uuid: (  # type: ignore[method-assign]
        other.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if uuid == DEVICE_KEY_UUID
        else real_read(uuid)
    )
    FakeBleakClientBackend.devices["AA:00:00:00:00:01"] = device
    with pytest.raises(FirmwareError, match="refused its settings: cannot_open_settings"):
        asyncio.run(
            provision(
                "AA:00:00:00:00:01",
                network(running_stack),
                registry,
                device_type="ota_gauge",
                backend=FakeBleakClientBackend,
            )
        )
    with pytest.raises(FirmwareError, match="not found"):
        asyncio.run(
            provision(
                "AA:00:00:00:00:99",
                network(running_stack),
                registry,
                device_type="ota_gauge",
                backend=FakeBleakClientBackend,
            )
        )


@given(raw=st.binary(max_size=100) | st.text(max_size=80).map(str.encode))
def test_what_a_device_reports_is_parsed_or_refused_in_one_line(raw: bytes) -> None:
    problems: list[str] = []
    for parse in (parse_device_id, parse_result):
        try:
            parse(raw)
        except FirmwareError as err:  # anything else escaping fails the test
            problems.append(str(err))
    assert all(p and "\n" not in p for p in problems)


def test_kotahub_firmware_provision(
    running_stack: RunningStack,
    registry: RegistryService,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = running_stack.settings
    device = FakeGattDevice(f"{unique_id}-cli", with_key=True)
    FakeBleakClientBackend.devices["AA:00:00:00:01:01"] = device
    FakeBleakClientBackend.devices["AA:00:00:00:01:02"] = FakeGattDevice(
        f"{unique_id}-new", with_key=False
    )
    set_provisioning_runtime_loader(
        lambda _c: ProvisioningRuntime(
            make_service=lambda: registry,
            mqtt_host=s.mqtt.host,
            mqtt_port=s.mqtt.port,
            mqtt_tls=False,
        )
    )
    set_ble_backend(FakeBleakClientBackend)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("SITE_WIFI", "w1f1-secret")
    try:
        args = [
            "AA:00:00:00:01:01",
            "--device-type",
            "ota_gauge",
            "--wifi-ssid",
            "kota",
        ]
        ran = CliRunner().invoke(provision_app, [*args, "--wifi-password-env", "SITE_WIFI"])
        unset = CliRunner().invoke(provision_app, [*args, "--wifi-password-env", "NOPE_UNSET"])
        unknown = CliRunner().invoke(
            provision_app,
            ["AA:00:00:00:01:02", "--device-type", "no_such", "--wifi-ssid", "k",
             "--wifi-password-env", "SITE_WIFI"],
        )  # fmt: skip
    finally:
        set_ble_backend(None)
    assert ran.exit_code == 0, ran.output
    assert f"device {device.device_id} registered" in ran.output
    assert "sealed to its key" in ran.output
    assert "w1f1-secret" not in ran.output
    assert device.settings is not None
    assert device.settings["wifi"]["password"] == "w1f1-secret"
    assert unset.exit_code == 2
    assert unknown.exit_code == 1
    assert "refused" in unknown.output
    assert "no_such" in unknown.output
