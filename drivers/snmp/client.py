"""One SNMP engine per family: GET and table walks with timeout, retries, backoff, a limit.

Every request carries its own per-attempt timeout; retries wait ``backoff_s x 2^(n-1)``
first. A semaphore bounds the requests in flight, so 2,300 targets share one socket
without a burst the agents (or the socket buffer) cannot take. Every failure becomes an
``SnmpError`` naming the device and a cause that never holds a key or a community.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Final
from weakref import WeakKeyDictionary

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.proto import errind
from pysnmp.proto.api import v2c
from pysnmp.proto.error import StatusInformation
from pysnmp.proto.proxy import rfc2576

from drivers.framework import DriverError
from drivers.patient_timeout import patient_timeout
from drivers.snmp.target import SnmpTargetConfig
from drivers.snmp.values import UNSUPPORTED, SnmpValue, Unsupported, from_pysnmp

log = logging.getLogger(__name__)
# Answers in flight share one socket buffer: bounded so a burst of answers fits in it.
DEFAULT_IN_FLIGHT: Final = 64
SUSPECT_IN_FLIGHT: Final = 16
RECEIVE_BUFFER_BYTES: Final = 4 * 1024 * 1024
MAX_WALK_REQUESTS: Final = 64  # a table walk that does not end is cut, never endless
BULK_VARBINDS_MAX: Final = 48  # per GETBULK answer: small datagrams, little BER to decode
V3_AUTH: Final = {
    "md5": config.USM_AUTH_HMAC96_MD5,
    "sha": config.USM_AUTH_HMAC96_SHA,
    "sha224": config.USM_AUTH_HMAC128_SHA224,
    "sha256": config.USM_AUTH_HMAC192_SHA256,
    "sha384": config.USM_AUTH_HMAC256_SHA384,
    "sha512": config.USM_AUTH_HMAC384_SHA512,
}
V3_PRIV: Final = {
    "des": config.USM_PRIV_CBC56_DES,
    "aes": config.USM_PRIV_CFB128_AES,
    "aes192": config.USM_PRIV_CFB192_AES,
    "aes256": config.USM_PRIV_CFB256_AES,
}
NO_AUTH_NO_PRIV: Final = 1  # RFC 3411 securityLevel values, as pysnmp compares them
AUTH_PRIV: Final = 3
GET_PDU: Final = v2c.GetRequestPDU()
NEXT_PDU: Final = v2c.GetNextRequestPDU()
BULK_PDU: Final = v2c.GetBulkRequestPDU()
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
RETRIED: Final = (errind.RequestTimedOut,)
DISCOVERY: Final = (errind.NotInTimeWindow, errind.UnknownEngineID)
DISCOVERY_STEPS: Final = 4


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
        self.suspect_limit = asyncio.Semaphore(max(1, min(SUSPECT_IN_FLIGHT, in_flight // 4)))
        self.suspects: set[tuple[str, int]] = set()  # no answer last time
        self.requests = 0
        self.failures = 0
        self._security_names: dict[tuple[object, ...], tuple[int, int, str, int]] = {}
        self._transport_open = False

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
        context = target.context.encode()
        # Numeric OIDs as they go on the wire: no MIB resolution per request (hlapi's
        # ObjectIdentity path resolves every OID against the MIB tree, the poller's hot spot).
        var_binds = [(v2c.ObjectIdentifier(oid), v2c.null) for oid in oids]
        # max-repetitions counts rows of every column: bound the whole answer as well.
        repetitions = max(1, min(target.max_repetitions, BULK_VARBINDS_MAX // max(columns, 1)))
        if rows is not None:
            repetitions = max(1, min(repetitions, rows))
        last = "no answer"
        address = (target.host, target.port)
        attempt = discovery = 0
        # A target silent last time gets one probe per poll until it answers again (the
        # agent's breaker spaces the polls): its retries would only cost the others time.
        retries = 0 if address in self.suspects else target.retries
        while attempt <= retries:
            if attempt and not discovery:
                await asyncio.sleep(target.backoff_s * 2 ** (attempt - 1))
            # Targets that went silent last time wait in a small pool of their own: 2 %
            # silent APs holding their slots for whole timeouts would stall everyone.
            limit = self.suspect_limit if address in self.suspects else self.limit
            self.requests += 1
            try:
                async with limit, patient_timeout(target.request_timeout_s * 2 + 1):
                    result = await self._send(
                        op, target, context, var_binds, non_repeaters, repetitions
                    )
            except TimeoutError:
                last = "no answer (timeout)"
                attempt, discovery = attempt + 1, 0
                continue
            except Exception as err:  # pysnmp raises PySnmpError and its own bugs here
                self.failures += 1
                raise SnmpError(device_id, f"SNMP request failed: {type(err).__name__}") from err
            indication, status, index, answer = result
            if indication:
                last = describe(indication)
                if isinstance(indication, DISCOVERY) and discovery < DISCOVERY_STEPS:
                    discovery += 1  # SNMPv3 engine discovery / time sync: ask again at once
                    continue
                if isinstance(indication, RETRIED):
                    attempt, discovery = attempt + 1, 0
                    continue
                self.failures += 1
                raise SnmpError(device_id, last)
            if status:
                self.failures += 1
                name = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
                raise PduError(device_id, pdu_error(name, int(index), oids), str(name), int(index))
            self.suspects.discard(address)
            return tuple(answer)
        self.failures += 1
        self.suspects.add(address)
        hint = ""
        if target.version == "3" and last.startswith("no answer"):
            # net-snmp drops a PDU it cannot decrypt without a report: silence is the symptom.
            hint = " (SNMPv3: a wrong privacy key or protocol also looks like this)"
        raise SnmpError(
            device_id,
            f"{last} from {target.address} after {attempt} {'try' if attempt == 1 else 'tries'}"
            f"{hint}",
        )

    def _send(
        self,
        op: str,
        target: SnmpTargetConfig,
        context: bytes,
        var_binds: list[tuple[Any, Any]],
        non_repeaters: int,
        repetitions: int,
    ) -> asyncio.Future[tuple[Any, Any, Any, Any]]:
        """One request through pysnmp's message dispatcher, answered through a future.

        pysnmp's command generators look every target up in its SNMP-TARGET-MIB, and
        adding a row there costs more the more rows it holds (2,300 APs: minutes). The
        dispatcher takes the transport address directly; the credentials are configured
        once per community or user (``security_for``).
        """
        model, security_model, name, level = self.security_for(target)
        # pysnmp keys its security tables by the SNMP string, not a Python str.
        security_name = v2c.OctetString(name)
        pdu = (GET_PDU if op == "get" else NEXT_PDU if op == "next" else BULK_PDU).clone()
        v2c.apiPDU.set_defaults(pdu)
        v2c.apiPDU.set_varbinds(pdu, var_binds)
        if op == "bulk":
            v2c.apiBulkPDU.set_non_repeaters(pdu, non_repeaters)
            v2c.apiBulkPDU.set_max_repetitions(pdu, repetitions)
        sent = rfc2576.v2_to_v1(pdu) if model == 0 else pdu
        future: asyncio.Future[tuple[Any, Any, Any, Any]] = (
            asyncio.get_running_loop().create_future()
        )

        def answered(
            _engine: Any,
            _mp: Any,
            _sm: Any,
            _sn: Any,
            _sl: Any,
            _ce: Any,
            _cn: Any,
            _version: Any,
            response: Any,
            status: Any,
            _handle: Any,
            _ctx: Any,
        ) -> None:
            if future.done():
                return
            if status:
                future.set_result((status["errorIndication"], 0, 0, ()))
                return
            if model == 0:
                response = rfc2576.v1_to_v2(response, pdu)
            if v2c.apiPDU.get_request_id(response) != v2c.apiPDU.get_request_id(pdu):
                future.set_result((errind.dataMismatch, 0, 0, ()))
                return
            future.set_result(
                (
                    None,
                    v2c.apiPDU.get_error_status(response),
                    v2c.apiPDU.get_error_index(response, muteErrors=True),
                    tuple(v2c.apiPDU.get_varbinds(response)),
                )
            )

        dispatcher = self.engine.transport_dispatcher
        ticks = target.request_timeout_s / dispatcher.get_timer_resolution()
        try:
            self._dispatch(
                model, security_model, security_name, level, target, context, sent, ticks, answered
            )
        except StatusInformation as status:
            # Refused before sending (SNMPv3 discovery under way, an unknown user...).
            future.set_result((status["errorIndication"], 0, 0, ()))
        return future

    def _dispatch(
        self,
        model: int,
        security_model: int,
        security_name: Any,
        level: int,
        target: SnmpTargetConfig,
        context: bytes,
        sent: Any,
        ticks: float,
        answered: Any,
    ) -> None:
        self.engine.message_dispatcher.send_pdu(
            self.engine,
            udp.DOMAIN_NAME,
            (target.host, target.port),
            model,
            security_model,
            security_name,
            level,
            None,
            context,
            0 if model == 0 else 1,
            sent,
            True,
            ticks,
            answered,
            None,
        )

    def ensure_transport(self) -> None:
        """The engine's client socket, opened once (before a trap receiver's, so that
        removing those never leaves pysnmp without a transport, which closes its dispatcher).
        """
        if not self._transport_open:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            # Answers of every target land here: a big buffer rides out bursts (the kernel
            # caps it at net.core.rmem_max; docs/drivers/wifi.md says when to raise that).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            sock.bind(("0.0.0.0", 0))  # answers come from the field network
            sock.setblocking(False)
            transport = udp.UdpAsyncioTransport().open_server_mode(sock=sock)
            config.add_transport(self.engine, udp.DOMAIN_NAME, transport)
            self._transport_open = True

    def security_for(self, target: SnmpTargetConfig) -> tuple[int, int, str, int]:
        """(mp model, security model, security name, level); configured once per credential.

        One security name per community whatever the version: pysnmp maps an answer's
        community back to the first name that has it, so two names for one community
        would make v1 and v2c answers mismatch their requests.
        """
        v1_model = 0 if target.version == "1" else 1
        key = auth_key(target) if target.version == "3" else ("c", target.community)
        known = self._security_names.get(key)
        if known is None:
            self.ensure_transport()
            name = f"{self.family}-{len(self._security_names)}"
            if target.version == "3":
                # USM finds the user by its name during engine discovery: they must match.
                name = target.user or name
                assert target.user is not None
                assert target.auth_key is not None
                assert target.priv_key is not None
                config.add_v3_user(
                    self.engine,
                    target.user,
                    V3_AUTH[target.auth_protocol],
                    target.auth_key.get_secret_value(),
                    V3_PRIV[target.priv_protocol],
                    target.priv_key.get_secret_value(),
                    securityName=name,
                )
                known = (3, 3, name, AUTH_PRIV)
            else:
                config.add_v1_system(self.engine, name, target.community.get_secret_value())
                known = (1, 2, name, NO_AUTH_NO_PRIV)
            self._security_names[key] = known
        if target.version == "3":
            return known
        return (v1_model, v1_model + 1, known[2], NO_AUTH_NO_PRIV)

    def close(self) -> None:
        """Close the engine's socket (first, so a late answer finds no reader, not an error)."""
        if self._transport_open:
            transport = config.get_transport(self.engine, udp.DOMAIN_NAME)
            if transport is not None:
                transport.close_transport()
            self._transport_open = False
        self.engine.close_dispatcher()


def pdu_error(name: str, index: int, oids: Sequence[str]) -> str:
    """A PDU error status (genErr, tooBig, noSuchName...) naming the object it points at."""
    where = f" at {oids[index - 1]}" if 0 < index <= len(oids) else ""
    return f"agent answered {name}{where}"


def auth_key(target: SnmpTargetConfig) -> tuple[object, ...]:
    """What tells one credential from another (kept in memory only, never printed)."""
    return (
        target.version,
        target.community.get_secret_value(),
        target.user,
        target.auth_protocol,
        target.auth_key.get_secret_value() if target.auth_key else None,
        target.priv_protocol,
        target.priv_key.get_secret_value() if target.priv_key else None,
    )


_CLIENTS: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SnmpClient]] = WeakKeyDictionary()


def client_for_family(family: str) -> SnmpClient:
    """The family's shared client on the running event loop (an engine binds to one loop)."""
    loop = asyncio.get_running_loop()
    clients = _CLIENTS.setdefault(loop, {})
    client = clients.get(family)
    if client is None:
        client = clients[family] = SnmpClient(family)
    return client


def close_family_client(family: str) -> None:
    """Close ``family``'s client of the running loop, if any (a later use opens a new one)."""
    client = _CLIENTS.get(asyncio.get_running_loop(), {}).pop(family, None)
    if client is not None:
        client.close()


def family_closer(family: str) -> Callable[[], None]:
    """The family's ``DriverFamily.close`` hook: closes its client of the running loop."""
    return partial(close_family_client, family)


def close_family_clients() -> None:
    """Close every family client of the running loop (its engine's socket and timer)."""
    clients = _CLIENTS.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        client.close()
