"""Signed firmware images: the key pair, the manifest's signature, and the hub's store."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_tools.errors import FirmwareError
from firmware_tools.image_manifest import manifest_path_for, read_manifest, sign_image
from firmware_tools.image_store import ImageStore
from firmware_tools.signing import load_private_key, make_key_pair

TYPES = ["vegapuls_c21", "pump_station_plc"]


@pytest.fixture
def signer(tmp_path: Path) -> Path:
    """A key pair in a folder of its own, as `kotahub firmware keygen` makes it."""
    return make_key_pair(tmp_path / "keys").private_path


@pytest.fixture
def store(tmp_path: Path, signer: Path) -> ImageStore:
    store = ImageStore(tmp_path / "store")
    store.trust(signer.with_name("kotahub-firmware.pub"))
    return store


def signed_image(folder: Path, key: Path, *, data: bytes = b"\x7fELF" + os.urandom(4096),
                 version: str = "2.4.1", types: tuple[str, ...] = ("vegapuls_c21",),
                 models: tuple[str, ...] = ()) -> Path:  # fmt: skip
    image = folder / f"gauge-{version}.bin"
    image.write_bytes(data)
    manifest = sign_image(
        image, load_private_key(key), version=version, device_types=types, models=models
    )
    manifest_path_for(image).write_bytes(manifest.to_json())
    return image


def test_keygen_writes_the_private_key_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    pair = make_key_pair(tmp_path / "k")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in pair.private_path.read_bytes()
    assert b"PRIVATE" not in pair.public_path.read_bytes()
    with pytest.raises(FirmwareError, match="already exists"):
        make_key_pair(tmp_path / "k")
    assert make_key_pair(tmp_path / "k", overwrite=True).key_id != pair.key_id


def test_a_private_key_readable_by_others_is_refused(signer: Path) -> None:
    signer.chmod(0o644)
    with pytest.raises(FirmwareError, match="readable by others"):
        load_private_key(signer)


def test_a_signed_image_is_stored_by_content_hash_once(
    tmp_path: Path, signer: Path, store: ImageStore
) -> None:
    image = signed_image(tmp_path, signer)
    first = store.add(image, known_device_types=TYPES)
    assert first.created
    assert first.image.path.name == first.image.sha256
    assert first.image.path.read_bytes() == image.read_bytes()
    assert stat.S_IMODE(first.image.path.stat().st_mode) == 0o444
    again = store.add(image, known_device_types=TYPES)
    assert not again.created
    assert [i.sha256 for i in store.list()] == [first.image.sha256]
    assert store.get(first.image.sha256[:8]).manifest.version == "2.4.1"


def test_an_unsigned_image_is_refused(tmp_path: Path, store: ImageStore) -> None:
    image = tmp_path / "raw.bin"
    image.write_bytes(b"firmware")
    with pytest.raises(FirmwareError, match="unsigned images are refused"):
        store.add(image)
    assert store.list() == []


def test_a_tampered_image_is_refused(tmp_path: Path, signer: Path, store: ImageStore) -> None:
    image = signed_image(tmp_path, signer)
    data = bytearray(image.read_bytes())
    data[100] ^= 0x01  # one bit flipped after signing
    image.write_bytes(bytes(data))
    with pytest.raises(FirmwareError, match="does not match its manifest"):
        store.add(image)
    assert store.list() == []


def test_retargeting_a_signed_manifest_breaks_its_signature(
    tmp_path: Path, signer: Path, store: ImageStore
) -> None:
    image = signed_image(tmp_path, signer)
    manifest_file = manifest_path_for(image)
    body = orjson.loads(manifest_file.read_bytes())
    body["device_types"] = ["pump_station_plc"]  # the same bytes, pointed at pumps
    manifest_file.write_bytes(orjson.dumps(body))
    with pytest.raises(FirmwareError, match="signature does not verify"):
        store.add(image)


def test_an_image_signed_by_an_untrusted_key_is_refused(tmp_path: Path, store: ImageStore) -> None:
    stranger = make_key_pair(tmp_path / "stranger").private_path
    image = signed_image(tmp_path, stranger)
    with pytest.raises(FirmwareError, match="does not trust"):
        store.add(image)


def test_an_image_for_a_device_type_the_registry_lacks_is_refused(
    tmp_path: Path, signer: Path, store: ImageStore
) -> None:
    image = signed_image(tmp_path, signer, types=("toaster",))
    with pytest.raises(FirmwareError, match="registry does not know: toaster"):
        store.add(image, known_device_types=TYPES)


def test_one_version_for_one_type_names_one_image(
    tmp_path: Path, signer: Path, store: ImageStore
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    store.add(signed_image(tmp_path / "a", signer, data=b"build one"))
    with pytest.raises(FirmwareError, match="give the new build a new version"):
        store.add(signed_image(tmp_path / "b", signer, data=b"build two"))


def test_wrong_targets_are_refused_with_the_reason(
    tmp_path: Path, signer: Path, store: ImageStore
) -> None:
    image = signed_image(tmp_path, signer, models=("C21",))
    manifest = store.add(image).image.manifest
    store.check_target(manifest, "vegapuls_c21", "C21")
    with pytest.raises(FirmwareError, match="not pump_station_plc"):
        store.check_target(manifest, "pump_station_plc", "C21")
    with pytest.raises(FirmwareError, match="not C23"):
        store.check_target(manifest, "vegapuls_c21", "C23")
    with pytest.raises(FirmwareError, match="no model recorded"):
        store.check_target(manifest, "vegapuls_c21", None)


def test_a_private_key_given_as_a_trusted_key_is_refused(signer: Path, store: ImageStore) -> None:
    with pytest.raises(FirmwareError, match="is a private key"):
        store.trust(signer)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["format", "version", "device_types", "models", "size",
                                     "sha256", "key_id", "signature", "extra"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=80),
                              st.lists(st.text(max_size=20), max_size=3)),
                    max_size=9).map(lambda d: json.dumps(d).encode()),
))  # fmt: skip
def test_any_manifest_file_is_stored_or_refused_in_one_line(
    tmp_path: Path, store: ImageStore, body: bytes
) -> None:
    image = tmp_path / "x.bin"
    image.write_bytes(b"image")
    manifest_path_for(image).write_bytes(body)
    with pytest.raises(FirmwareError) as refused:
        store.add(image)
    assert "\n" not in str(refused.value)


def test_a_garbled_signature_is_refused(tmp_path: Path, signer: Path, store: ImageStore) -> None:
    image = signed_image(tmp_path, signer)
    manifest = read_manifest(manifest_path_for(image))
    forged = manifest.model_copy(update={"signature": base64.b64encode(b"\0" * 64).decode()})
    manifest_path_for(image).write_bytes(forged.to_json())
    with pytest.raises(FirmwareError, match="signature does not verify"):
        store.add(image)
