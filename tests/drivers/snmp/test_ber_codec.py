"""The simulators' BER codec against pysnmp's (pyasn1): same bytes, same values."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]
from pysnmp.proto import api
from pysnmp.proto.api import v2c

from drivers.snmp import ber_codec as ber

oids = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=12).map(lambda tail: (1, 3, *tail))
values = st.one_of(
    st.tuples(st.just("integer"), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just("counter32"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("gauge"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("timeticks"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("counter64"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("octets"), st.binary(max_size=300)),
)
PYSNMP = {
    "integer": v2c.Integer,
    "counter32": v2c.Counter32,
    "gauge": v2c.Gauge32,
    "timeticks": v2c.TimeTicks,
    "counter64": v2c.Counter64,
    "octets": v2c.OctetString,
}


def pysnmp_request(
    kind: str,
    version: int,
    request_id: int,
    asked: list[tuple[int, ...]],
    non_repeaters: int = 0,
    repetitions: int = 0,
) -> bytes:
    module = api.PROTOCOL_MODULES[version]
    pdu = {"get": module.GetRequestPDU, "next": module.GetNextRequestPDU}.get(
        kind, v2c.GetBulkRequestPDU
    )()
    api_pdu = v2c.apiBulkPDU if kind == "bulk" else module.apiPDU
    api_pdu.set_defaults(pdu)
    api_pdu.set_request_id(pdu, request_id)
    if kind == "bulk":
        v2c.apiBulkPDU.set_non_repeaters(pdu, non_repeaters)
        v2c.apiBulkPDU.set_max_repetitions(pdu, repetitions)
    api_pdu.set_varbinds(pdu, [(o, v2c.null) for o in asked])
    message = module.Message()
    module.apiMessage.set_defaults(message)
    module.apiMessage.set_community(message, "kota-ro")
    module.apiMessage.set_pdu(message, pdu)
    return bytes(encoder.encode(message))


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["get", "next", "bulk"]),
    st.sampled_from([0, 1]),
    st.integers(0, 2**31 - 1),
    st.lists(oids, min_size=1, max_size=8),
    st.integers(0, 8),
    st.integers(0, 50),
)
def test_requests_decode_as_pysnmp_encoded_them(
    kind: str, version: int, request_id: int, asked: list[tuple[int, ...]], nr: int, reps: int
) -> None:
    if kind == "bulk":
        version = 1
    request = ber.decode_request(pysnmp_request(kind, version, request_id, asked, nr, reps))
    assert request.version == version
    assert request.community == b"kota-ro"
    assert request.request_id == request_id
    assert request.oids == tuple(asked)
    assert request.pdu_type == {"get": ber.GET, "next": ber.GET_NEXT, "bulk": ber.GET_BULK}[kind]
    if kind == "bulk":
        assert (request.non_repeaters, request.max_repetitions) == (nr, reps)


@given(
    st.integers(0, 2**31 - 1),
    st.lists(st.tuples(oids, values), max_size=20),
    st.integers(0, 18),
    st.integers(0, 20),
)
def test_responses_are_byte_for_byte_pysnmps(
    request_id: int, binds: list[tuple[tuple[int, ...], tuple[str, Any]]], status: int, index: int
) -> None:
    request = ber.Request(1, b"kota-ro", ber.GET, request_id, 0, 0, ())
    ours = ber.response(request, [(o, ber.value_tlv(*v)) for o, v in binds], status, index)
    message = v2c.Message()
    v2c.apiMessage.set_defaults(message)
    v2c.apiMessage.set_community(message, "kota-ro")
    pdu = v2c.ResponsePDU()
    v2c.apiPDU.set_defaults(pdu)
    v2c.apiPDU.set_request_id(pdu, request_id)
    v2c.apiPDU.set_error_status(pdu, status)
    v2c.apiPDU.set_error_index(pdu, index)
    v2c.apiPDU.set_varbinds(pdu, [(o, PYSNMP[k](v)) for o, (k, v) in binds])
    v2c.apiMessage.set_pdu(message, pdu)
    if all(not isinstance(v, int) or v >= 0 for _o, (_k, v) in binds):
        # pyasn1 pads some negative INTEGERs (-128 as ff80); both read the same.
        assert ours == bytes(encoder.encode(message))
    decoded, rest = decoder.decode(ours, asn1Spec=v2c.Message())
    assert not rest
    got = v2c.apiPDU.get_varbinds(v2c.apiMessage.get_pdu(decoded))
    assert [tuple(o) for o, _ in got] == [o for o, _ in binds]
    assert [PYSNMP[k](v) for _o, (k, v) in binds] == [value for _o, value in got]
    assert int(v2c.apiPDU.get_request_id(v2c.apiMessage.get_pdu(decoded))) == request_id


def test_exceptions_encode_as_pysnmps() -> None:
    for kind, cls in (
        ("noSuchObject", v2c.NoSuchObject),
        ("noSuchInstance", v2c.NoSuchInstance),
        ("endOfMibView", v2c.EndOfMibView),
        ("null", v2c.Null),
    ):
        assert ber.value_tlv(kind, None) == bytes(encoder.encode(cls("")))
    assert ber.value_tlv("oid", "1.3.6.1.4.1.14988") == bytes(
        encoder.encode(v2c.ObjectIdentifier("1.3.6.1.4.1.14988"))
    )


@given(st.binary(max_size=200))
def test_garbage_is_a_ber_error_never_a_crash(data: bytes) -> None:
    with contextlib.suppress(ber.BerError):
        ber.decode_request(data)
