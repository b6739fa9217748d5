"""The reference device's OTA logic on its own: no input crashes it, bad ones get a reason."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_tools.ota_protocol import (
    CHUNK_HEADER,
    CHUNK_MAGIC,
    Chunk,
    Offer,
    Status,
    parse_status,
)
from firmware_tools.reference_device import DeviceOta
from firmware_tools.simulated_fleet import SignedImage, make_signed_image, reference_device

TRANSFER = "ab" * 16


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> SignedImage:
    return make_signed_image(tmp_path_factory.mktemp("img"), size=3000)


def offered(image: SignedImage) -> tuple[DeviceOta, Offer]:
    device = reference_device("d1", image)
    offer = Offer(transfer=TRANSFER, campaign="c", chunk_size=1024, manifest=image.manifest)
    assert device.handle("offer", offer.encode()) == [
        Status(state="accepted", transfer=TRANSFER, next_chunk=0)
    ]
    return device, offer


def answers_are_valid(statuses: list[Status]) -> None:
    for status in statuses:
        # Every answer is one the hub can parse, and an error always says why.
        assert parse_status(status.encode()) == status
        if status.state == "error":
            assert status.reason


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["offer", "chunk", "control", "other"]),
    payload=st.binary(max_size=200)
    | json_values.map(orjson.dumps)
    | st.binary(max_size=80).map(lambda b: CHUNK_MAGIC + b),
)
def test_no_message_crashes_the_device(image: SignedImage, kind: str, payload: bytes) -> None:
    device, _offer = offered(image)
    answers = device.handle(kind, payload)
    answers_are_valid(answers)
    assert device.version == "1.0.0"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(["transfer", "campaign", "chunk_size", "chunks", "manifest"]),
    value=json_values,
)
def test_a_damaged_offer_is_declined_or_answered_with_a_reason(
    image: SignedImage, field: str, value: object
) -> None:
    device = reference_device("d1", image)
    body = orjson.loads(
        Offer(transfer=TRANSFER, campaign="c", chunk_size=1024, manifest=image.manifest).encode()
    )
    body[field] = value
    answers = device.handle("offer", orjson.dumps(body))
    answers_are_valid(answers)
    assert len(answers) == 1
    assert answers[0].state in ("accepted", "declined", "error")


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    manifest_field=st.sampled_from(["version", "sha256", "size", "device_types", "models"]),
    data=st.data(),
)
def test_any_change_to_a_signed_manifest_is_refused(
    image: SignedImage, manifest_field: str, data: st.DataObject
) -> None:
    device = reference_device("d1", image)
    manifest = image.manifest.model_dump(mode="json")
    changed = {
        "version": st.sampled_from(["2.0.1", "3.0.0", "1.0.0"]),
        "sha256": st.text("0123456789abcdef", min_size=64, max_size=64),
        "size": st.integers(1, 10**6),
        "device_types": st.just(["ota_gauge", "other"]),
        "models": st.just(["og-2"]),
    }[manifest_field]
    new = data.draw(changed.filter(lambda v: v != manifest[manifest_field]))
    body = orjson.loads(
        Offer(transfer=TRANSFER, campaign="c", chunk_size=1024, manifest=image.manifest).encode()
    )
    body["manifest"][manifest_field] = new
    body.pop("chunks")
    answers = device.handle("offer", orjson.dumps(body))
    answers_are_valid(answers)
    assert answers[0].state in ("declined", "error")
    assert answers[0].reason in (
        "bad_signature",
        "already_installed",
        "wrong_target",
        "bad_manifest",
    )


def test_bad_chunks_are_answered_with_their_reason(image: SignedImage) -> None:
    device, _offer = offered(image)
    data = image.data[:1024]
    good = Chunk(transfer=TRANSFER, index=0, data=data).encode()
    flipped = bytearray(good)
    flipped[-1] ^= 1
    short = CHUNK_HEADER.pack(
        CHUNK_MAGIC, bytes.fromhex(TRANSFER), 0, 10, hashlib.sha256(b"x").digest()
    )
    other = Chunk(transfer="cd" * 16, index=0, data=data).encode()
    wrong_size = Chunk(transfer=TRANSFER, index=0, data=data[:500]).encode()
    reasons = {
        bytes(flipped): "chunk_sha256",
        short: "bad_length",
        b"xx": "short_chunk",
        b"ABCD" + good[4:]: "bad_magic",
        other: "unknown_transfer",
        wrong_size: "bad_length",
    }
    for payload, reason in reasons.items():
        assert device.handle("chunk", payload) == [
            Status(state="error", transfer=TRANSFER, reason=reason)
        ]
    # None of it was written: the good chunk is still the one wanted.
    assert device.handle("chunk", good) == [
        Status(state="receiving", transfer=TRANSFER, next_chunk=1)
    ]


def test_an_unknown_key_and_a_wrong_target_are_declined(image: SignedImage, tmp_path: Path) -> None:
    stranger = make_signed_image(tmp_path / "s", size=2000)
    device = reference_device("d1", image)
    offer = Offer(transfer=TRANSFER, campaign="c", chunk_size=1024, manifest=stranger.manifest)
    assert device.handle("offer", offer.encode())[0].reason == "unknown_key"
    other_model = reference_device("d2", image, model="og-9")
    pinned = make_signed_image(
        tmp_path / "p", size=2000, models=("og-1",), key_folder=image.key_folder
    )
    offer = Offer(transfer=TRANSFER, campaign="c", chunk_size=1024, manifest=pinned.manifest)
    assert other_model.handle("offer", offer.encode())[0].reason == "wrong_target"
