"""A Hikvision ISAPI stand-in: a real HTTP server with digest auth, alertStream and NVR status.

No Hikvision device can be reached from the test machines, so this stand-in (named as
such) answers what the cctv driver reads: ``/ISAPI/Event/notification/alertStream``
(multipart/mixed ``EventNotificationAlert`` parts, a ``videoloss`` "inactive" heartbeat),
``/ISAPI/ContentMgmt/Storage`` (HDD list) and
``/ISAPI/ContentMgmt/InputProxy/channels/status`` (channel online and detect result).
Like the real thing it locks the account after ``lock_after`` failed logins.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from drivers.simulation import PollCounter

REALM = "DS-StandIn"
XMLNS = "http://www.hikvision.com/ver20/XMLSchema"
BOUNDARY = "boundary"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 (RFC 2617 digest is MD5)


@dataclass(slots=True)
class StandInDisk:
    """One HDD of the stand-in NVR (sizes in MB, as ISAPI gives them)."""

    capacity_mb: int = 1_907_729
    free_mb: int = 953_864
    status: str = "ok"


@dataclass(slots=True)
class StandInNvr:
    """The stand-in's state; tests change it to provoke faults."""

    username: str = "kotahub"
    password: str = "isapi-secret"  # noqa: S105 (the stand-in's own test password)
    lock_after: int = 5
    heartbeat_s: float = 10.0
    heartbeat: bool = True
    disks: list[StandInDisk] = field(default_factory=lambda: [StandInDisk()])
    channels: dict[int, str] = field(
        default_factory=lambda: {1: "connect", 2: "connect", 3: "connect", 4: "connect"}
    )
    pending: deque[tuple[str, str, int]] = field(default_factory=deque)
    failed_logins: int = 0
    requests: int = 0
    locked: bool = False
    # An outage: every request gets 503 (the demo's fault board, the city bench's end).
    offline: bool = False
    # Set by the demo's simulator: groups the driver's requests into polls and counts them.
    polls: PollCounter | None = None

    def raise_event(self, event_type: str, state: str = "active", channel: int = 1) -> None:
        """Queue an EventNotificationAlert for the open alert streams."""
        self.pending.append((event_type, state, channel))


def alert_xml(event_type: str, state: str, channel: int) -> str:
    """One EventNotificationAlert document as Hikvision devices send it."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\r\n<EventNotificationAlert version="2.0" '
        f'xmlns="{XMLNS}"><ipAddress>127.0.0.1</ipAddress><channelID>{channel}</channelID>'
        f"<dateTime>{now}</dateTime><activePostCount>1</activePostCount>"
        f"<eventType>{event_type}</eventType><eventState>{state}</eventState>"
        f"<eventDescription>{event_type} alarm</eventDescription></EventNotificationAlert>"
    )


class IsapiStandIn:
    """The stand-in server on host:port."""

    def __init__(self, *, host: str = "127.0.0.1", port: int) -> None:
        self.host = host
        self.port = port
        self.nvr = StandInNvr()
        self._nonces: set[str] = set()
        self._runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        """``host:port`` for a driver config."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Listen on host:port."""
        app = web.Application()
        app.router.add_get("/ISAPI/Event/notification/alertStream", self._alert_stream)
        app.router.add_get("/ISAPI/ContentMgmt/Storage", self._storage)
        app.router.add_get("/ISAPI/ContentMgmt/InputProxy/channels/status", self._channels)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _challenge(self) -> web.Response:
        nonce = secrets.token_hex(16)
        self._nonces.add(nonce)
        return web.Response(
            status=401,
            headers={"WWW-Authenticate": f'Digest realm="{REALM}", qop="auth", nonce="{nonce}"'},
        )

    def _authorised(self, request: web.Request) -> web.Response | None:
        """None when the digest is right; else the 401 to send (counting failed logins)."""
        nvr = self.nvr
        nvr.requests += 1
        if nvr.polls is not None:
            nvr.polls.request(answered=not nvr.offline)
        if nvr.offline:
            return web.Response(status=503, text="offline")
        header = request.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return self._challenge()
        fields = {}
        for part in header[len("Digest ") :].split(","):
            key, _, value = part.strip().partition("=")
            fields[key] = value.strip('"')
        if fields.get("nonce") not in self._nonces:
            return self._challenge()
        ha1 = _md5(f"{fields.get('username')}:{REALM}:{nvr.password}")
        ha2 = _md5(f"{request.method}:{fields.get('uri')}")
        expected = _md5(
            f"{ha1}:{fields['nonce']}:{fields.get('nc')}:{fields.get('cnonce')}:"
            f"{fields.get('qop')}:{ha2}"
        )
        if nvr.locked or fields.get("username") != nvr.username or fields["response"] != expected:
            nvr.failed_logins += 1
            if nvr.failed_logins >= nvr.lock_after:
                nvr.locked = True
            return self._challenge()
        nvr.failed_logins = 0
        return None

    async def _alert_stream(self, request: web.Request) -> web.StreamResponse:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        response = web.StreamResponse(
            headers={"Content-Type": f"multipart/mixed; boundary={BOUNDARY}"}
        )
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        try:
            # Ends when the client goes, even while silent (no write to fail on).
            while request.transport is not None and not request.transport.is_closing():
                while self.nvr.pending:
                    await self._part(response, alert_xml(*self.nvr.pending.popleft()))
                if self.nvr.heartbeat and loop.time() >= next_beat:
                    next_beat = loop.time() + self.nvr.heartbeat_s
                    await self._part(response, alert_xml("videoloss", "inactive", 0))
                await asyncio.sleep(0.05)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    @staticmethod
    async def _part(response: web.StreamResponse, xml: str) -> None:
        body = xml.encode()
        await response.write(
            f'--{BOUNDARY}\r\nContent-Type: application/xml; charset="UTF-8"\r\n'
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
            + b"\r\n"
        )

    async def _storage(self, request: web.Request) -> web.Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        disks = "".join(
            f"<hdd><id>{n}</id><hddName>hdd{n}</hddName><hddPath></hddPath>"
            f"<hddType>SATA</hddType><status>{d.status}</status>"
            f"<capacity>{d.capacity_mb}</capacity><freeSpace>{d.free_mb}</freeSpace>"
            "<property>RW</property></hdd>"
            for n, d in enumerate(self.nvr.disks, start=1)
        )
        return web.Response(
            text=f'<?xml version="1.0" encoding="UTF-8"?><storage version="2.0" xmlns="{XMLNS}">'
            f"<hddList>{disks}</hddList></storage>",
            content_type="application/xml",
        )

    async def _channels(self, request: web.Request) -> web.Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        rows = "".join(
            f"<InputProxyChannelStatus><id>{n}</id><online>{'true' if r == 'connect' else 'false'}"
            f"</online><chanDetectResult>{r}</chanDetectResult></InputProxyChannelStatus>"
            for n, r in sorted(self.nvr.channels.items())
        )
        return web.Response(
            text=f'<?xml version="1.0" encoding="UTF-8"?><InputProxyChannelStatusList '
            f'version="2.0" xmlns="{XMLNS}">{rows}</InputProxyChannelStatusList>',
            content_type="application/xml",
        )
