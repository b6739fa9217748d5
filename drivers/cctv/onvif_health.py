"""ONVIF health of one camera with onvif-zeep-async: reachability, clock, identity, media, events.

``GetSystemDateAndTime`` answers without credentials, so it is the liveness probe and the
clock-drift reading; authentication is computed with the camera's own clock (the library's
``adjust_time``), so a camera whose clock is 10 minutes off still answers the rest. The
pull-point subscription is driven here rather than by the library's manager, which would
start tasks of its own outside the agent's TaskGroup: created on first use, pulled every
check, renewed before it lapses, recreated when the camera has forgotten it (a reboot).
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
from onvif import ONVIFCamera, ONVIFService
from onvif.exceptions import ONVIFError
from onvif.transport import ASYNC_TRANSPORT
from zeep.exceptions import Fault, TransportError, XMLParseError

from drivers.framework import DeviceInfo, DriverError, MetricValue, Reading, utc_now
from drivers.patient_timeout import patient_timeout

log = logging.getLogger(__name__)


def _close_library_session() -> None:
    """Close the library's module-level requests session while imports still work.

    Its zeep transport only reads bundled WSDL files; left open, its ``__del__`` prints an
    ImportError traceback at every interpreter exit.
    """
    ASYNC_TRANSPORT.session.close()
    ASYNC_TRANSPORT.session = SimpleNamespace(close=lambda: None)


atexit.register(_close_library_session)
PULLPOINT_NS = "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription"
SUBSCRIPTION_S = 120  # the shortest pull-point life asked for
RENEW_MARGIN_S = 30.0  # a late poll still finds its subscription alive
MAX_TEXT = 200
# Topic prefix -> the event name published (tamper, motion and image quality).
EVENT_TOPICS: tuple[tuple[str, str], ...] = (
    ("tns1:VideoSource/GlobalSceneChange", "tamper"),
    ("tns1:RuleEngine/TamperDetector", "tamper"),
    ("tns1:RuleEngine/CellMotionDetector", "motion"),
    ("tns1:VideoSource/MotionAlarm", "motion"),
    ("tns1:VideoSource/ImageTooBlurry", "image_too_blurry"),
    ("tns1:VideoSource/ImageTooDark", "image_too_dark"),
    ("tns1:VideoSource/ImageTooBright", "image_too_bright"),
    ("tns1:VideoSource/SignalLoss", "videoloss"),
)
STATE_ITEMS = ("State", "IsMotion", "IsTamper", "IsTooBlurry", "IsTooDark", "IsTooBright")


class OneSessionCamera(ONVIFCamera):  # type: ignore[misc]  # the library is untyped
    """An ``ONVIFCamera`` whose services share one HTTP session: one connection a poll.

    The library gives every service (device management, events, the pull point, the
    subscription) a connection pool of its own, and its keep-alive (4 s) is far shorter
    than a poll interval: each poll opened two or three TCP connections to the camera.
    Sharing one pool, a poll's calls ride one connection. Each service keeps its own
    timeouts (the library passes them per request). A service the library replaces (a new
    pull point's address) must not close the shared session: only the camera's close does.
    """

    _shared: aiohttp.ClientSession | None = None

    async def create_onvif_service(
        self,
        name: str,
        port_type: str | None = None,
        read_timeout: int | None = None,
        write_timeout: int | None = None,
    ) -> ONVIFService:
        """The library's service, moved onto the camera's one session."""
        service = await super().create_onvif_service(name, port_type, read_timeout, write_timeout)
        if self._shared is None or self._shared.closed:
            self._shared = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=2, keepalive_timeout=15)
            )
        own = service._session
        if own is not self._shared:
            service._session = self._shared
            service._connector = self._shared.connector
            service.transport.session = self._shared
            service.close = _shared_session_kept
            await own.close()  # never used: its pool opened no connection yet
        return service

    async def close(self) -> None:
        """Close the services and the shared session."""
        await super().close()
        if self._shared is not None:
            await self._shared.close()


async def _shared_session_kept() -> None:
    """A shared-session service's close: the camera's own close ends the session."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OnvifTarget:
    """Where and how to reach one camera's ONVIF device service."""

    device_id: str
    host: str
    port: int
    username: str
    password: str
    timeout_s: float = 5.0
    reach_timeout_s: float = 5.0  # the first answer (GetSystemDateAndTime): else unreachable
    events: bool = True
    profile: int = 1  # the substream on most cameras; the last profile when fewer
    interval_s: float = 300.0  # how often the agent checks it: the pull point must outlive that


@dataclass(slots=True)
class HealthResult:
    """One check's metrics and what the stream sampler needs from it."""

    metrics: dict[str, MetricValue]
    stream_uri: str | None = None
    fps_nominal: float | None = None
    events: list[Reading] = field(default_factory=list)
    info: DeviceInfo | None = None  # GetDeviceInformation's answer, for the registry record


def event_name(topic: str) -> str | None:
    """The published event name of an ONVIF topic, None for topics not watched."""
    bare = topic.strip()
    for prefix, name in EVENT_TOPICS:
        if bare.startswith(prefix):
            return name
    return None


def _text(value: object) -> str:
    return str(value if value is not None else "").strip()[:MAX_TEXT]


def _message_state(message: Any) -> bool | None:
    """The boolean state item of an ONVIF ``tt:Message`` (zeep object or lxml), else None."""
    if message is None:
        return None
    if hasattr(message, "iter"):  # left as XML when the schema did not type it
        items = [
            (i.get("Name"), i.get("Value")) for i in message.iter() if "SimpleItem" in str(i.tag)
        ]
    else:
        data = getattr(message, "Data", None)
        items = [(i.Name, i.Value) for i in (getattr(data, "SimpleItem", None) or [])]
    for name, value in items:
        if name in STATE_ITEMS:
            return str(value).lower() in ("true", "1")
    return None


def _camera_time(reply: Any) -> dt.datetime:
    utc = reply.UTCDateTime
    return dt.datetime(
        utc.Date.Year,
        utc.Date.Month,
        utc.Date.Day,
        utc.Time.Hour,
        utc.Time.Minute,
        utc.Time.Second,
        tzinfo=dt.UTC,
    )


class OnvifHealth:
    """Checks one camera; keeps its ONVIF session and pull point between checks."""

    def __init__(self, target: OnvifTarget) -> None:
        self.target = target
        self.device_id = target.device_id
        self._camera: ONVIFCamera | None = None
        self._ready = False
        self._pullpoint: Any = None
        self._subscription: Any = None
        self._renew_at = 0.0
        # The pull point lives two polls and a minute, so it is renewed every other poll
        # (a 120 s one lapsed between 300 s polls: each poll recreated it, events between
        # polls were lost, and it cost three more calls).
        self.subscription_s = max(SUBSCRIPTION_S, int(2 * target.interval_s + 60))
        self.clock = time.monotonic  # the renewals' time base (tests step a clock of their own)
        self._media_cache: dict[str, MetricValue] = {}
        self._stream_uri: str | None = None
        self._fps_nominal: float | None = None
        self.recreated = 0

    async def check(self) -> HealthResult:
        """One health check; raises DriverError when the camera does not answer at all."""
        camera = self._camera_object()
        started = time.time()
        try:
            async with patient_timeout(self.target.reach_timeout_s):
                devicemgmt = await camera.create_devicemgmt_service()
                reply = await devicemgmt.authless_GetSystemDateAndTime()
        except (aiohttp.ClientError, TimeoutError, OSError, ONVIFError, TransportError) as err:
            await self.close()
            why = (
                f"no answer within {self.target.reach_timeout_s:g} s"
                if isinstance(err, TimeoutError)
                else _describe(err)
            )
            raise DriverError(self.device_id, f"ONVIF unreachable: {why}") from err
        # The reply has whole seconds: half the round trip is the best estimate of its time.
        received = time.time()
        ours = dt.datetime.fromtimestamp((started + received) / 2, dt.UTC)
        metrics: dict[str, MetricValue] = {
            "clock_drift_s": round((_camera_time(reply) - ours).total_seconds(), 1)
        }
        events: list[Reading] = []
        identity: DeviceInfo | None = None
        try:
            if not self._ready:
                # Learns the camera's clock (signs tokens with it) and its service addresses.
                await camera.update_xaddrs()
                self._ready = True
                devicemgmt = await camera.create_devicemgmt_service()
            info = await devicemgmt.GetDeviceInformation()
            metrics.update(
                manufacturer=_text(info.Manufacturer),
                device_model=_text(info.Model),
                firmware=_text(info.FirmwareVersion),
                serial=_text(info.SerialNumber),
            )
            identity = DeviceInfo(
                vendor=_text(info.Manufacturer) or None,
                model=_text(info.Model) or None,
                firmware=_text(info.FirmwareVersion) or None,
                serial=_text(info.SerialNumber) or None,
            )
            if not self._media_cache:
                await self._read_media(camera)
            metrics.update(self._media_cache)
            if self.target.events:
                events = await self._pull_events(camera)
                metrics["events_ok"] = self._pullpoint is not None
                metrics["subscriptions_recreated"] = self.recreated
        except (TransportError, Fault, XMLParseError, ONVIFError, AttributeError) as err:
            status = _status_of(err)
            if status == "auth_failed":
                self._ready = False  # the camera's clock may have jumped: learn it again
            log.debug("%s: ONVIF %s: %s", self.device_id, status, _describe(err))
            metrics["onvif_status"] = status
            return HealthResult(metrics=metrics, info=identity)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            await self.close()
            raise DriverError(self.device_id, f"ONVIF failed mid-check: {_describe(err)}") from err
        metrics["onvif_status"] = "ok"
        return HealthResult(
            metrics=metrics,
            stream_uri=self._stream_uri,
            fps_nominal=self._fps_nominal,
            events=events,
            info=identity,
        )

    def _camera_object(self) -> ONVIFCamera:
        if self._camera is None:
            self._camera = OneSessionCamera(
                self.target.host,
                self.target.port,
                self.target.username,
                self.target.password,
                no_cache=True,
                # Sign WS-Security tokens with the camera's clock: a drifted camera answers.
                adjust_time=True,
            )
            self._ready = False
        return self._camera

    async def _read_media(self, camera: ONVIFCamera) -> None:
        """Profiles, nominal fps, stream and snapshot URIs of the sampled profile (once)."""
        media = await camera.create_media_service()
        profiles = list(await media.GetProfiles() or [])
        out: dict[str, MetricValue] = {"profiles": len(profiles)}
        if profiles:
            chosen = profiles[min(self.target.profile, len(profiles) - 1)]
            token = chosen.token
            encoder = getattr(chosen, "VideoEncoderConfiguration", None)
            rate = getattr(getattr(encoder, "RateControl", None), "FrameRateLimit", None)
            if rate:
                self._fps_nominal = float(rate)
                out["fps_nominal"] = float(rate)
            stream = await media.GetStreamUri(
                {
                    "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                    "ProfileToken": token,
                }
            )
            uri = _text(getattr(stream, "Uri", ""))
            out["stream_uri_ok"] = uri.startswith(("rtsp://", "http://", "https://"))
            self._stream_uri = uri or None
            snapshot = await media.GetSnapshotUri({"ProfileToken": token})
            out["snapshot_uri_ok"] = _text(getattr(snapshot, "Uri", "")).startswith("http")
        self._media_cache = out

    async def _subscribe(self, camera: ONVIFCamera) -> None:
        events = await camera.create_events_service()
        result = await events.CreatePullPointSubscription(
            {"InitialTerminationTime": f"PT{self.subscription_s}S"}
        )
        camera.xaddrs[PULLPOINT_NS] = result.SubscriptionReference.Address._value_1
        self._subscription = await camera.create_subscription_service("PullPointSubscription")
        self._pullpoint = await camera.create_pullpoint_service()
        self._renew_at = self._next_renewal()

    async def _pull_events(self, camera: ONVIFCamera) -> list[Reading]:
        """Pull what the camera queued; renew or recreate the subscription as needed."""
        if self._pullpoint is None:
            await self._subscribe(camera)
        try:
            if self.clock() >= self._renew_at:
                await self._subscription.Renew(f"PT{self.subscription_s}S")
                self._renew_at = self._next_renewal()
            reply = await self._pullpoint.PullMessages(
                {"Timeout": dt.timedelta(seconds=1), "MessageLimit": 100}
            )
        except (Fault, TransportError) as err:
            # The camera rebooted or expired the pull point: a new one, and pull once more.
            log.info("%s: pull point lost (%s), recreating", self.device_id, _describe(err))
            self._pullpoint = None
            await self._subscribe(camera)
            self.recreated += 1
            reply = await self._pullpoint.PullMessages(
                {"Timeout": dt.timedelta(seconds=1), "MessageLimit": 100}
            )
        return self._event_readings(reply)

    def _next_renewal(self) -> float:
        """When to renew: the first poll after which the next would find it lapsed."""
        return self.clock() + self.subscription_s - self.target.interval_s - RENEW_MARGIN_S

    def _event_readings(self, reply: Any) -> list[Reading]:
        readings = []
        for message in getattr(reply, "NotificationMessage", None) or []:
            topic = _text(getattr(getattr(message, "Topic", None), "_value_1", ""))
            name = event_name(topic)
            if name is None:
                continue
            body = getattr(getattr(message, "Message", None), "_value_1", None)
            state = _message_state(body)
            metrics: dict[str, MetricValue] = {
                "event": name,
                "event_source": "onvif",
                "event_topic": topic,
            }
            if state is not None:
                metrics["event_active"] = state
            readings.append(
                Reading(device_id=self.device_id, ts=utc_now(), metrics=metrics, kind="event")
            )
        return readings

    async def close(self) -> None:
        """Drop the session (the next check reconnects); the pull point lapses on its own."""
        camera, self._camera = self._camera, None
        self._ready = False
        self._pullpoint = self._subscription = None
        self._media_cache = {}
        if camera is not None:
            await camera.close()


def _status_of(err: BaseException) -> str:
    if isinstance(err, TransportError) and err.status_code in (401, 403):
        return "auth_failed"
    if isinstance(err, Fault):
        codes = " ".join(str(c) for c in (getattr(err, "subcodes", None) or []))
        return "auth_failed" if "NotAuthorized" in codes else "fault"
    return "malformed"


def _describe(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:MAX_TEXT]
