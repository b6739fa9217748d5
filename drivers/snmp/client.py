"""One SNMP engine per family: GET and table walks with timeout, retries, backoff, a limit.

Every request carries its own per-attempt timeout; retries wait ``backoff_s x 2^(n-1)``
first. A semaphore bounds the requests in flight, so 2,300 targets share one socket
without a burst the agents (or the socket buffer) cannot take. Every failure becomes an
``SnmpError`` naming the device and a cause that never holds a key or a community.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final
from weakref import WeakKeyDictionary

from pysnmp.entity.rfc3413 import cmdgen
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    SnmpEngine,
    UdpTransportTarget,
    UsmUserData,
    usm3DESEDEPrivProtocol,
    usmAesCfb128Protocol,
    usmAesCfb192Protocol,
    usmAesCfb256Protocol,
    usmDESPrivProtocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
)
from pysnmp.hlapi.v3arch.asyncio.cmdgen import LCD
from pysnmp.proto import errind
from pysnmp.proto.api import v2c

from drivers.framework import DriverError
from drivers.snmp.target import SnmpTargetConfig
from drivers.snmp.values import UNSUPPORTED, SnmpValue, Unsupported, from_pysnmp

log = logging.getLogger(__name__)
# Answers in flight share one socket buffer (~208 KiB by default): far more would drop some.
DEFAULT_IN_FLIGHT: Final = 64
MAX_WALK_REQUESTS: Final = 64  # a table walk that does not end is cut, never endless
BULK_VARBINDS_MAX: Final = 48  # per GETBULK answer: small datagrams, little BER to decode
AUTH_PROTOCOLS: Final = {
    "md5": usmHMACMD5AuthProtocol,
    "sha": usmHMACSHAAuthProtocol,
    "sha224": usmHMAC128SHA224AuthProtocol,
    "sha256": usmHMAC192SHA256AuthProtocol,
    "sha384": usmHMAC256SHA384AuthProtocol,
    "sha512": usmHMAC384SHA512AuthProtocol,
}
PRIV_PROTOCOLS: Final = {
    "des": usmDESPrivProtocol,
    "3des": usm3DESEDEPrivProtocol,
    "aes": usmAesCfb128Protocol,
    "aes192": usmAesCfb192Protocol,
    "aes256": usmAesCfb256Protocol,
}
# pysnmp's error indications, in words an operator can act on (no key ever appears).
CAUSES: Final[dict[type[errind.ErrorIndication], str]] = {
    errind.RequestTimedOut: "no answer (timeout)",
    errind.WrongDigest: "SNMPv3 authentication failed: wrong auth key or auth protocol",
    errind.AuthenticationFailure: "SNMPv3 authentication failed: wrong auth key",
    errind.AuthenticationError: "SNMPv3 authentication failed: wrong auth key",
    errind.DecryptionError: "SNMPv3 decryption failed: wrong privacy key or privacy protocol",
    errind.UnknownUserName: "SNMPv3 user unknown to the agent",
    errind.UnknownSecurityName: "SNMPv3 user unknown to the agent",
    errind.UnsupportedSecurityLevel: "the agent refuses authPriv for this user",
    errind.NotInTimeWindow: "SNMPv3 time window mismatch (agent rebooted?), will resync",
    errind.EncryptionError: "SNMPv3 privacy unavailable: install the cryptography package",
    errind.UnknownCommunityName: "community refused by the agent",
}
GET: Final = cmdgen.GetCommandGenerator()
NEXT: Final = cmdgen.NextCommandGenerator()
BULK: Final = cmdgen.BulkCommandGenerator()
RETRIED: Final = (errind.RequestTimedOut, errind.NotInTimeWindow, errind.UnknownEngineID)


class SnmpError(DriverError):
    """An SNMP request failed: the device and a cause without secrets."""


class PduError(SnmpError):
    """The agent answered with an error status (genErr, noSuchName, tooBig...)."""

    def __init__(self, device_id: str, cause: str, status: str, index: int) -> None:
        super().__init__(device_id, cause)
        self.status = status
        self.index = index


def describe(indication: object) -> str:
    """An error indication as words; unknown ones by class name, never their arguments."""
    for kind, words in CAUSES.items():
        if isinstance(indication, kind):
            return words
    return f"SNMP error {type(indication).__name__}"


class SnmpClient:
    """One family's SNMP engine: every target of the family shares it and its socket."""

    def __init__(self, family: str, *, in_flight: int = DEFAULT_IN_FLIGHT) -> None:
        self.family = family
        self.engine = SnmpEngine()
        self.limit = asyncio.Semaphore(in_flight)
        self.requests = 0
        self.failures = 0
        self._transports: dict[tuple[str, int, float], UdpTransportTarget] = {}

    async def get(
        self, device_id: str, target: SnmpTargetConfig, oids: Sequence[str]
    ) -> dict[str, SnmpValue | Unsupported]:
        """GET ``oids`` (numeric) in one request: oid -> value or UNSUPPORTED."""
        out: dict[str, SnmpValue | Unsupported] = {oid: UNSUPPORTED for oid in oids}
        asked = list(oids)
        while asked:
            try:
                var_binds = await self._request(device_id, target, "get", asked)
            except PduError as err:
                # SNMPv1 fails the whole GET with noSuchName for one missing object:
                # that object is unsupported, ask again for the others.
                if err.status != "noSuchName" or not 0 < err.index <= len(asked):
                    raise
                del asked[err.index - 1]
                continue
            for oid, value in zip(asked, var_binds, strict=False):
                out[oid] = from_pysnmp(value[1])
            break
        return out

    async def walk(
        self,
        device_id: str,
        target: SnmpTargetConfig,
        columns: Sequence[str],
        *,
        max_rows: int = 512,
    ) -> dict[str, dict[str, SnmpValue | Unsupported]]:
        """Walk table ``columns`` together (GETBULK, GETNEXT on v1): column -> index -> value.

        A column that ends early (a truncated table) just has fewer rows; the caller
        treats a missing row as unsupported, never as zero.
        """
        return (await self.get_and_walk(device_id, target, (), columns, max_rows=max_rows))[1]

    async def get_and_walk(
        self,
        device_id: str,
        target: SnmpTargetConfig,
        scalars: Sequence[str],
        columns: Sequence[str],
        *,
        max_rows: int = 512,
        rows_hint: int | None = None,
    ) -> tuple[dict[str, SnmpValue | Unsupported], dict[str, dict[str, SnmpValue | Unsupported]]]:
        """Scalars (``x.0``) and table columns in as few requests as one GETBULK can take.

        The scalars ride as GETBULK non-repeaters (asking for ``x`` answers ``x.0``), so an
        AP's uptime, interfaces and clients come in one round trip. SNMPv1: GET + GETNEXT.
        ``rows_hint`` (the rows seen last time) sizes the first GETBULK to the table, so a
        small table is not answered with rows of the columns after it.
        """
        values: dict[str, SnmpValue | Unsupported] = {s: UNSUPPORTED for s in scalars}
        if scalars and target.version == "1":
            values = await self.get(device_id, target, scalars)
            scalars = ()
        out: dict[str, dict[str, SnmpValue | Unsupported]] = {c: {} for c in columns}
        cursor = {c: c for c in columns}  # next OID to ask after, per unfinished column
        first = True
        for _ in range(MAX_WALK_REQUESTS):
            leading = list(scalars) if first else []
            if not cursor and not leading:
                break
            first = False
            open_columns = list(cursor)
            asked = [s.removesuffix(".0") for s in leading] + [cursor[c] for c in open_columns]
            op = "next" if target.version == "1" else "bulk"
            try:
                var_binds = await self._request(
                    device_id,
                    target,
                    op,
                    asked,
                    non_repeaters=len(leading),
                    columns=len(cursor),
                    rows=rows_hint + 1 if rows_hint else None,
                )
            except PduError as err:
                # SNMPv1 ends a walk with noSuchName at the column that ran out.
                if err.status != "noSuchName" or not 0 < err.index <= len(open_columns):
                    raise
                cursor.pop(open_columns[err.index - 1])
                continue
            for scalar, (name, value) in zip(leading, var_binds, strict=False):
                if str(name) == scalar:
                    values[scalar] = from_pysnmp(value)
            var_binds = var_binds[len(leading) :]
            finished: set[str] = set()
            width = max(len(open_columns), 1)
            for position, (name, value) in enumerate(var_binds):
                column = open_columns[position % width]
                if column in finished:
                    continue
                oid = str(name)
                plain = from_pysnmp(value)
                prefix = column + "."
                if isinstance(plain, Unsupported) or not oid.startswith(prefix):
                    finished.add(column)
                    continue
                rows = out[column]
                index = oid[len(prefix) :]
                if index in rows or len(rows) >= max_rows:
                    finished.add(column)  # a looping or endless agent
                    continue
                rows[index] = plain
                cursor[column] = oid
            if not var_binds:
                finished.update(open_columns)
            for column in finished:
                cursor.pop(column, None)
        return values, out

    async def _request(
        self,
        device_id: str,
        target: SnmpTargetConfig,
        op: str,
        oids: Sequence[str],
        *,
        non_repeaters: int = 0,
        columns: int = 1,
        rows: int | None = None,
    ) -> tuple[Any, ...]:
        transport = await self._transport(device_id, target)
        auth = auth_data(target)
        context = target.context.encode()
        # Numeric OIDs as they go on the wire: no MIB resolution per request (hlapi's
        # ObjectIdentity path resolves every OID against the MIB tree, the poller's hot spot).
        var_binds = [(v2c.ObjectIdentifier(oid), v2c.null) for oid in oids]
        # max-repetitions counts rows of every column: bound the whole answer as well.
        repetitions = max(1, min(target.max_repetitions, BULK_VARBINDS_MAX // max(columns, 1)))
        if rows is not None:
            repetitions = max(1, min(repetitions, rows))
        last = "no answer"
        for attempt in range(target.retries + 1):
            if attempt:
                await asyncio.sleep(target.backoff_s * 2 ** (attempt - 1))
            async with self.limit:
                self.requests += 1
                try:
                    async with asyncio.timeout(target.request_timeout_s * 2 + 1):
                        result = await self._send(
                            op, auth, transport, context, var_binds, non_repeaters, repetitions
                        )
                except TimeoutError:
                    last = "no answer (timeout)"
                    continue
                except Exception as err:  # pysnmp raises PySnmpError and its own bugs here
                    self.failures += 1
                    raise SnmpError(
                        device_id, f"SNMP request failed: {type(err).__name__}"
                    ) from err
            indication, status, index, answer = result
            if indication:
                last = describe(indication)
                if isinstance(indication, RETRIED):
                    continue
                self.failures += 1
                raise SnmpError(device_id, last)
            if status:
                self.failures += 1
                name = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
                raise PduError(device_id, pdu_error(name, int(index), oids), str(name), int(index))
            return tuple(answer)
        self.failures += 1
        hint = ""
        if target.version == "3" and last.startswith("no answer"):
            # net-snmp drops a PDU it cannot decrypt without a report: silence is the symptom.
            hint = " (SNMPv3: a wrong privacy key or protocol also looks like this)"
        raise SnmpError(
            device_id, f"{last} from {target.address} after {target.retries + 1} tries{hint}"
        )

    def _send(
        self,
        op: str,
        auth: CommunityData | UsmUserData,
        transport: UdpTransportTarget,
        context: bytes,
        var_binds: list[tuple[Any, Any]],
        non_repeaters: int,
        repetitions: int,
    ) -> asyncio.Future[tuple[Any, Any, Any, Any]]:
        """One request on pysnmp's command generators, answered through a future."""
        address_name, _ = LCD.configure(self.engine, auth, transport, context)
        future: asyncio.Future[tuple[Any, Any, Any, Any]] = (
            asyncio.get_running_loop().create_future()
        )

        def done(
            _engine: Any, _handle: Any, indication: Any, status: Any, index: Any, vbs: Any, _c: Any
        ) -> None:
            if not future.done():
                future.set_result((indication, status, index, tuple(vbs or ())))

        if op == "get":
            GET.send_varbinds(self.engine, address_name, None, context, var_binds, done)
        elif op == "next":
            NEXT.send_varbinds(self.engine, address_name, None, context, var_binds, done)
        else:
            BULK.send_varbinds(
                self.engine,
                address_name,
                None,
                context,
                non_repeaters,
                repetitions,
                var_binds,
                done,
            )
        return future

    async def _transport(self, device_id: str, target: SnmpTargetConfig) -> UdpTransportTarget:
        key = (target.host, target.port, target.request_timeout_s)
        transport = self._transports.get(key)
        if transport is None:
            try:
                # retries=0: this client owns retries, with backoff between them.
                transport = await UdpTransportTarget.create(
                    (target.host, target.port), timeout=target.request_timeout_s, retries=0
                )
            except Exception as err:
                raise SnmpError(device_id, f"cannot resolve {target.host}: {err}") from err
            self._transports[key] = transport
        return transport

    def close(self) -> None:
        """Close the engine's socket."""
        self.engine.close_dispatcher()


def pdu_error(name: str, index: int, oids: Sequence[str]) -> str:
    """A PDU error status (genErr, tooBig, noSuchName...) naming the object it points at."""
    where = f" at {oids[index - 1]}" if 0 < index <= len(oids) else ""
    return f"agent answered {name}{where}"


_AUTH_CACHE: dict[tuple[object, ...], CommunityData | UsmUserData] = {}


def auth_data(target: SnmpTargetConfig) -> CommunityData | UsmUserData:
    """The pysnmp credentials of a target (cached: pysnmp configures each once)."""
    key = (
        target.version,
        target.community.get_secret_value(),
        target.user,
        target.auth_protocol,
        target.auth_key.get_secret_value() if target.auth_key else None,
        target.priv_protocol,
        target.priv_key.get_secret_value() if target.priv_key else None,
    )
    cached = _AUTH_CACHE.get(key)
    if cached is not None:
        return cached
    made: CommunityData | UsmUserData
    if target.version == "3":
        # The config's validator made sure of all three.
        assert target.user is not None
        assert target.auth_key is not None
        assert target.priv_key is not None
        made = UsmUserData(
            target.user,
            authKey=target.auth_key.get_secret_value(),
            privKey=target.priv_key.get_secret_value(),
            authProtocol=AUTH_PROTOCOLS[target.auth_protocol],
            privProtocol=PRIV_PROTOCOLS[target.priv_protocol],
        )
    else:
        made = CommunityData(
            target.community.get_secret_value(), mpModel=0 if target.version == "1" else 1
        )
    _AUTH_CACHE[key] = made
    return made


_CLIENTS: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SnmpClient]] = WeakKeyDictionary()


def client_for_family(family: str) -> SnmpClient:
    """The family's shared client on the running event loop (an engine binds to one loop)."""
    loop = asyncio.get_running_loop()
    clients = _CLIENTS.setdefault(loop, {})
    client = clients.get(family)
    if client is None:
        client = clients[family] = SnmpClient(family)
    return client


def close_family_clients() -> None:
    """Close every family client of the running loop (its engine's socket and timer)."""
    clients = _CLIENTS.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        client.close()
