"""The operator's Ed25519 signing key: make it, load it, sign and verify firmware manifests.

The private key stays on the operator's workstation (mode 0600, never printed, never sent
to the hub); the hub's image store holds only public keys it trusts. A key is named by its
``key_id``, the first 16 hex digits of the SHA-256 of its raw public bytes, so a manifest
says which key signed it and a rotated key can be trusted beside the old one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware_tools.atomic_file import write_atomically
from firmware_tools.errors import FirmwareError

PRIVATE_KEY_FILE = "kotahub-firmware.key"
PUBLIC_KEY_FILE = "kotahub-firmware.pub"


@dataclass(frozen=True, slots=True)
class KeyPair:
    """Where ``make_key_pair`` wrote the two halves, and the key's id."""

    private_path: Path
    public_path: Path
    key_id: str


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's short name: 16 hex digits of the SHA-256 of its raw public bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def make_key_pair(folder: Path, *, overwrite: bool = False) -> KeyPair:
    """Write a new key pair into ``folder``: the private half 0600 from its first byte."""
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / PRIVATE_KEY_FILE, folder / PUBLIC_KEY_FILE
    if not overwrite and (private_path.exists() or public_path.exists()):
        raise FirmwareError(
            f"{private_path} already exists: a new key would orphan every image it signed "
            "(use --force to replace it, after trusting the new key on the hub)"
        )
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_atomically(private_path, private_pem, mode=0o600)
    write_atomically(public_path, public_pem, mode=0o644)
    return KeyPair(private_path, public_path, key_id(private_key.public_key()))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The operator's private key; refuses a file others can read, and anything not Ed25519."""
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as err:
        raise FirmwareError(f"cannot read the signing key {path}: {err.strerror}") from err
    if mode & 0o077:
        raise FirmwareError(
            f"{path} is readable by others (mode {mode:o}): chmod 600 it before signing"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as err:
        raise FirmwareError(f"{path} is not an unencrypted PEM private key") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise FirmwareError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(data: bytes, *, source: str) -> Ed25519PublicKey:
    """A PEM Ed25519 public key; ``source`` names it in the error."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise FirmwareError(f"{source} is not a PEM public key") from err
    if not isinstance(key, Ed25519PublicKey):
        raise FirmwareError(f"{source} is not an Ed25519 public key")
    return key


def public_pem(public_key: Ed25519PublicKey) -> bytes:
    """The key as PEM (SubjectPublicKeyInfo), as the store keeps it."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s signature of ``message``."""
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
