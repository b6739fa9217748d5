"""Hikvision ISAPI: the alertStream event feed and NVR health, with digest auth (httpx).

Each poll listens to ``/ISAPI/Event/notification/alertStream`` for ``listen_s`` (most of
the poll interval, so little is missed between polls) and turns its multipart
``EventNotificationAlert`` parts into event readings. The ``videoloss`` "inactive" part
every ~10 s is a heartbeat, not an event: a stream that stays silent past
``heartbeat_watchdog_s`` is reported as ``alert_stream_ok = false``. NVRs also report
HDD status and fill and channel video loss. Hikvision locks an account after about five
failed logins, so after ``max_auth_failures`` refused logins in a row the driver stops
asking and says why, until its config changes.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import httpx

from drivers.cctv.nvr_links import NVR_LINKS, CameraLink, NvrEntry, NvrLinks, NvrState
from drivers.framework import DeviceSpec, DriverError, MetricValue, Reading, utc_now

MAX_PART_BYTES = 65_536
HTTP_TIMEOUT_S = 10.0  # connect, and each read of the short health requests
EVENT_NAMES = {
    "vmd": "motion",
    "linedetection": "line_crossing",
    "fielddetection": "intrusion",
    "tamperdetection": "tamper",
    "shelteralarm": "tamper",
    "scenechangedetection": "scene_change",
    "videoloss": "videoloss",
    "diskfull": "disk_full",
    "diskerror": "disk_error",
    "nicbroken": "network_broken",
    "recordingfailure": "recording_failure",
}


class IsapiAuthError(Exception):
    """The device refused our credentials."""


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse_xml(data: bytes) -> ET.Element:
    """A device's XML document; ValueError when it is not XML or too big."""
    if len(data) > MAX_PART_BYTES:
        raise ValueError(f"XML part of {len(data)} bytes is over {MAX_PART_BYTES}")
    try:
        # Bounded size and no external entities in expat: safe enough for device replies.
        return ET.fromstring(data)  # noqa: S314
    except ET.ParseError as err:
        raise ValueError(f"not XML: {err}") from err


def child_text(element: ET.Element, name: str) -> str:
    """Text of the first direct or nested child called ``name`` (namespace ignored)."""
    for item in element.iter():
        if _local(item.tag) == name:
            return (item.text or "").strip()
    return ""


class MultipartParts:
    """Splits a multipart byte stream into part bodies as bytes arrive."""

    def __init__(self, boundary: str) -> None:
        self.marker = b"--" + boundary.encode()
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Bodies of the parts completed by ``chunk``."""
        self.buffer += chunk
        bodies: list[bytes] = []
        while True:
            start = self.buffer.find(self.marker)
            if start < 0:
                self.buffer = self.buffer[-len(self.marker) :]
                return bodies
            end = self.buffer.find(self.marker, start + len(self.marker))
            head_end = self.buffer.find(b"\r\n\r\n", start)
            if head_end < 0:
                self._bound(start)
                return bodies
            headers = self.buffer[start:head_end].decode("latin-1").lower()
            body_start = head_end + 4
            length = _content_length(headers)
            if length is not None:
                if len(self.buffer) < body_start + length:
                    self._bound(start)
                    return bodies
                bodies.append(self.buffer[body_start : body_start + length])
                self.buffer = self.buffer[body_start + length :]
            elif end >= 0:
                bodies.append(self.buffer[body_start:end].strip())
                self.buffer = self.buffer[end:]
            else:
                self._bound(start)
                return bodies

    def _bound(self, start: int) -> None:
        self.buffer = self.buffer[start:]
        if len(self.buffer) > 4 * MAX_PART_BYTES:
            raise ValueError("alertStream part without an end; stream dropped")


def _content_length(headers: str) -> int | None:
    for line in headers.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip() == "content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def alert_reading(device_id: str, alert: ET.Element) -> Reading | None:
    """An EventNotificationAlert as an event reading; None for heartbeats and unknown types."""
    event_type = child_text(alert, "eventType")
    state = child_text(alert, "eventState").lower()
    name = EVENT_NAMES.get(event_type.lower())
    if name is None or (name == "videoloss" and state == "inactive"):
        return None
    metrics: dict[str, MetricValue] = {
        "event": name,
        "event_active": state == "active",
        "event_source": "isapi",
        "event_topic": event_type[:64],
    }
    channel = child_text(alert, "channelID") or child_text(alert, "dynChannelID")
    if channel.isdigit():
        metrics["channel_id"] = int(channel)
    return Reading(device_id=device_id, ts=utc_now(), metrics=metrics, kind="event")


class IsapiDevice:
    """Polls one Hikvision camera or NVR over ISAPI."""

    def __init__(
        self,
        spec: DeviceSpec,
        *,
        address: str,
        username: str,
        password: str,
        listen_s: float,
        heartbeat_watchdog_s: float,
        max_auth_failures: int,
        nvr: bool,
        nvr_channel: int | None = None,
        links: NvrLinks = NVR_LINKS,
    ) -> None:
        self.device_id = spec.device_id
        self.base = f"http://{address}"
        self.username = username
        self.password = password
        self.listen_s = listen_s
        self.watchdog_s = heartbeat_watchdog_s
        self.max_auth_failures = max_auth_failures
        self.nvr = nvr
        self.auth_failures = 0
        self._client: httpx.AsyncClient | None = None
        self._seq = 0
        self.links = links
        self.parent_id = None if nvr else spec.parent_id
        # Per camera, not per channel: a camera attached while its channel is already lost
        # still hears the loss start.
        self._announced: dict[str, bool] = {}
        self._entry: NvrEntry | None = links.attach_nvr(spec.device_id, address) if nvr else None
        self._link: CameraLink | None = (
            links.attach_camera(spec.device_id, self.parent_id, nvr_channel)
            if self.parent_id is not None
            else None
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base,
                auth=httpx.DigestAuth(self.username, self.password),
                timeout=httpx.Timeout(HTTP_TIMEOUT_S),
            )
        return self._client

    async def poll(self) -> list[Reading]:
        """NVR health (NVRs), then the alert stream for ``listen_s``."""
        if self.auth_failures >= self.max_auth_failures:
            raise DriverError(
                self.device_id,
                f"ISAPI refused the credentials {self.auth_failures} times; stopped asking "
                "before the device locks the account: fix username/password in driver_config",
            )
        try:
            metrics: dict[str, MetricValue] = {}
            channel_events: list[Reading] = []
            if self.nvr:
                metrics, lost = await self._nvr_health()
                channel_events = self._channel_events(lost)
                self.links.report(
                    self.device_id,
                    NvrState(
                        reachable=True, lost_channels=lost, recording=bool(metrics["recording"])
                    ),
                )
            events, stream_ok = await self._listen()
        except IsapiAuthError as err:
            # A fresh client next time: httpx's digest auth would otherwise answer a 401 to
            # its cached challenge with a second wrong login, and the device counts both.
            await self._drop_client()
            self.auth_failures += 1
            raise DriverError(
                self.device_id,
                f"ISAPI login refused ({self.auth_failures} of {self.max_auth_failures}): {err}",
            ) from err
        except (httpx.TransportError, OSError) as err:
            await self._drop_client()
            reason = f"ISAPI unreachable: {err!r}"[:200]
            if self.nvr:
                self.links.report(self.device_id, NvrState(reachable=False, reason=reason))
            raise DriverError(
                self.device_id, await self.links.cause_for(self.parent_id, reason)
            ) from err
        except httpx.HTTPError as err:
            # It answered (an HTTP error status): up, so no cause for the cameras behind it.
            await self._drop_client()
            raise DriverError(self.device_id, f"ISAPI error: {err!r}"[:200]) from err
        except ValueError as err:
            raise DriverError(self.device_id, f"ISAPI reply: {err}") from err
        self.auth_failures = 0
        metrics["alert_stream_ok"] = stream_ok
        if self._link is not None:
            metrics.update(self.links.parent_metrics(self._link.nvr_id, self._link.channel))
        self._seq += 1
        return [
            Reading(device_id=self.device_id, ts=utc_now(), metrics=metrics, seq=self._seq),
            *events,
            *channel_events,
        ]

    def _channel_events(self, lost: frozenset[int]) -> list[Reading]:
        """Video loss that started or ended on a camera's channel, as that camera's event."""
        events = []
        links = self.links.cameras_on(self.device_id)
        for link in sorted(links, key=lambda item: (item.channel or 0, item.camera_id)):
            active = link.channel in lost
            if self._announced.get(link.camera_id, False) == active:
                continue
            self._announced[link.camera_id] = active
            events.append(
                Reading(
                    device_id=link.camera_id,
                    ts=utc_now(),
                    kind="event",
                    metrics={
                        "event": "videoloss",
                        "event_active": active,
                        "event_source": "nvr",
                        "channel_id": link.channel or 0,
                        "parent_id": self.device_id,
                    },
                )
            )
        attached = {link.camera_id for link in links}
        self._announced = {k: v for k, v in self._announced.items() if k in attached}
        return events

    async def _get_xml(self, path: str) -> ET.Element:
        response = await self._http().get(path)
        if response.status_code == 401:
            raise IsapiAuthError(f"401 on {path}")
        response.raise_for_status()
        return parse_xml(response.content)

    async def _nvr_health(self) -> tuple[dict[str, MetricValue], frozenset[int]]:
        storage = await self._get_xml("/ISAPI/ContentMgmt/Storage")
        capacity = free = 0.0
        statuses = []
        for hdd in storage.iter():
            if _local(hdd.tag) != "hdd":
                continue
            statuses.append(child_text(hdd, "status").lower() or "unknown")
            capacity += float(child_text(hdd, "capacity") or 0)
            free += float(child_text(hdd, "freeSpace") or 0)
        channels = await self._get_xml("/ISAPI/ContentMgmt/InputProxy/channels/status")
        rows = [c for c in channels.iter() if _local(c.tag) == "InputProxyChannelStatus"]
        lost_rows = [
            row
            for row in rows
            if child_text(row, "online").lower() != "true"
            or child_text(row, "chanDetectResult").lower() == "videoloss"
        ]
        lost_channels = frozenset(
            int(channel) for row in lost_rows if (channel := child_text(row, "id")).isdigit()
        )
        bad = [s for s in statuses if s != "ok"]
        disk_status = bad[0] if bad else ("ok" if statuses else "no_disk")
        return {
            "disk_status": disk_status[:64],
            "disk_fill_pct": round(100.0 * (1 - free / capacity), 2) if capacity else 100.0,
            "channels_total": len(rows),
            "channels_video_loss": len(lost_rows),
            # An NVR records only onto a working disk; per-channel record state needs the
            # model's own endpoint, so this is the disk side of "is it recording".
            "recording": disk_status == "ok" and free > 0,
        }, lost_channels

    async def _listen(self) -> tuple[list[Reading], bool]:
        """Events from the alert stream for listen_s; and whether its heartbeat was seen."""
        events: list[Reading] = []
        last_beat = time.monotonic()
        heard = False
        deadline = time.monotonic() + self.listen_s
        # Between heartbeats the stream is silent for as long as the device's heartbeat
        # period (Hikvision: about 10 s, the HTTP timeout itself): the watchdog judges
        # silence, so a read may wait past it rather than fail at the HTTP timeout.
        stream_timeout = httpx.Timeout(HTTP_TIMEOUT_S, read=self.watchdog_s + HTTP_TIMEOUT_S)
        async with self._http().stream(
            "GET", "/ISAPI/Event/notification/alertStream", timeout=stream_timeout
        ) as reply:
            if reply.status_code == 401:
                raise IsapiAuthError("401 on alertStream")
            reply.raise_for_status()
            boundary = reply.headers.get("content-type", "").partition("boundary=")[2]
            parts = MultipartParts(boundary.strip('"') or "boundary")
            chunks = reply.aiter_bytes()
            while (remaining := deadline - time.monotonic()) > 0:
                if time.monotonic() - last_beat > self.watchdog_s:
                    return events, False  # silent stream: the device or its link hung
                try:
                    chunk = await asyncio.wait_for(_next(chunks), min(remaining, self.watchdog_s))
                except TimeoutError:
                    continue
                if chunk is None:
                    return events, False
                for body in parts.feed(chunk):
                    alert = parse_xml(body)
                    last_beat = time.monotonic()  # any part proves the stream alive
                    heard = True
                    reading = alert_reading(self.device_id, alert)
                    if reading is not None:
                        events.append(reading)
        return events, heard

    async def _drop_client(self) -> None:
        """A fresh HTTP client (and digest challenge) at the next request."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def close(self) -> None:
        """Close the HTTP client; the device leaves the NVR links."""
        if self._entry is not None:
            self.links.detach_nvr(self._entry)
        if self._link is not None:
            self.links.detach_camera(self._link)
        await self._drop_client()


async def _next(chunks: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None
