"""An ONVIF SOAP stand-in: a real HTTP server that answers the calls the cctv driver makes.

No camera can be reached from the test machines, so this stand-in (named as such, never
a camera) answers device management (``GetSystemDateAndTime`` without credentials,
``GetDeviceInformation``, ``GetServices``), media (``GetProfiles``, ``GetStreamUri``,
``GetSnapshotUri``) and events (``CreatePullPointSubscription``, ``PullMessages``,
``Renew``, ``Unsubscribe``) over SOAP 1.2 with WS-Security digest checks, plus the faults
real cameras show: HTTP 401, a SOAP fault, a forgotten subscription, a clock off by minutes.
One server can play many cameras, one port each, which the benchmark and the demo use.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import itertools
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

from aiohttp import web

from drivers.simulation import PollCounter

SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
NAMESPACES = (
    f'xmlns:s="{SOAP_ENV}" xmlns:tt="http://www.onvif.org/ver10/schema" '
    'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
    'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" '
    'xmlns:tev="http://www.onvif.org/ver10/events/wsdl" '
    'xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" '
    'xmlns:wsa="http://www.w3.org/2005/08/addressing" '
    'xmlns:tns1="http://www.onvif.org/ver10/topics" '
    'xmlns:ter="http://www.onvif.org/ver10/error"'
)
AUTHLESS = frozenset({"GetSystemDateAndTime"})
# Cameras refuse a UsernameToken whose Created time is this far from their own clock.
TOKEN_WINDOW_S = 300.0
TAMPER_TOPIC = "tns1:VideoSource/GlobalSceneChange/ImagingService"
MOTION_TOPIC = "tns1:RuleEngine/CellMotionDetector/Motion"


@dataclass(slots=True)
class StandInEvent:
    """One notification the stand-in will hand out on the next PullMessages."""

    topic: str
    state: bool
    source: str = "VideoSource_1"
    item: str = "State"


@dataclass(slots=True)
class StandInCamera:
    """One simulated camera's state; tests change it to provoke faults."""

    username: str = "kotahub"
    password: str = "stand-in-secret"  # noqa: S105 (the stand-in's own test password)
    manufacturer: str = "StandIn"
    model: str = "SI-2MP-Bullet"
    firmware: str = "V5.7.3 build 230101"
    serial: str = "SI0000001"
    clock_offset_s: float = 0.0
    stream_uri: str = "rtsp://127.0.0.1:554/stream1"
    snapshot_uri: str = "http://127.0.0.1/snapshot.jpg"
    nominal_fps: int = 25
    sub_fps: int = 10
    # "http401": a 401 to every authenticated call; "fault": a NotAuthorized SOAP fault.
    reject_auth: str | None = None
    fault_on: set[str] = field(default_factory=set)
    subscription_s: int = 60
    pending: deque[StandInEvent] = field(default_factory=deque)
    subscriptions: set[int] = field(default_factory=set)
    calls: dict[str, int] = field(default_factory=dict)
    # An outage: the camera drops every connection unanswered.
    offline: bool = False
    # Set by the demo's simulator: groups the driver's calls into polls and counts them.
    polls: PollCounter | None = None

    def now(self) -> datetime:
        """The camera's own clock (possibly off)."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_s)

    def forget_subscriptions(self) -> None:
        """What a reboot does: every pull point is gone, the next pull gets a fault."""
        self.subscriptions.clear()

    def raise_event(self, topic: str, state: bool = True, item: str = "State") -> None:
        """Queue a notification for the next PullMessages."""
        self.pending.append(StandInEvent(topic=topic, state=state, item=item))


def _envelope(body: str) -> str:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope {NAMESPACES}>'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    )


def _fault(subcode: str, reason: str) -> str:
    return _envelope(
        "<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode>"
        f"<s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en">{escape(reason)}</s:Text></s:Reason></s:Fault>'
    )


def _profile(token: str, width: int, height: int, fps: int) -> str:
    return (
        f'<trt:Profiles token="{token}" fixed="true"><tt:Name>{token}</tt:Name>'
        f'<tt:VideoEncoderConfiguration token="venc_{token}"><tt:Name>{token}</tt:Name>'
        "<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding>"
        f"<tt:Resolution><tt:Width>{width}</tt:Width><tt:Height>{height}</tt:Height>"
        "</tt:Resolution><tt:Quality>5</tt:Quality><tt:RateControl>"
        f"<tt:FrameRateLimit>{fps}</tt:FrameRateLimit>"
        "<tt:EncodingInterval>1</tt:EncodingInterval>"
        "<tt:BitrateLimit>2048</tt:BitrateLimit></tt:RateControl>"
        "<tt:SessionTimeout>PT60S</tt:SessionTimeout>"
        "</tt:VideoEncoderConfiguration></trt:Profiles>"
    )


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token_ok(camera: StandInCamera, header: ET.Element | None) -> bool:
    """Check the WS-Security UsernameToken digest and its Created time against our clock."""
    if header is None:
        return False
    token = header.find(f".//{{{WSSE}}}UsernameToken")
    if token is None:
        return False
    user = token.findtext(f"{{{WSSE}}}Username") or ""
    password = token.findtext(f"{{{WSSE}}}Password") or ""
    nonce = token.findtext(f"{{{WSSE}}}Nonce") or ""
    created = token.findtext(f"{{{WSU}}}Created") or ""
    try:
        created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
        raw_nonce = base64.b64decode(nonce)
    except ValueError:
        return False
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    if abs((created_at - camera.now()).total_seconds()) > TOKEN_WINDOW_S:
        return False
    digest = hashlib.sha1(raw_nonce + created.encode() + camera.password.encode()).digest()  # noqa: S324
    return user == camera.username and base64.b64encode(digest).decode() == password


class OnvifStandIn:
    """The stand-in server: camera ``n`` answers at ``http://host:ports[n]/onvif/...``.

    ONVIF fixes the device service at ``http://host:port/onvif/device_service``, so each
    simulated camera gets a port of its own; one aiohttp application serves them all.
    """

    def __init__(self, *, host: str = "127.0.0.1", ports: list[int]) -> None:
        self.host = host
        self.ports = list(ports)
        self.cameras = [StandInCamera(serial=f"SI{n:07d}") for n in range(len(ports))]
        self._by_port = dict(zip(self.ports, self.cameras, strict=True))
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    @property
    def camera(self) -> StandInCamera:
        """The first (often only) camera."""
        return self.cameras[0]

    def address(self, index: int = 0) -> str:
        """The ``host:port`` a driver config uses for camera ``index``."""
        return f"{self.host}:{self.ports[index]}"

    async def start(self, *, skip_taken: bool = False) -> list[int]:
        """Listen on every camera's port; returns the taken ports passed over (``skip_taken``).

        Without ``skip_taken`` a port in use fails the start; with it (the demo, where one
        port held by another program must not silence thousands of cameras) that camera
        goes unserved and the others listen.
        """
        app = web.Application()
        app.router.add_post("/onvif/{service}", self._handle)
        app.router.add_post("/onvif/{service}/{sub}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        taken: list[int] = []
        for port in self.ports:
            site = web.TCPSite(self._runner, self.host, port)
            try:
                await site.start()
            except OSError as err:
                if not skip_taken or err.errno != errno.EADDRINUSE:
                    raise
                await site.stop()  # a failed site stays registered with the runner otherwise
                taken.append(port)
        return taken

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        camera = self._by_port.get(sockname[1]) if sockname else None
        if camera is None:
            return web.Response(status=404, text="no such camera")
        if camera.offline and request.transport is not None:
            if camera.polls is not None:
                camera.polls.request(answered=False)
            request.transport.abort()
            return web.Response(status=503)
        if camera.polls is not None:
            # Every call of a poll gets an answer (a fault is an answer: the driver still
            # makes its reading); the poll's last one decides whether it was completed.
            camera.polls.request(answered=True)
        try:
            root = ET.fromstring(await request.read())  # noqa: S314 (our own client's XML)
        except ET.ParseError:
            return self._reply(_fault("ter:InvalidArgVal", "request is not XML"), 400)
        body = root.find(f"{{{SOAP_ENV}}}Body")
        if body is None or len(body) == 0:
            return self._reply(_fault("ter:InvalidArgVal", "no SOAP body"), 400)
        operation = body[0].tag.rpartition("}")[2]
        camera.calls[operation] = camera.calls.get(operation, 0) + 1
        header = root.find(f"{{{SOAP_ENV}}}Header")
        if operation not in AUTHLESS and (not _token_ok(camera, header) or camera.reject_auth):
            if camera.reject_auth == "fault":
                return self._reply(_fault("ter:NotAuthorized", "Sender not authorized"), 400)
            # Empty like many cameras' 401 (a digest challenge, no SOAP body).
            return web.Response(status=401, headers={"WWW-Authenticate": 'Digest realm="cam"'})
        if operation in camera.fault_on:
            return self._reply(_fault("ter:ActionNotSupported", f"{operation} failed"), 500)
        answer = self._answer(camera, request, operation, body[0])
        if answer is None:
            return self._reply(_fault("ter:ActionNotSupported", f"no {operation} here"), 400)
        return answer

    def _reply(self, xml: str, status: int = 200) -> web.Response:
        return web.Response(
            status=status, text=xml, content_type="application/soap+xml", charset="utf-8"
        )

    def _answer(
        self, camera: StandInCamera, request: web.Request, operation: str, call: ET.Element
    ) -> web.Response | None:
        base = f"http://{request.host}/onvif"
        handlers: dict[str, Callable[[], str | web.Response]] = {
            "GetSystemDateAndTime": lambda: self._date_and_time(camera),
            "GetDeviceInformation": lambda: (
                "<tds:GetDeviceInformationResponse>"
                f"<tds:Manufacturer>{escape(camera.manufacturer)}</tds:Manufacturer>"
                f"<tds:Model>{escape(camera.model)}</tds:Model>"
                f"<tds:FirmwareVersion>{escape(camera.firmware)}</tds:FirmwareVersion>"
                f"<tds:SerialNumber>{escape(camera.serial)}</tds:SerialNumber>"
                "<tds:HardwareId>1.0</tds:HardwareId></tds:GetDeviceInformationResponse>"
            ),
            "GetServices": lambda: (
                "<tds:GetServicesResponse>"
                + "".join(
                    f"<tds:Service><tds:Namespace>{ns}</tds:Namespace>"
                    f"<tds:XAddr>{base}/{path}</tds:XAddr>"
                    "<tds:Version><tt:Major>2</tt:Major><tt:Minor>60</tt:Minor></tds:Version>"
                    "</tds:Service>"
                    for ns, path in (
                        ("http://www.onvif.org/ver10/device/wsdl", "device_service"),
                        ("http://www.onvif.org/ver10/media/wsdl", "media_service"),
                        ("http://www.onvif.org/ver10/events/wsdl", "event_service"),
                    )
                )
                + "</tds:GetServicesResponse>"
            ),
            "GetProfiles": lambda: (
                "<trt:GetProfilesResponse>"
                + _profile("profile_main", 1920, 1080, camera.nominal_fps)
                + _profile("profile_sub", 640, 360, camera.sub_fps)
                + "</trt:GetProfilesResponse>"
            ),
            "GetStreamUri": lambda: self._media_uri("GetStreamUriResponse", camera.stream_uri),
            "GetSnapshotUri": lambda: self._media_uri(
                "GetSnapshotUriResponse", camera.snapshot_uri
            ),
            "CreatePullPointSubscription": lambda: self._subscribe(camera, base),
            "PullMessages": lambda: self._pull(camera, request),
            "Renew": lambda: self._renew(camera, request),
            "Unsubscribe": lambda: self._unsubscribe(camera, request),
        }
        handler = handlers.get(operation)
        if handler is None:
            return None
        body = handler()
        if isinstance(body, web.Response):
            return body
        return self._reply(_envelope(body))

    def _date_and_time(self, camera: StandInCamera) -> str:
        now = camera.now()
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone><tt:UTCDateTime>"
            f"<tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time>"
            f"<tt:Date><tt:Year>{now.year}</tt:Year><tt:Month>{now.month}</tt:Month>"
            f"<tt:Day>{now.day}</tt:Day></tt:Date></tt:UTCDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    @staticmethod
    def _media_uri(element: str, uri: str) -> str:
        return (
            f"<trt:{element}><trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
            "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
            f"<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:{element}>"
        )

    def _times(self, camera: StandInCamera) -> str:
        now = camera.now()
        return (
            f"<wsnt:CurrentTime>{_iso(now)}</wsnt:CurrentTime><wsnt:TerminationTime>"
            f"{_iso(now + timedelta(seconds=camera.subscription_s))}</wsnt:TerminationTime>"
        )

    def _subscribe(self, camera: StandInCamera, base: str) -> str:
        sub_id = next(self._ids)
        camera.subscriptions.add(sub_id)
        return (
            "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference>"
            f"<wsa:Address>{base}/subscription/{sub_id}</wsa:Address>"
            f"</tev:SubscriptionReference>{self._times(camera)}"
            "</tev:CreatePullPointSubscriptionResponse>"
        )

    def _subscription_of(self, camera: StandInCamera, request: web.Request) -> int | None:
        sub = request.match_info.get("sub", "")
        if request.match_info["service"] != "subscription" or not sub.isdigit():
            return None
        return int(sub) if int(sub) in camera.subscriptions else None

    def _unknown_subscription(self) -> web.Response:
        return self._reply(
            _fault("ter:InvalidArgVal", "unknown subscription (the camera forgot it)"), 400
        )

    def _pull(self, camera: StandInCamera, request: web.Request) -> str | web.Response:
        if self._subscription_of(camera, request) is None:
            return self._unknown_subscription()
        now = camera.now()
        messages = []
        while camera.pending:
            event = camera.pending.popleft()
            messages.append(
                "<wsnt:NotificationMessage>"
                '<wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">'
                f"{escape(event.topic)}</wsnt:Topic><wsnt:Message>"
                f'<tt:Message UtcTime="{_iso(now)}" PropertyOperation="Changed">'
                f'<tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" '
                f'Value="{escape(event.source)}"/></tt:Source>'
                f'<tt:Data><tt:SimpleItem Name="{escape(event.item)}" '
                f'Value="{"true" if event.state else "false"}"/></tt:Data>'
                "</tt:Message></wsnt:Message></wsnt:NotificationMessage>"
            )
        return (
            f"<tev:PullMessagesResponse><tev:CurrentTime>{_iso(now)}</tev:CurrentTime>"
            f"<tev:TerminationTime>{_iso(now + timedelta(seconds=camera.subscription_s))}"
            f"</tev:TerminationTime>{''.join(messages)}</tev:PullMessagesResponse>"
        )

    def _renew(self, camera: StandInCamera, request: web.Request) -> str | web.Response:
        if self._subscription_of(camera, request) is None:
            return self._unknown_subscription()
        return f"<wsnt:RenewResponse>{self._times(camera)}</wsnt:RenewResponse>"

    def _unsubscribe(self, camera: StandInCamera, request: web.Request) -> str | web.Response:
        sub_id = self._subscription_of(camera, request)
        if sub_id is None:
            return self._unknown_subscription()
        camera.subscriptions.discard(sub_id)
        return "<wsnt:UnsubscribeResponse/>"
