"""The hub's firmware image store: signed images only, kept by content hash.

Layout under the store's root (by default ``<state_dir>/firmware``)::

    trusted_keys/<key_id>.pub    public keys whose signatures the store accepts
    images/<sha256>              the image bytes, read-only
    manifests/<sha256>.json      its signed manifest

An image is accepted only when its bytes hash to what its manifest says, the manifest's
signature verifies with a trusted key, and every device type it targets is one the
registry knows. The same image uploaded twice is stored once; two different images
claiming one version for one device type are refused, so a campaign never has to guess.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from firmware_tools.atomic_file import write_atomically
from firmware_tools.errors import FirmwareError
from firmware_tools.image_manifest import (
    ImageManifest,
    file_sha256,
    manifest_path_for,
    read_manifest,
)
from firmware_tools.signing import key_id, load_public_key, public_pem, verify

DEFAULT_MAX_IMAGE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image in the store: its manifest and where its bytes are."""

    manifest: ImageManifest
    path: Path

    @property
    def sha256(self) -> str:
        """The image's content hash, its name in the store."""
        return self.manifest.sha256


@dataclass(frozen=True, slots=True)
class AddResult:
    """What ``ImageStore.add`` did: the stored image, and whether it was new."""

    image: StoredImage
    created: bool


class ImageStore:
    """Signed firmware images by content hash, and the public keys the store trusts."""

    def __init__(self, root: Path, *, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
        self.root = root
        self.max_image_bytes = max_image_bytes
        self._keys = root / "trusted_keys"
        self._images = root / "images"
        self._manifests = root / "manifests"

    # -- trusted keys -----------------------------------------------------------------------
    def trust(self, public_key_file: Path) -> str:
        """Trust the public key in this PEM file; returns its key id (idempotent)."""
        try:
            data = public_key_file.read_bytes()
        except OSError as err:
            raise FirmwareError(f"cannot read {public_key_file}: {err.strerror}") from err
        if b"PRIVATE KEY" in data:
            raise FirmwareError(
                f"{public_key_file} is a private key: give the store the .pub file; "
                "the private key never leaves the signing workstation"
            )
        key = load_public_key(data, source=str(public_key_file))
        name = key_id(key)
        self._keys.mkdir(parents=True, exist_ok=True)
        write_atomically(self._keys / f"{name}.pub", public_pem(key), mode=0o644)
        return name

    def trusted_keys(self) -> dict[str, Ed25519PublicKey]:
        """Key id -> public key, for every key the store trusts."""
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(self._keys.glob("*.pub")) if self._keys.is_dir() else []:
            keys[path.stem] = load_public_key(path.read_bytes(), source=str(path))
        return keys

    # -- images -----------------------------------------------------------------------------
    def add(
        self,
        image: Path,
        manifest_file: Path | None = None,
        *,
        known_device_types: Collection[str] | None = None,
    ) -> AddResult:
        """Verify ``image`` against its signed manifest and store it; refusals say why."""
        manifest_file = manifest_file or manifest_path_for(image)
        if not manifest_file.exists():
            raise FirmwareError(
                f"{image} has no manifest ({manifest_file.name}): unsigned images are refused; "
                "sign it with `kotahub firmware sign` on the signing workstation"
            )
        manifest = read_manifest(manifest_file)
        self.verify(image, manifest)
        if known_device_types is not None:
            unknown = sorted(set(manifest.device_types) - set(known_device_types))
            if unknown:
                raise FirmwareError(
                    f"the image targets device type(s) the registry does not know: "
                    f"{', '.join(unknown)} (see `kotahub registry types list`)"
                )
        existing = self._stored(manifest.sha256)
        if existing is not None:
            if existing.manifest.signed_bytes() != manifest.signed_bytes():
                raise FirmwareError(
                    f"this image is already stored as version {existing.manifest.version} "
                    f"for {', '.join(existing.manifest.device_types)}; one image, one manifest"
                )
            return AddResult(existing, created=False)
        self._refuse_version_clash(manifest)
        self._images.mkdir(parents=True, exist_ok=True)
        self._manifests.mkdir(parents=True, exist_ok=True)
        target = self._images / manifest.sha256
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            shutil.copyfile(image, tmp)
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise FirmwareError(f"cannot store the image: {err.strerror}") from err
        # The manifest goes in last: an image without one is invisible, never half-stored.
        manifest_path = self._manifests / f"{manifest.sha256}.json"
        write_atomically(manifest_path, manifest.to_json(), mode=0o644)
        return AddResult(StoredImage(manifest, target), created=True)

    def verify(self, image: Path, manifest: ImageManifest) -> None:
        """Raise FirmwareError unless ``image`` is what ``manifest`` describes and signs."""
        sha256, size = file_sha256(image)
        if size > self.max_image_bytes:
            raise FirmwareError(
                f"{image} is {size} bytes, over the store's limit of {self.max_image_bytes}"
            )
        if sha256 != manifest.sha256 or size != manifest.size:
            raise FirmwareError(
                f"{image} does not match its manifest (sha256 {sha256[:12]}..., "
                f"manifest says {manifest.sha256[:12]}...): tampered, or the wrong file"
            )
        key = self.trusted_keys().get(manifest.key_id)
        if key is None:
            raise FirmwareError(
                f"the manifest is signed by key {manifest.key_id}, which this store does not "
                "trust (`kotahub firmware trust KEY.pub`)"
            )
        if not verify(key, manifest.signature_bytes(), manifest.signed_bytes()):
            raise FirmwareError(
                "the manifest's signature does not verify: its version, targets or hash "
                "were changed after signing"
            )

    def get(self, sha256_prefix: str) -> StoredImage:
        """The stored image whose hash starts with this prefix (at least 8 hex digits)."""
        prefix = sha256_prefix.lower()
        if len(prefix) < 8 or any(c not in "0123456789abcdef" for c in prefix):
            raise FirmwareError("name an image by at least 8 hex digits of its sha256")
        matches = [image for image in self.list() if image.sha256.startswith(prefix)]
        if not matches:
            raise FirmwareError(f"no stored image has a sha256 starting {prefix}")
        if len(matches) > 1:
            raise FirmwareError(f"{prefix} names {len(matches)} images: give more digits")
        return matches[0]

    def list(self) -> list[StoredImage]:
        """Every stored image, by device type and version."""
        found: list[StoredImage] = []
        if not self._manifests.is_dir():
            return found
        for path in self._manifests.glob("*.json"):
            image = self._stored(path.stem)
            if image is not None:
                found.append(image)
        return sorted(found, key=lambda i: (i.manifest.device_types, _version_key(i)))

    def check_target(self, manifest: ImageManifest, device_type: str, model: str | None) -> None:
        """Raise FirmwareError, with the reason, when a device may not take this image."""
        if device_type not in manifest.device_types:
            raise FirmwareError(
                f"image {manifest.version} is for {', '.join(manifest.device_types)}, "
                f"not {device_type}"
            )
        if manifest.models and model not in manifest.models:
            raise FirmwareError(
                f"image {manifest.version} is for model(s) {', '.join(manifest.models)}, "
                f"not {model or 'a device with no model recorded'}"
            )

    def _stored(self, sha256: str) -> StoredImage | None:
        manifest_file = self._manifests / f"{sha256}.json"
        image = self._images / sha256
        if not manifest_file.is_file() or not image.is_file():
            return None
        return StoredImage(read_manifest(manifest_file), image)

    def _refuse_version_clash(self, manifest: ImageManifest) -> None:
        for other in self.list():
            shared = set(other.manifest.device_types) & set(manifest.device_types)
            if other.manifest.version == manifest.version and shared:
                raise FirmwareError(
                    f"version {manifest.version} for {', '.join(sorted(shared))} is already "
                    f"image {other.sha256[:12]}: give the new build a new version"
                )


def _version_key(image: StoredImage) -> tuple[tuple[int, ...], str]:
    core, _, rest = image.manifest.version.partition("-")
    core = core.partition("+")[0]
    return tuple(int(p) for p in core.split(".") if p.isdigit()), rest
