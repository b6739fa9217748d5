"""A small BER codec for the simulated agents' hot path: v1/v2c requests in, responses out.

pyasn1 (pysnmp's codec) spends milliseconds per message; thousands of simulated targets
on a shared machine need microseconds. This module handles only what a v1/v2c command
responder sees (GET, GETNEXT, GETBULK requests; a Response PDU); the tests check that its
bytes equal pyasn1's for the same message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

SEQUENCE: Final = 0x30
INTEGER: Final = 0x02
OCTET_STRING: Final = 0x04
NULL: Final = 0x05
OBJECT_ID: Final = 0x06
GET: Final = 0xA0
GET_NEXT: Final = 0xA1
RESPONSE: Final = 0xA2
GET_BULK: Final = 0xA5
TAGS: Final = {
    "integer": 0x02,
    "octets": 0x04,
    "oid": 0x06,
    "ip": 0x40,
    "counter32": 0x41,
    "gauge": 0x42,
    "timeticks": 0x43,
    "counter64": 0x46,
    "noSuchObject": 0x80,
    "noSuchInstance": 0x81,
    "endOfMibView": 0x82,
    "null": 0x05,
}


class BerError(ValueError):
    """A datagram that is not a v1/v2c request this codec reads."""


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded v1/v2c request."""

    version: int
    community: bytes
    pdu_type: int
    request_id: int
    non_repeaters: int
    max_repetitions: int
    oids: tuple[tuple[int, ...], ...]


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, body: bytes) -> bytes:
    """Tag, length, value."""
    return bytes([tag]) + _length(len(body)) + body


def integer_body(value: int) -> bytes:
    """Two's complement, shortest form (unsigned SMI types too: a leading 0 when needed)."""
    size = max(1, (value.bit_length() + 8) // 8) if value >= 0 else ((~value).bit_length() + 8) // 8
    return value.to_bytes(size, "big", signed=True)


def oid_body(oid: Sequence[int]) -> bytes:
    """An OBJECT IDENTIFIER's contents (first two arcs as 40a+b, then base 128)."""
    if len(oid) < 2:
        raise BerError("an OID needs two arcs")
    out = bytearray()
    for arc in (oid[0] * 40 + oid[1], *oid[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def value_tlv(kind: str, value: int | bytes | str | None) -> bytes:
    """One varbind value."""
    tag = TAGS[kind]
    if kind in ("octets", "ip"):
        assert isinstance(value, bytes)
        return tlv(tag, value)
    if kind == "oid":
        assert isinstance(value, str)
        return tlv(tag, oid_body([int(p) for p in value.split(".")]))
    if value is None:
        return bytes([tag, 0])
    assert isinstance(value, int)
    return tlv(tag, integer_body(value))


def response(
    request: Request,
    varbinds: Sequence[tuple[tuple[int, ...], bytes]],
    error_status: int = 0,
    error_index: int = 0,
) -> bytes:
    """The Response PDU message for ``request``; varbind values already encoded."""
    binds = b"".join(
        tlv(SEQUENCE, tlv(OBJECT_ID, oid_body(oid)) + value) for oid, value in varbinds
    )
    pdu = tlv(
        RESPONSE,
        tlv(INTEGER, integer_body(request.request_id))
        + tlv(INTEGER, integer_body(error_status))
        + tlv(INTEGER, integer_body(error_index))
        + tlv(SEQUENCE, binds),
    )
    return tlv(
        SEQUENCE,
        tlv(INTEGER, integer_body(request.version)) + tlv(OCTET_STRING, request.community) + pdu,
    )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def tlv(self) -> tuple[int, bytes]:
        data, at = self.data, self.at
        if at + 2 > len(data):
            raise BerError("truncated")
        tag, first = data[at], data[at + 1]
        at += 2
        if first & 0x80:
            size = first & 0x7F
            if not 0 < size <= 4 or at + size > len(data):
                raise BerError("bad length")
            length = int.from_bytes(data[at : at + size], "big")
            at += size
        else:
            length = first
        if at + length > len(data):
            raise BerError("truncated")
        self.at = at + length
        return tag, data[at : at + length]

    def expect(self, tag: int) -> bytes:
        found, body = self.tlv()
        if found != tag:
            raise BerError(f"expected tag {tag:#x}, got {found:#x}")
        return body


def _int(body: bytes) -> int:
    return int.from_bytes(body, "big", signed=True)


def _oid(body: bytes) -> tuple[int, ...]:
    arcs: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise BerError("empty OID")
    first = arcs[0]
    head = (min(first // 40, 2), first - 40 * min(first // 40, 2))
    return (*head, *arcs[1:])


def decode_request(data: bytes) -> Request:
    """A v1/v2c GET, GETNEXT or GETBULK; BerError for anything else."""
    message = _Reader(_Reader(data).expect(SEQUENCE))
    version = _int(message.expect(INTEGER))
    if version not in (0, 1):
        raise BerError(f"SNMP version {version} is not v1/v2c")
    community = message.expect(OCTET_STRING)
    pdu_type, body = message.tlv()
    if pdu_type not in (GET, GET_NEXT, GET_BULK):
        raise BerError(f"PDU type {pdu_type:#x} is not a read request")
    pdu = _Reader(body)
    request_id = _int(pdu.expect(INTEGER))
    second = _int(pdu.expect(INTEGER))
    third = _int(pdu.expect(INTEGER))
    binds = _Reader(pdu.expect(SEQUENCE))
    oids = []
    while binds.at < len(binds.data):
        bind = _Reader(binds.expect(SEQUENCE))
        oids.append(_oid(bind.expect(OBJECT_ID)))
    bulk = pdu_type == GET_BULK
    return Request(
        version=version,
        community=community,
        pdu_type=pdu_type,
        request_id=request_id,
        non_repeaters=second if bulk else 0,
        max_repetitions=third if bulk else 0,
        oids=tuple(oids),
    )
