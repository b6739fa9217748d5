"""A simulated OTA fleet: devices registered with their own broker identities, and a signed image.

The tests, ``bench/ota.py`` and the demo's simulator build the same thing: N devices of one
MQTT device type in the registry (one transaction, one broker identity each), a key pair,
an image signed with it, and a ``DeviceSwarm`` of reference devices logged in as them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from device_registry.fleet_registration import FleetPlan, register_fleet
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate, MetricSpec
from firmware_tools.image_manifest import ImageManifest, manifest_path_for, sign_image
from firmware_tools.reference_device import DeclinePolicy, DeviceLogin, DeviceOta
from firmware_tools.signing import load_private_key, load_public_key, make_key_pair

OTA_DEVICE_TYPE = "ota_gauge"
OTA_MODEL = "og-1"


def ota_device_type(name: str = OTA_DEVICE_TYPE) -> DeviceTypeCreate:
    """An MQTT flood gauge type: each device speaks MQTT itself, so it has its own identity."""
    return DeviceTypeCreate(
        name=name,
        family="flood",
        protocol="mqtt",
        expected_interval_s=300,
        metrics=[MetricSpec(name="level_m", unit="m")],
    )


def register_ota_devices(
    service: RegistryService,
    device_ids: list[str],
    *,
    device_type: str = OTA_DEVICE_TYPE,
    model: str = OTA_MODEL,
    firmware_version: str = "1.0.0",
    state: str = "active",
) -> dict[str, DeviceLogin]:
    """Register devices (and their type) with a broker identity each; their logins."""
    plan = FleetPlan(
        device_types=[ota_device_type(device_type)],
        devices=[
            DeviceCreate(
                id=device_id,
                device_type=device_type,
                state=state,
                model=model,
                firmware_version=firmware_version,
            )
            for device_id in device_ids
        ],
        own_identities=frozenset(device_ids),
    )
    result = register_fleet(service, plan, actor="ota-simulation")
    return {
        item.spec.username: DeviceLogin(username=item.spec.username, password=item.password)
        for item in result.issued
    }


@dataclass(frozen=True, slots=True)
class SignedImage:
    """An image on disk, its manifest, and the key that verifies it."""

    path: Path
    manifest: ImageManifest
    public_key: Ed25519PublicKey
    key_folder: Path

    @property
    def data(self) -> bytes:
        """The image's bytes."""
        return self.path.read_bytes()

    @property
    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        """What a device holds: the operator's public key by its id."""
        return {self.manifest.key_id: self.public_key}


def make_signed_image(
    folder: Path,
    *,
    size: int,
    version: str = "2.0.0",
    device_types: tuple[str, ...] = (OTA_DEVICE_TYPE,),
    models: tuple[str, ...] = (),
    key_folder: Path | None = None,
) -> SignedImage:
    """A random image of ``size`` bytes signed with a new (or the given folder's) key."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = key_folder or folder / "keys"
    if not (keys / "kotahub-firmware.key").exists():
        make_key_pair(keys)
    image = folder / f"image-{version}.bin"
    image.write_bytes(os.urandom(size))
    manifest = sign_image(
        image,
        load_private_key(keys / "kotahub-firmware.key"),
        version=version,
        device_types=device_types,
        models=models,
    )
    manifest_path_for(image).write_bytes(manifest.to_json())
    public = load_public_key((keys / "kotahub-firmware.pub").read_bytes(), source="public key")
    return SignedImage(image, manifest, public, keys)


def reference_device(
    device_id: str,
    image: SignedImage,
    *,
    version: str = "1.0.0",
    device_type: str = OTA_DEVICE_TYPE,
    model: str | None = OTA_MODEL,
    decline: DeclinePolicy | None = None,
) -> DeviceOta:
    """A reference device that trusts the image's key."""
    return DeviceOta(
        device_id=device_id,
        device_type=device_type,
        model=model,
        version=version,
        trusted_keys=image.trusted_keys,
        decline=decline,
    )
