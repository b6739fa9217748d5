"""Simulated SNMP v1/v2c agents: many targets, one UDP port each, in one process.

Each target is a ``SimulatedTarget`` whose ``objects()`` returns its MIB view at the time
of the request; the agent answers GET, GETNEXT and GETBULK as RFC 3416 says (BER over
UDP by ``ber_codec``, whose bytes the tests check against pysnmp's codec), so the drivers
under test, pysnmp and net-snmp's tools all speak real SNMP to it. Faults are part of the
target: ``silent`` (drops requests, a dead AP), ``delay_s`` (answers that late, a slow
one), ``gen_err`` (answers genErr), wrong types and missing rows come from ``objects()``.

One process serves thousands of targets (the bench, the demo city); SNMPv3 peers in the
tests are Debian's snmpd (and snmptrap for the trap receiver).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from drivers.simulation import PollCounter
from drivers.snmp import ber_codec as ber

log = logging.getLogger(__name__)
ObjectKind = Literal["integer", "counter32", "counter64", "gauge", "timeticks", "octets", "oid"]
SimValue = tuple[ObjectKind, int | bytes | str]
GEN_ERR: Final = 5
NO_SUCH_NAME: Final = 2
MAX_BULK_VARBINDS: Final = 120
NULL_VALUE: Final = ber.value_tlv("null", None)
NO_SUCH_INSTANCE: Final = ber.value_tlv("noSuchInstance", None)
END_OF_MIB: Final = ber.value_tlv("endOfMibView", None)


@functools.lru_cache(maxsize=65536)
def oid_key(oid: str) -> tuple[int, ...]:
    """A dotted OID as the tuple SNMP orders lexicographically (cached: OIDs repeat)."""
    return tuple(int(part) for part in oid.strip(".").split("."))


@dataclass(slots=True)
class SimulatedTarget:
    """A simulated device: community, faults and its objects (override ``objects``)."""

    community: str = "public"
    silent: bool = False
    delay_s: float = 0.0
    gen_err: bool = False
    requests: int = 0
    static: dict[str, SimValue] = field(default_factory=dict)
    # Set by a fleet simulator: groups the requests into polls, counts completed and failed.
    polls: PollCounter | None = None

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
        target = self.target
        target.requests += 1
        polls = target.polls
        if target.silent:
            if polls is not None:
                polls.request(answered=False)
            return
        try:
            reply = answer(target, data)
        except (ber.BerError, ValueError) as err:  # a malformed datagram must not stop it
            log.debug("simulated agent: bad request from %s: %s", addr, err)
            return
        if reply is None or self.transport is None:
            if polls is not None:
                polls.request(answered=False)  # a wrong community: the poll gets nothing
            return
        if target.delay_s > 0:
            # A slow agent: the answer leaves later, the endpoint keeps serving meanwhile.
            loop = asyncio.get_running_loop()
            loop.call_later(target.delay_s, self.transport.sendto, reply, addr)
        else:
            self.transport.sendto(reply, addr)
        if polls is not None:
            polls.request(answered=True)


def answer(target: SimulatedTarget, data: bytes) -> bytes | None:
    """The encoded response to one request datagram (None: wrong community, ignored)."""
    request = ber.decode_request(data)
    if request.community != target.community.encode():
        return None  # as a real agent: a wrong community gets no answer
    asked = request.oids
    if target.gen_err:
        return ber.response(request, [(o, NULL_VALUE) for o in asked], GEN_ERR, 1)
    v1 = request.version == 0
    # SNMPv1 has no Counter64: a v1 agent leaves those objects out of its view (RFC 3584).
    values = {
        oid_key(o): v for o, v in target.objects().items() if not (v1 and v[0] == "counter64")
    }
    keys = sorted(values)
    out: list[tuple[tuple[int, ...], bytes]] = []
    if request.pdu_type == ber.GET:
        for position, oid in enumerate(asked, start=1):
            value = values.get(oid)
            if value is None:
                if v1:
                    return ber.response(
                        request, [(o, NULL_VALUE) for o in asked], NO_SUCH_NAME, position
                    )
                out.append((oid, NO_SUCH_INSTANCE))
            else:
                out.append((oid, ber.value_tlv(*value)))
    elif request.pdu_type == ber.GET_NEXT:
        for position, oid in enumerate(asked, start=1):
            found = _next(keys, oid)
            if found is None:
                if v1:
                    return ber.response(
                        request, [(o, NULL_VALUE) for o in asked], NO_SUCH_NAME, position
                    )
                out.append((oid, END_OF_MIB))
            else:
                out.append((found, ber.value_tlv(*values[found])))
    elif not v1:
        non_repeaters = max(0, min(request.non_repeaters, len(asked)))
        for oid in asked[:non_repeaters]:
            out.append(_bulk_item(oid, _next(keys, oid), values))
        cursors = list(asked[non_repeaters:])
        for _ in range(max(0, request.max_repetitions)):
            if not cursors or len(out) + len(cursors) > MAX_BULK_VARBINDS:
                break
            step: list[tuple[int, ...]] = []
            ended = 0
            for cursor in cursors:
                found = _next(keys, cursor)
                out.append(_bulk_item(cursor, found, values))
                ended += found is None
                step.append(found if found is not None else cursor)
            cursors = step
            if ended == len(cursors):
                break
    else:
        return None
    return ber.response(request, out)


def _next(keys: list[tuple[int, ...]], after: tuple[int, ...]) -> tuple[int, ...] | None:
    position = bisect.bisect_right(keys, after)
    return keys[position] if position < len(keys) else None


def _bulk_item(
    asked: tuple[int, ...],
    found: tuple[int, ...] | None,
    values: Mapping[tuple[int, ...], SimValue],
) -> tuple[tuple[int, ...], bytes]:
    if found is None:
        return asked, END_OF_MIB
    return found, ber.value_tlv(*values[found])


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
