"""The MQTT wire format the hub's intake speaks: packet types, CONNACK codes, packets out.

Pure bytes in, bytes out, no sockets: ``mqtt_intake.py`` owns the connection and reads
the incoming stream (its hot loop parses PUBLISH inline, see ``MqttIntake._dispatch``);
this module builds what it sends (CONNECT, SUBSCRIBE, QoS 0 PUBLISH, PUBACK and the
QoS 2 answers) and maps a CONNACK onto MQTT 5 reason codes. The fleet publisher bench
builds its own packets from ``mqtt_string`` and ``varint_bytes``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only for annotations: the options belong to the client, which imports this module.
    from hub.ingest.mqtt_intake import IntakeOptions

# Packet types (high nibble of the fixed header).
CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
PUBREC, PUBREL, PUBCOMP = 0x50, 0x60, 0x70
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0
# MQTT 5 property identifiers used in CONNECT.
PROP_SESSION_EXPIRY, PROP_RECEIVE_MAXIMUM, PROP_MAXIMUM_PACKET_SIZE = 0x11, 0x21, 0x27
# CONNACK reason codes, v5 numbering; 3.1.1 return codes are mapped onto them.
AUTH_FAILURE_CODES = frozenset({0x86, 0x87})
UNSUPPORTED_PROTOCOL = 0x84
_V311_CONNACK = {1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
_CONNACK_TEXT = {
    0x80: "unspecified error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x8A: "banned",
}
# Neither has a body: the same two bytes in 3.1.1 and 5 (DISCONNECT: normal disconnection).
PINGREQ_PACKET, DISCONNECT_PACKET = bytes([PINGREQ, 0]), bytes([DISCONNECT, 0])
_PUBACK = struct.Struct("!BBH")
_U16 = struct.Struct("!H")


def varint_bytes(value: int) -> bytes:
    """An MQTT variable byte integer (the remaining length of a packet)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packet(header: int, body: bytes) -> bytes:
    return bytes([header]) + varint_bytes(len(body)) + body


def mqtt_string(value: str) -> bytes:
    """An MQTT UTF-8 string: two bytes of length, then the bytes."""
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65,535 bytes")
    return _U16.pack(len(raw)) + raw


def connect_packet(options: IntakeOptions) -> bytes:
    """CONNECT for a persistent session (clean start off), with user name and password."""
    v5 = options.protocol == "5"
    flags = 0x00  # clean session / clean start off: the broker keeps our queue
    if options.username is not None:
        flags |= 0x80
        if options.password is not None:
            flags |= 0x40
    body = mqtt_string("MQTT") + bytes([5 if v5 else 4, flags]) + _U16.pack(options.keepalive_s)
    if v5:
        props = bytes([PROP_SESSION_EXPIRY]) + struct.pack("!I", options.session_expiry_s)
        props += bytes([PROP_RECEIVE_MAXIMUM]) + _U16.pack(options.receive_maximum)
        props += bytes([PROP_MAXIMUM_PACKET_SIZE]) + struct.pack("!I", options.max_packet_bytes)
        body += varint_bytes(len(props)) + props
    body += mqtt_string(options.client_id)
    if options.username is not None:
        body += mqtt_string(options.username)
        if options.password is not None:
            body += mqtt_string(options.password)
    return _packet(CONNECT, body)


def connack_result(body: bytes, protocol: str) -> tuple[bool, int]:
    """``(session present, reason code)`` of a CONNACK body; the code in v5 numbering, 0 ok.

    A broker that does not speak MQTT 5 may answer a v5 CONNECT with a 3.1.1 return code
    (aedes sends 0x01): that is mapped to a refusal too.
    """
    code = body[1]
    if protocol != "5" or code < 0x80:
        code = _V311_CONNACK.get(code, 0x80 if code else 0)
    return bool(body[0] & 0x01), code


def connack_text(code: int) -> str:
    """What a CONNACK reason code means, or the code in hex when it is not a known one."""
    return _CONNACK_TEXT.get(code, hex(code))


def subscribe_packet(
    options: IntakeOptions, packet_id: int, qos: int = 1, extra: Sequence[str] = ()
) -> bytes:
    """SUBSCRIBE to every topic filter (and the ``extra`` ones) at ``qos``."""
    body = _U16.pack(packet_id)
    if options.protocol == "5":
        body += b"\x00"  # no properties
    for topic in (*options.topics, *extra):
        body += mqtt_string(topic) + bytes([qos])
    return _packet(SUBSCRIBE, body)


def shared_group(topics: Sequence[str]) -> str | None:
    """The group of the first ``$share/<group>/...`` filter, if any."""
    for topic in topics:
        if topic.startswith("$share/"):
            return topic.split("/", 2)[1]
    return None


def publish_packet(options: IntakeOptions, topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH, not retained."""
    body = mqtt_string(topic) + (b"\x00" if options.protocol == "5" else b"") + payload
    return _packet(PUBLISH, body)


def puback_packets(packet_ids: Sequence[int]) -> bytes:
    """PUBACKs for many packet ids as one buffer (same 4 bytes in 3.1.1 and 5)."""
    pack = _PUBACK.pack
    return b"".join([pack(PUBACK, 2, packet_id) for packet_id in packet_ids])


def ack_packet(kind: int, packet_id: int) -> bytes:
    """One PUBACK, PUBREC or PUBCOMP (``kind``) without properties."""
    return _PUBACK.pack(kind, 2, packet_id)
