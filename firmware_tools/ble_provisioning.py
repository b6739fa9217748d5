"""BLE provisioning: read a new device's id over GATT, register it, write WiFi and MQTT settings.

The GATT service (docs/ota.md, "BLE provisioning") has four characteristics:

* ``device_id`` (read): the device's id, UTF-8, ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``;
* ``device_key`` (read): the device's X25519 public key (32 bytes), or empty when it has none;
* ``settings`` (write with response): the settings envelope below;
* ``result`` (read): ``{"state": "ok"}`` or ``{"state": "error", "reason": "..."}``.

The settings are JSON ``{"wifi": {"ssid", "password"}, "mqtt": {"host", "port", "username",
"password", "tls"}}``. The envelope's first byte says how they travel: ``0x00`` plain JSON
follows (a device without a key), ``0x01`` encrypted to the device's key: the hub's
ephemeral X25519 public key (32 bytes), a 12-byte nonce, then ChaCha20-Poly1305 of the JSON
under HKDF-SHA256(shared secret, info = ``kotahub-ble-provisioning/1`` + device id).

The device is registered (or its credentials rotated, when it is already known) before the
settings are written, so that the MQTT password written is one the broker accepts.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson
from bleak import BleakClient
from bleak.backends.client import BaseBleakClient
from bleak.exc import BleakError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from device_registry.errors import ConflictError, RegistryError
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, MqttCredentials
from firmware_tools.errors import FirmwareError

SERVICE_UUID: Final = "6b6f7461-6875-6201-0000-000000000001"
DEVICE_ID_UUID: Final = "6b6f7461-6875-6201-0000-000000000002"
DEVICE_KEY_UUID: Final = "6b6f7461-6875-6201-0000-000000000003"
SETTINGS_UUID: Final = "6b6f7461-6875-6201-0000-000000000004"
RESULT_UUID: Final = "6b6f7461-6875-6201-0000-000000000005"
PLAIN: Final = 0x00
SEALED: Final = 0x01
HKDF_INFO: Final = b"kotahub-ble-provisioning/1"
DEVICE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
MAX_SETTINGS: Final = 512  # one ATT long write; the JSON is well below it


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSettings:
    """What a new device needs to reach the broker."""

    wifi_ssid: str
    wifi_password: str
    mqtt_host: str
    mqtt_port: int
    mqtt_tls: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Provisioned:
    """What provisioning did."""

    device_id: str
    encrypted: bool
    credentials: MqttCredentials


def parse_device_id(raw: bytes) -> str:
    """The id a device reports, or FirmwareError."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as err:
        raise FirmwareError("the device's id is not UTF-8") from err
    if DEVICE_ID.fullmatch(text) is None:
        raise FirmwareError(f"the device reports an invalid id {text[:70]!r}")
    return text


def parse_result(raw: bytes) -> str | None:
    """None when the device says ok; else its reason (FirmwareError for a garbled answer)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise FirmwareError("the device's result is not JSON") from err
    if not isinstance(body, dict) or body.get("state") not in ("ok", "error"):
        raise FirmwareError('the device\'s result must be {"state": "ok" | "error"}')
    if body["state"] == "ok":
        return None
    reason = body.get("reason")
    return str(reason)[:200] if reason else "unspecified"


def _key(shared: bytes, device_id: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO + device_id.encode()
    ).derive(shared)


def seal(settings: bytes, device_key: bytes | None, device_id: str) -> bytes:
    """The settings envelope: plain, or encrypted to the device's X25519 key."""
    if not device_key:
        return bytes([PLAIN]) + settings
    if len(device_key) != 32:
        raise FirmwareError(f"the device's key is {len(device_key)} bytes, not 32")
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(device_key))
    nonce = os.urandom(12)
    sealed = ChaCha20Poly1305(_key(shared, device_id)).encrypt(nonce, settings, None)
    public = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return bytes([SEALED]) + public + nonce + sealed


def open_envelope(envelope: bytes, device_key: X25519PrivateKey | None, device_id: str) -> bytes:
    """The device's side of ``seal``: the settings JSON (ValueError when it cannot be read)."""
    if not envelope:
        raise ValueError("empty")
    if envelope[0] == PLAIN:
        return envelope[1:]
    if envelope[0] != SEALED or device_key is None or len(envelope) < 1 + 32 + 12 + 16:
        raise ValueError("not an envelope this device can open")
    peer = X25519PublicKey.from_public_bytes(envelope[1:33])
    key = _key(device_key.exchange(peer), device_id)
    return ChaCha20Poly1305(key).decrypt(envelope[33:45], envelope[45:], None)


def settings_json(network: NetworkSettings, credentials: MqttCredentials) -> bytes:
    """The settings a device stores."""
    body = {
        "wifi": {"ssid": network.wifi_ssid, "password": network.wifi_password},
        "mqtt": {
            "host": network.mqtt_host,
            "port": network.mqtt_port,
            "tls": network.mqtt_tls,
            "username": credentials.username,
            "password": credentials.password,
        },
    }
    data = orjson.dumps(body)
    if len(data) + 1 + 32 + 12 + 16 > MAX_SETTINGS:
        raise FirmwareError(f"the settings take {len(data)} bytes; at most ~450 fit one write")
    return data


def _credentials(service: RegistryService, device_id: str, device_type: str) -> MqttCredentials:
    try:
        written = service.create_device(
            DeviceCreate(id=device_id, device_type=device_type, state="active"), actor="ble"
        )
    except ConflictError:
        # Known already (a re-provisioned unit): a new secret, the old one stops working.
        written = service.rotate_credentials(device_id, actor="ble")
    except RegistryError as err:
        raise FirmwareError(f"cannot register {device_id}: {err}") from err
    if written.credentials is None:
        raise FirmwareError(f"device type {device_type} gives its devices no MQTT identity")
    return written.credentials


async def provision(
    address: str,
    network: NetworkSettings,
    service: RegistryService,
    *,
    device_type: str,
    timeout_s: float = 20.0,
    backend: type[BaseBleakClient] | None = None,
) -> Provisioned:
    """Provision the device at ``address``: id, registration, settings, its answer."""
    options: dict[str, Any] = {"timeout": timeout_s}
    if backend is not None:
        options["backend"] = backend
    try:
        async with asyncio.timeout(timeout_s * 3), BleakClient(address, **options) as client:
            device_id = parse_device_id(bytes(await client.read_gatt_char(DEVICE_ID_UUID)))
            device_key = bytes(await client.read_gatt_char(DEVICE_KEY_UUID))
            credentials = await asyncio.to_thread(_credentials, service, device_id, device_type)
            envelope = seal(settings_json(network, credentials), device_key, device_id)
            await client.write_gatt_char(SETTINGS_UUID, envelope, response=True)
            reason = parse_result(bytes(await client.read_gatt_char(RESULT_UUID)))
    except (BleakError, TimeoutError, OSError) as err:
        raise FirmwareError(f"BLE device {address}: {err or type(err).__name__}") from err
    if reason is not None:
        raise FirmwareError(f"device {device_id} refused its settings: {reason}")
    return Provisioned(device_id=device_id, encrypted=bool(device_key), credentials=credentials)
