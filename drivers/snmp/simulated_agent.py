"""Simulated SNMP v1/v2c agents: many targets, one UDP port each, in one process.

Each target is a ``SimulatedTarget`` whose ``objects()`` returns its MIB view at the time
of the request; the agent answers GET, GETNEXT and GETBULK with pysnmp's protocol
modules (BER over UDP, the same codec the poller uses), so the drivers under test speak
real SNMP to it. Faults are part of the target: ``silent`` (drops requests, a dead AP),
``gen_err`` (answers genErr), wrong types and missing rows come from ``objects()``.

One process serves thousands of targets (the bench, the demo city); SNMPv3 peers in the
tests are Debian's snmpd and pysnmp's own engine.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pyasn1.codec.ber import decoder, encoder  # type: ignore[import-untyped]
from pysnmp.proto import api
from pysnmp.proto.api import v2c

log = logging.getLogger(__name__)
ObjectKind = Literal["integer", "counter32", "counter64", "gauge", "timeticks", "octets", "oid"]
SimValue = tuple[ObjectKind, int | bytes | str]
GEN_ERR: Final = 5
NO_SUCH_NAME: Final = 2
MAX_BULK_VARBINDS: Final = 120
ENCODERS: Final[dict[str, Any]] = {
    "integer": v2c.Integer,
    "counter32": v2c.Counter32,
    "counter64": v2c.Counter64,
    "gauge": v2c.Gauge32,
    "timeticks": v2c.TimeTicks,
    "octets": v2c.OctetString,
    "oid": v2c.ObjectIdentifier,
}


def oid_key(oid: str) -> tuple[int, ...]:
    """A dotted OID as the tuple SNMP orders lexicographically."""
    return tuple(int(part) for part in oid.strip(".").split("."))


@dataclass(slots=True)
class SimulatedTarget:
    """A simulated device: community, faults and its objects (override ``objects``)."""

    community: str = "public"
    silent: bool = False
    gen_err: bool = False
    requests: int = 0
    static: dict[str, SimValue] = field(default_factory=dict)

    def objects(self) -> Mapping[str, SimValue]:
        """The MIB view now: numeric OID -> (kind, value)."""
        return self.static


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, target: SimulatedTarget) -> None:
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.target.requests += 1
        if self.target.silent:
            return
        try:
            reply = answer(self.target, data)
        except Exception as err:  # a malformed datagram must not stop the agent
            log.debug("simulated agent: bad request from %s: %s", addr, err)
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def answer(target: SimulatedTarget, data: bytes) -> bytes | None:
    """The encoded response to one request datagram (None: wrong community, ignored)."""
    version = int(api.decodeMessageVersion(data))
    module = api.PROTOCOL_MODULES[version]
    request, _ = decoder.decode(data, asn1Spec=module.Message())
    if str(module.apiMessage.get_community(request)) != target.community:
        return None  # as a real agent: a wrong community gets no answer
    response = module.apiMessage.get_response(request)
    pdu = module.apiMessage.get_pdu(request)
    rsp_pdu = module.apiMessage.get_pdu(response)
    asked = [str(oid) for oid, _ in module.apiPDU.get_varbinds(pdu)]
    if target.gen_err:
        module.apiPDU.set_error_status(rsp_pdu, GEN_ERR)
        module.apiPDU.set_error_index(rsp_pdu, 1)
        module.apiPDU.set_varbinds(rsp_pdu, [(oid, v2c.null) for oid in asked])
        return bytes(encoder.encode(response))
    v1 = version == api.SNMP_VERSION_1
    # SNMPv1 has no Counter64: a v1 agent leaves those objects out of its view (RFC 3584).
    view = {o: v for o, v in target.objects().items() if not (v1 and v[0] == "counter64")}
    keys = sorted(oid_key(o) for o in view)
    values = {oid_key(o): v for o, v in view.items()}
    out: list[tuple[str, Any]] = []
    if pdu.isSameTypeWith(module.GetRequestPDU()):
        for position, oid in enumerate(asked, start=1):
            value = values.get(oid_key(oid))
            if value is None:
                if v1:
                    return _v1_error(module, response, rsp_pdu, asked, position)
                out.append((oid, v2c.NoSuchInstance("")))
            else:
                out.append((oid, encode(value)))
    elif pdu.isSameTypeWith(module.GetNextRequestPDU()):
        for position, oid in enumerate(asked, start=1):
            found = _next(keys, oid_key(oid))
            if found is None:
                if v1:
                    return _v1_error(module, response, rsp_pdu, asked, position)
                out.append((oid, v2c.EndOfMibView("")))
            else:
                out.append((_dotted(found), encode(values[found])))
    elif not v1 and pdu.isSameTypeWith(v2c.GetBulkRequestPDU()):
        non_repeaters = int(v2c.apiBulkPDU.get_non_repeaters(pdu))
        repetitions = int(v2c.apiBulkPDU.get_max_repetitions(pdu))
        for oid in asked[:non_repeaters]:
            found = _next(keys, oid_key(oid))
            out.append(_bulk_item(oid, found, values))
        cursors = [oid_key(o) for o in asked[non_repeaters:]]
        for _ in range(repetitions):
            if not cursors or len(out) + len(cursors) > MAX_BULK_VARBINDS:
                break
            step: list[tuple[int, ...]] = []
            ended = 0
            for cursor in cursors:
                found = _next(keys, cursor)
                out.append(_bulk_item(_dotted(cursor), found, values))
                ended += found is None
                step.append(found if found is not None else cursor)
            cursors = step
            if ended == len(cursors):
                break
    else:
        return None
    module.apiPDU.set_varbinds(rsp_pdu, out)
    return bytes(encoder.encode(response))


def encode(value: SimValue) -> Any:
    """A simulated value as its pysnmp type."""
    kind, raw = value
    return ENCODERS[kind](raw)


def _next(keys: list[tuple[int, ...]], after: tuple[int, ...]) -> tuple[int, ...] | None:
    position = bisect.bisect_right(keys, after)
    return keys[position] if position < len(keys) else None


def _dotted(key: tuple[int, ...]) -> str:
    return ".".join(str(p) for p in key)


def _bulk_item(
    asked: str, found: tuple[int, ...] | None, values: Mapping[tuple[int, ...], SimValue]
) -> tuple[str, Any]:
    if found is None:
        return asked, v2c.EndOfMibView("")
    return _dotted(found), encode(values[found])


def _v1_error(module: Any, response: Any, pdu: Any, asked: list[str], index: int) -> bytes:
    module.apiPDU.set_error_status(pdu, NO_SUCH_NAME)
    module.apiPDU.set_error_index(pdu, index)
    module.apiPDU.set_varbinds(pdu, [(oid, v2c.null) for oid in asked])
    return bytes(encoder.encode(response))


class SimulatedAgents:
    """Serves targets on loopback, one UDP port each (the OS picks free ports)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._transports: list[asyncio.DatagramTransport] = []

    async def serve(self, target: SimulatedTarget, port: int = 0, host: str | None = None) -> int:
        """Start answering for ``target`` (port 0: a free one); returns its port."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Endpoint(target), local_addr=(host or self.host, port)
        )
        self._transports.append(transport)
        return int(transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        """Stop every endpoint."""
        for transport in self._transports:
            transport.close()
        self._transports.clear()
