"""BTHome against the reference: bthome-ble's own test advertisements, and encrypted ones.

``tests/drivers/ble_vectors.py`` holds 75 advertisements from bthome-ble's public test suite
with the values those tests expect; every one must decode to exactly those values. The
encrypted cases use the library's own encoder (``bthome_v2_encryption.encrypt_payload``),
as the format's documentation does, with the right key and a wrong one.
"""

from __future__ import annotations

import pytest
from bthome_ble.bthome_v2_encryption import encrypt_payload
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble.bthome import BTHomeDecoder, BTHomeError, BTHomeKeyError
from tests.drivers.ble_vectors import UUIDS, VECTORS, Vector

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")  # the format documentation's key
WRONG_KEY = bytes.fromhex("814aac74c4f17b6c1581e1ab87816b99")
MAC = "54:48:E6:8F:80:A5"


def decoded(vector: Vector) -> tuple[dict[str, object], dict[str, object]]:
    """What Kotahub makes of a vector: (telemetry, events); both empty when it refuses."""
    key = bytes.fromhex(vector.bindkey) if vector.bindkey else None
    data = bytes.fromhex(vector.service_data["FCD2"])
    try:
        advert = BTHomeDecoder(bindkey=key).decode(vector.address, data, name=vector.name)
    except BTHomeError:
        return {}, {}
    return dict(advert.metrics), dict(advert.events)


def test_the_vector_set_is_the_reference_suite() -> None:
    assert len(VECTORS) == 75
    assert len({v.test for v in VECTORS}) >= 70
    assert all("FCD2" in v.service_data and set(v.service_data) <= set(UUIDS) for v in VECTORS)
    assert sum(1 for v in VECTORS if v.bindkey) == 3
    assert sum(1 for v in VECTORS if v.events) >= 5  # buttons, dimmers, commands


@pytest.mark.parametrize("vector", VECTORS, ids=[v.test for v in VECTORS])
def test_reference_vector_decodes_as_the_reference_expects(vector: Vector) -> None:
    assert decoded(vector) == (vector.metrics, vector.events)


def test_all_reference_vectors_agree() -> None:
    agree = sum(decoded(v) == (v.metrics, v.events) for v in VECTORS)
    assert agree == len(VECTORS)


def encrypted(plain_hex: str, *, counter: int = 0x00112233, key: bytes = KEY) -> bytes:
    """Service data of ``plain_hex`` (objects) encrypted the way a BTHome sensor does."""
    frame = encrypt_payload(
        data=bytes.fromhex(plain_hex),
        mac=bytes.fromhex(MAC.replace(":", "")),
        uuid16=b"\xd2\xfc",
        sw_version=b"\x41",
        count_id=counter.to_bytes(4, "little"),
        key=key,
    )
    return bytes(frame[2:])  # without the UUID, as bleak hands service data over


def test_documentation_encryption_example_decodes_with_its_key() -> None:
    data = encrypted("02CA0903BF13", counter=0x33221100)  # count id bytes 00 11 22 33
    assert data == bytes.fromhex("41a47266c95f730011223378237214")  # the documented bytes
    advert = BTHomeDecoder(bindkey=KEY).decode(MAC, data)
    assert advert.metrics == {"temperature_c": 25.06, "humidity_pct": 50.55}


@pytest.mark.parametrize(
    ("plain", "metrics", "events"),
    [
        ("2101", {"motion": True}, {}),  # the documentation's second example
        ("00520164", {"packet_id": 82, "battery_pct": 100}, {}),
        (
            "000202ca0902cf09",
            {"packet_id": 2, "temperature_c": 25.06, "temperature_c_2": 25.11},
            {},
        ),
        ("003a01", {"packet_id": 58}, {}),  # 0x3A here is the packet id's value
        ("00073a04", {"packet_id": 7}, {"button": "long_press"}),
    ],
)
def test_encrypted_with_the_right_key_and_a_wrong_one(
    plain: str, metrics: dict[str, object], events: dict[str, object]
) -> None:
    data = encrypted(plain)
    advert = BTHomeDecoder(bindkey=KEY).decode(MAC, data)
    assert (advert.metrics, advert.events) == (metrics, events)
    with pytest.raises(BTHomeKeyError, match="wrong bindkey"):
        BTHomeDecoder(bindkey=WRONG_KEY).decode(MAC, data)
    with pytest.raises(BTHomeKeyError, match="no bindkey"):
        BTHomeDecoder().decode(MAC, data)


def test_plaintext_from_a_keyed_sensor_is_refused_as_a_downgrade() -> None:
    with pytest.raises(BTHomeKeyError, match="downgrade"):
        BTHomeDecoder(bindkey=KEY).decode(MAC, bytes.fromhex("4002ca09"))


def test_a_replayed_counter_is_dropped_and_a_newer_one_decodes() -> None:
    decoder = BTHomeDecoder(bindkey=KEY)
    assert decoder.decode(MAC, encrypted("02ca09", counter=500)).metrics
    replay = decoder.decode(MAC, encrypted("02cb09", counter=400))
    assert replay.duplicate
    assert not replay.metrics
    assert decoder.decode(MAC, encrypted("02cc09", counter=501)).metrics == {"temperature_c": 25.08}


@given(st.sampled_from([v for v in VECTORS if not v.bindkey]), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_encrypting_a_reference_vector_changes_nothing_it_decodes_to(
    vector: Vector, counter: int
) -> None:
    data = bytes.fromhex(vector.service_data["FCD2"])
    if data[0] & 0x02 or data[0] >> 5 != 2:
        return  # a MAC-in-payload or wrong-version vector has no plain objects to encrypt
    try:
        secret = encrypted(data[1:].hex(), counter=counter)
    except ValueError:
        return  # nothing to encrypt
    plain = decoded(vector)
    try:
        advert = BTHomeDecoder(bindkey=KEY).decode(MAC, secret)
    except BTHomeError:
        assert plain == ({}, {})
        return
    assert (advert.metrics, advert.events) == plain
