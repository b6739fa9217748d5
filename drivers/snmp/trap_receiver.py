"""An SNMP notification receiver (v1, v2c, v3) whose traps become event Readings.

pysnmp's ``NotificationReceiver`` on the family's own engine: communities and v3 users
come from the devices' configs (a v3 trap needs the sender's engine ID). A trap is
attributed by its source address; one from an address no device has is counted and
logged once per address, never attributed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncGenerator, Callable, Collection, Sequence
from typing import Any, Final

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config
from pysnmp.entity.rfc3413 import ntfrcv
from pysnmp.proto.api import v2c

from drivers.framework import DeviceSpec, DriverConfig, MetricValue, Reading, utc_now
from drivers.snmp.client import SnmpClient, client_for_family
from drivers.snmp.target import SnmpTargetConfig
from drivers.snmp.values import SnmpValue, from_pysnmp

log = logging.getLogger(__name__)
SNMP_TRAP_OID: Final = "1.3.6.1.6.3.1.1.4.1.0"
IF_INDEX: Final = "1.3.6.1.2.1.2.2.1.1."
GENERIC_TRAPS: Final = {
    "1.3.6.1.6.3.1.1.5.1": "cold_start",
    "1.3.6.1.6.3.1.1.5.2": "warm_start",
    "1.3.6.1.6.3.1.1.5.3": "link_down",
    "1.3.6.1.6.3.1.1.5.4": "link_up",
    "1.3.6.1.6.3.1.1.5.5": "authentication_failure",
}
QUEUE_MAX: Final = 10_000
RETRY_BIND_S: Final = 60.0
TRAP_DOMAIN_BASE: Final = 100_000  # the polls' socket is udp.DOMAIN_NAME itself
AUTH: Final = {
    "md5": config.USM_AUTH_HMAC96_MD5,
    "sha": config.USM_AUTH_HMAC96_SHA,
    "sha224": config.USM_AUTH_HMAC128_SHA224,
    "sha256": config.USM_AUTH_HMAC192_SHA256,
    "sha384": config.USM_AUTH_HMAC256_SHA384,
    "sha512": config.USM_AUTH_HMAC384_SHA512,
}
PRIV: Final = {
    "des": config.USM_PRIV_CBC56_DES,
    "aes": config.USM_PRIV_CFB128_AES,
    "aes192": config.USM_PRIV_CFB192_AES,
    "aes256": config.USM_PRIV_CFB256_AES,
}


def trap_name(oid: str) -> str:
    """coldStart, warmStart, linkDown, linkUp... by name; anything else is ``vendor``."""
    return GENERIC_TRAPS.get(oid, "vendor")


class TrapReceiver:
    """Listens for the traps of a family's devices and yields them as event Readings."""

    def __init__(
        self,
        family: str,
        devices: Sequence[tuple[DeviceSpec, DriverConfig]],
        *,
        metric_keys: Collection[str],
        host: str = "0.0.0.0",  # devices send from the field network
    ) -> None:
        self.family = family
        self.host = host
        self.metric_keys = frozenset(metric_keys)
        self.targets: list[tuple[str, SnmpTargetConfig]] = [
            (spec.device_id, cfg)
            for spec, cfg in devices
            if isinstance(cfg, SnmpTargetConfig) and cfg.trap_port is not None
        ]
        by_source: dict[str, list[str]] = {}
        for device_id, cfg in self.targets:
            by_source.setdefault(cfg.trap_from, []).append(device_id)
        # Two devices behind one source address cannot be told apart: neither is credited.
        self.by_source = {ip: ids[0] for ip, ids in by_source.items() if len(ids) == 1}
        self.ambiguous = {ip for ip, ids in by_source.items() if len(ids) > 1}
        self.ports = sorted({cfg.trap_port for _, cfg in self.targets if cfg.trap_port})
        self.unknown: dict[str, int] = {}
        self.received = 0
        self.dropped = 0
        self._queue: asyncio.Queue[Reading] = asyncio.Queue(QUEUE_MAX)
        self._last_source: str = ""

    async def stream(self) -> AsyncGenerator[Reading, None]:
        """Traps as event Readings, until cancelled; a port that cannot be bound is retried.

        The receiver lives on the family's shared engine (the one its polls use): one
        engine per family, one more UDP socket per trap port.
        """
        if not self.targets:
            await asyncio.Event().wait()  # no device asks for traps: listen to nothing
        client = client_for_family(self.family)
        domains: list[tuple[int, ...]] = []
        receiver = None
        try:
            receiver = await self._listen(client, domains)
            while True:
                yield await self._queue.get()
        finally:
            snmp_engine = client.engine
            if receiver is not None:
                receiver.close(snmp_engine)
            snmp_engine.observer.unregister_observer(self._remember_source)
            for domain in domains:
                with contextlib.suppress(Exception):  # the engine may be closed already
                    config.delete_transport(snmp_engine, domain).close_transport()

    async def _listen(
        self, client: SnmpClient, domains: list[tuple[int, ...]]
    ) -> ntfrcv.NotificationReceiver:
        snmp_engine = client.engine
        client.ensure_transport()
        for port in self.ports:
            while True:
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    sock.bind((self.host, port))
                    break
                except OSError as err:
                    sock.close()
                    # Logged and retried, not raised: the devices are polled all the same.
                    log.error(
                        "%s traps: cannot listen on %s:%d (%s); retrying in %g s",
                        self.family,
                        self.host,
                        port,
                        err.strerror,
                        RETRY_BIND_S,
                    )
                    await asyncio.sleep(RETRY_BIND_S)
            domain = (*udp.DOMAIN_NAME, TRAP_DOMAIN_BASE + port)
            transport = udp.UdpAsyncioTransport().open_server_mode(sock=sock)
            config.add_transport(snmp_engine, domain, transport)
            domains.append(domain)
        for _, cfg in self.targets:
            if cfg.version != "3":
                # The polls' own community entry: one name per community in the engine.
                client.security_for(cfg)
            elif cfg.trap_engine_id and cfg.user and cfg.auth_key and cfg.priv_key:
                engine_id = cfg.trap_engine_id.removeprefix("0x")
                config.add_v3_user(
                    snmp_engine,
                    cfg.user,
                    AUTH[cfg.auth_protocol],
                    cfg.auth_key.get_secret_value(),
                    PRIV[cfg.priv_protocol],
                    cfg.priv_key.get_secret_value(),
                    securityEngineId=v2c.OctetString(hexValue=engine_id),
                )
        snmp_engine.observer.register_observer(
            self._remember_source, "rfc3412.receiveMessage:request"
        )
        return ntfrcv.NotificationReceiver(snmp_engine, self._received)

    def _remember_source(
        self, _engine: Any, _execpoint: str, variables: dict[str, Any], _ctx: Any
    ) -> None:
        address = variables.get("transportAddress")
        self._last_source = str(address[0]) if address else ""

    def _received(
        self,
        _engine: Any,
        _state: Any,
        _context_engine_id: Any,
        _context_name: Any,
        var_binds: Sequence[tuple[Any, Any]],
        _ctx: Any,
    ) -> None:
        source = self._last_source
        self.received += 1
        device_id = self.by_source.get(source)
        if device_id is None:
            self.unknown[source] = self.unknown.get(source, 0) + 1
            if self.unknown[source] == 1:
                why = "shared by several devices" if source in self.ambiguous else "of no device"
                log.warning(
                    "%s trap from %s (an address %s) ignored; later ones are only counted",
                    self.family,
                    source,
                    why,
                )
            return
        metrics = self.decode(var_binds)
        try:
            self._queue.put_nowait(
                Reading(device_id=device_id, ts=utc_now(), metrics=metrics, kind="event")
            )
        except asyncio.QueueFull:
            self.dropped += 1

    def decode(self, var_binds: Sequence[tuple[Any, Any]]) -> dict[str, MetricValue]:
        """A notification's varbinds as the event's metrics (trap, trap_oid, if_index)."""
        trap_oid = ""
        if_index: int | None = None
        for name, value in var_binds:
            oid = str(name)
            if oid == SNMP_TRAP_OID:
                trap_oid = str(value)
            elif oid.startswith(IF_INDEX):
                plain = from_pysnmp(value)
                if isinstance(plain, SnmpValue) and isinstance(plain.value, int):
                    if_index = plain.value
        metrics: dict[str, MetricValue] = {"trap": trap_name(trap_oid), "trap_oid": trap_oid}
        if if_index is not None and "if_index" in self.metric_keys:
            metrics["if_index"] = if_index
        return {k: v for k, v in metrics.items() if k in self.metric_keys}


def trap_stream_factory(
    family: str, metric_keys: Collection[str]
) -> Callable[[Sequence[tuple[DeviceSpec, DriverConfig]]], TrapReceiver]:
    """A family's ``create_stream``: one receiver for all its devices that set trap_port."""

    def create(devices: Sequence[tuple[DeviceSpec, DriverConfig]]) -> TrapReceiver:
        return TrapReceiver(family, devices, metric_keys=metric_keys)

    return create
