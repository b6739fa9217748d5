"""SNMP values as plain data: a kind and a Python value, or ``UNSUPPORTED``.

The client converts pysnmp's objects here once, so the families decode plain data (and the
decoders can be property-tested without an agent). ``noSuchObject``, ``noSuchInstance``
and ``endOfMibView`` become ``UNSUPPORTED``: an object the agent lacks is never a zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from pysnmp.proto import rfc1902, rfc1905

ValueKind = Literal[
    "integer", "counter32", "counter64", "gauge", "timeticks", "octets", "oid", "ip", "null"
]
INTEGER_KINDS: Final = frozenset({"integer", "counter32", "counter64", "gauge", "timeticks"})


class Unsupported:
    """The agent does not have this object (noSuchObject / noSuchInstance / endOfMibView)."""

    _instance: Unsupported | None = None

    def __new__(cls) -> Unsupported:
        """One shared instance."""
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSUPPORTED"

    def __bool__(self) -> bool:
        return False


UNSUPPORTED: Final = Unsupported()


@dataclass(frozen=True, slots=True)
class SnmpValue:
    """One object's value as the agent sent it: its SMI kind and the Python value."""

    kind: ValueKind
    value: int | bytes | str | None


class WrongTypeError(ValueError):
    """An object came back with another SMI type than its MIB defines."""


def from_pysnmp(value: Any) -> SnmpValue | Unsupported:
    """A pysnmp value as plain data (the one place that knows pysnmp's classes)."""
    if isinstance(value, rfc1905.NoSuchObject | rfc1905.NoSuchInstance | rfc1905.EndOfMibView):
        return UNSUPPORTED
    # Order matters: the SMI's application types subclass Integer32 / OctetString's bases.
    if isinstance(value, rfc1902.Counter64):
        return SnmpValue("counter64", int(value))
    if isinstance(value, rfc1902.Counter32):
        return SnmpValue("counter32", int(value))
    if isinstance(value, rfc1902.Gauge32 | rfc1902.Unsigned32):
        return SnmpValue("gauge", int(value))
    if isinstance(value, rfc1902.TimeTicks):
        return SnmpValue("timeticks", int(value))
    if isinstance(value, rfc1902.IpAddress):
        return SnmpValue("ip", bytes(value))
    if isinstance(value, rfc1902.Integer32):
        return SnmpValue("integer", int(value))
    if isinstance(value, rfc1902.OctetString):
        return SnmpValue("octets", bytes(value))
    if isinstance(value, rfc1902.ObjectIdentifier):
        return SnmpValue("oid", str(value))
    return SnmpValue("null", None)


def integer(value: SnmpValue | Unsupported, name: str) -> int | Unsupported:
    """An integer-like object's value; WrongTypeError naming the object otherwise."""
    if isinstance(value, Unsupported):
        return value
    if value.kind not in INTEGER_KINDS or not isinstance(value.value, int):
        raise WrongTypeError(f"{name} came back as {value.kind}, expected an integer")
    return value.value


def octets(value: SnmpValue | Unsupported, name: str) -> bytes | Unsupported:
    """An OCTET STRING's bytes (bitmask groups are sometimes sent this way)."""
    if isinstance(value, Unsupported):
        return value
    if value.kind != "octets" or not isinstance(value.value, bytes):
        raise WrongTypeError(f"{name} came back as {value.kind}, expected an octet string")
    return value.value


def text(value: SnmpValue | Unsupported, name: str) -> str | Unsupported:
    """An OCTET STRING as text (undecodable bytes replaced)."""
    raw = octets(value, name)
    return raw if isinstance(raw, Unsupported) else raw.decode("utf-8", "replace")
