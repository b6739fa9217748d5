"""A firmware image's manifest: what the image is, which devices it is for, who signed it.

The manifest travels beside the image as ``<image>.kfw.json``. Its signature covers the
version, the targets, the size and the SHA-256 of the image, so neither the image nor its
targets can be changed without the operator's private key. The signed bytes are a domain
prefix and canonical JSON (sorted keys, no spaces): any implementation, a device's
included, can rebuild them exactly (docs/firmware.md gives them byte by byte).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from firmware_tools.errors import FirmwareError
from firmware_tools.signing import key_id

FORMAT: Literal["kotahub-firmware/1"] = "kotahub-firmware/1"
SIGNED_PREFIX = b"kotahub-firmware/1\n"
MANIFEST_SUFFIX = ".kfw.json"
MAX_MANIFEST_BYTES = 65536
HASH_CHUNK = 1 << 20

Version = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+){0,3}([-+][0-9A-Za-z.\-]+)?$"
    ),
]
TargetName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
]
HexDigest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
KeyId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]


class ImageManifest(BaseModel):
    """The signed description of one firmware image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["kotahub-firmware/1"] = FORMAT
    version: Version
    device_types: tuple[TargetName, ...] = Field(min_length=1, max_length=64)
    models: tuple[TargetName, ...] = Field(default=(), max_length=256)
    size: int = Field(gt=0, le=1 << 31)
    sha256: HexDigest
    key_id: KeyId
    signature: str = Field(min_length=1, max_length=200)

    def signed_bytes(self) -> bytes:
        """The exact bytes the signature covers."""
        body = {
            "device_types": sorted(self.device_types),
            "format": self.format,
            "models": sorted(self.models),
            "sha256": self.sha256,
            "size": self.size,
            "version": self.version,
        }
        return SIGNED_PREFIX + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    def signature_bytes(self) -> bytes:
        """The signature, decoded from base64 (a malformed one is a FirmwareError)."""
        try:
            return base64.b64decode(self.signature, validate=True)
        except (binascii.Error, ValueError) as err:
            raise FirmwareError("the manifest's signature is not base64") from err

    def targets(self, device_type: str, model: str | None) -> bool:
        """True when a device of this type (and model, if the image names models) may take it."""
        if device_type not in self.device_types:
            return False
        return not self.models or (model is not None and model in self.models)

    def to_json(self) -> bytes:
        """The manifest file's content."""
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in 1 MiB pieces."""
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as handle:
            while piece := handle.read(HASH_CHUNK):
                digest.update(piece)
                size += len(piece)
    except OSError as err:
        raise FirmwareError(f"cannot read {path}: {err.strerror}") from err
    return digest.hexdigest(), size


def sign_image(
    image: Path,
    private_key: Ed25519PrivateKey,
    *,
    version: str,
    device_types: Iterable[str],
    models: Iterable[str] = (),
) -> ImageManifest:
    """The signed manifest of ``image`` for these targets."""
    sha256, size = file_sha256(image)
    if size == 0:
        raise FirmwareError(f"{image} is empty")
    fields = {
        "version": version,
        "device_types": tuple(sorted(set(device_types))),
        "models": tuple(sorted(set(models))),
        "size": size,
        "sha256": sha256,
        "key_id": key_id(private_key.public_key()),
        "signature": "-",  # replaced below, once the signed fields are validated
    }
    unsigned = _validated(fields, source="the image's description")
    signature = base64.b64encode(private_key.sign(unsigned.signed_bytes())).decode()
    return unsigned.model_copy(update={"signature": signature})


def read_manifest(path: Path) -> ImageManifest:
    """Load and validate a manifest file; every problem is one line naming the file."""
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise FirmwareError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
        raw = orjson.loads(path.read_bytes())
    except OSError as err:
        raise FirmwareError(f"cannot read {path}: {err.strerror}") from err
    except orjson.JSONDecodeError as err:
        raise FirmwareError(f"{path} is not JSON: {err}") from err
    if not isinstance(raw, dict):
        raise FirmwareError(f"{path} must hold a JSON object")
    return _validated(raw, source=str(path))


def manifest_path_for(image: Path) -> Path:
    """Where the manifest of ``image`` lives by default: beside it, ``<image>.kfw.json``."""
    return image.with_name(image.name + MANIFEST_SUFFIX)


def _validated(fields: dict[str, object], *, source: str) -> ImageManifest:
    try:
        return ImageManifest.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(manifest)"
        raise FirmwareError(f"{source}: {where}: {first['msg']}") from err
