"""Parent NVR links inside one agent: which camera is on which NVR channel, and each NVR's health.

A neighbourhood package is a camera behind a 4-slot NVR (the NVR is the camera's parent
in the registry, ``DeviceSpec.parent_id``; the channel is the camera's
``driver_config.nvr_channel``). The NVR's poller posts what it sees here; a camera's poller
reads it, so that:

- video loss the NVR reports on a channel becomes a ``videoloss`` event on the camera of
  that channel (``event_source`` ``nvr``, ``parent_id``, ``channel_id``), and the camera's
  telemetry carries ``nvr_video_loss`` and ``nvr_recording``;
- a camera that does not answer while its NVR does not answer either is offline with the
  parent as its cause (``parent NVR <id> unreachable: ...``), not as one more dead camera.

It is per process (the agent runs every poller of its gateway in one), keyed by device id;
a camera whose NVR is polled by another agent keeps its own cause.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

PROBE_TIMEOUT_S = 2.0
# An NVR report younger than this decides whether a dead camera's parent is down; an older
# one is checked with one TCP probe (the camera's and the NVR's polls come in any order).
PARENT_FRESH_S = 30.0


@dataclass(frozen=True, slots=True)
class NvrState:
    """One NVR's last poll as its cameras need it."""

    reachable: bool
    reason: str = ""  # why it is unreachable
    lost_channels: frozenset[int] = frozenset()
    recording: bool | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True, eq=False)
class CameraLink:
    """A camera on an NVR's channel (channel None: on the NVR, channel not configured).

    Compared by identity: a poller detaches only its own link, never a successor's.
    """

    camera_id: str
    nvr_id: str
    channel: int | None


@dataclass(frozen=True, slots=True, eq=False)
class NvrEntry:
    """An NVR poller's registration: where its cameras probe it (compared by identity)."""

    nvr_id: str
    address: str


def parent_cause(nvr_id: str, reason: str) -> str:
    """The status reason of a camera whose parent NVR is down (documented for alerting)."""
    return f"parent NVR {nvr_id} unreachable: {reason}"


class NvrLinks:
    """The agent's cameras per NVR channel, the NVRs' addresses and their last health."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cameras: dict[str, CameraLink] = {}
        self._nvrs: dict[str, NvrEntry] = {}
        self._states: dict[str, NvrState] = {}

    def attach_camera(self, camera_id: str, nvr_id: str, channel: int | None) -> CameraLink:
        """A camera poller starts: it sits on ``nvr_id``'s ``channel``."""
        link = CameraLink(camera_id, nvr_id, channel)
        with self._lock:
            self._cameras[camera_id] = link
        return link

    def detach_camera(self, link: CameraLink) -> None:
        """A camera poller stops (a newer poller of the same camera keeps its link)."""
        with self._lock:
            if self._cameras.get(link.camera_id) is link:
                del self._cameras[link.camera_id]

    def attach_nvr(self, nvr_id: str, address: str) -> NvrEntry:
        """An NVR poller starts, at ``address`` (host:port), so cameras can probe it."""
        entry = NvrEntry(nvr_id, address)
        with self._lock:
            self._nvrs[nvr_id] = entry
        return entry

    def detach_nvr(self, entry: NvrEntry) -> None:
        """An NVR poller stops: its cameras no longer hear of it (unless a newer one runs)."""
        with self._lock:
            if self._nvrs.get(entry.nvr_id) is entry:
                del self._nvrs[entry.nvr_id]
                self._states.pop(entry.nvr_id, None)

    def report(self, nvr_id: str, state: NvrState) -> None:
        """The NVR's poller's latest finding."""
        with self._lock:
            self._states[nvr_id] = state

    def state_of(self, nvr_id: str) -> NvrState | None:
        """The NVR's last reported state, if an NVR poller of this agent reported one."""
        with self._lock:
            return self._states.get(nvr_id)

    def address_of(self, nvr_id: str) -> str | None:
        """The NVR's address, if this agent polls it."""
        with self._lock:
            entry = self._nvrs.get(nvr_id)
        return entry.address if entry is not None else None

    def cameras_on(self, nvr_id: str) -> list[CameraLink]:
        """The cameras configured on one of ``nvr_id``'s channels (channel set)."""
        with self._lock:
            return [
                link
                for link in self._cameras.values()
                if link.nvr_id == nvr_id and link.channel is not None
            ]

    def parent_metrics(self, nvr_id: str, channel: int | None) -> dict[str, bool]:
        """``nvr_video_loss`` and ``nvr_recording`` of a camera, from its NVR's last poll."""
        state = self.state_of(nvr_id)
        if state is None or not state.reachable:
            return {}
        out: dict[str, bool] = {}
        if channel is not None:
            out["nvr_video_loss"] = channel in state.lost_channels
        if state.recording is not None:
            out["nvr_recording"] = state.recording
        return out

    async def parent_down(self, nvr_id: str, *, fresh_s: float = PARENT_FRESH_S) -> str | None:
        """Why the camera's parent NVR is down, or None (up, or not polled by this agent).

        A report younger than ``fresh_s`` decides; else the NVR's port is probed once (a
        camera's failure and its NVR's poll come in any order).
        """
        state = self.state_of(nvr_id)
        if state is not None and time.monotonic() - state.at <= fresh_s:
            return None if state.reachable else state.reason
        address = self.address_of(nvr_id)
        if address is None:
            return None
        host, _, port = address.rpartition(":")
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port)), PROBE_TIMEOUT_S
            )
        except (OSError, TimeoutError) as err:
            return f"no TCP answer at {address} ({type(err).__name__})"
        writer.close()
        return None

    async def cause_for(self, nvr_id: str | None, own: str) -> str:
        """A dead camera's status reason: its parent's, when the parent is down too."""
        down = await self.parent_down(nvr_id) if nvr_id is not None else None
        # The parent is the cause: one incident on the NVR, not one per camera.
        return own if down is None else parent_cause(nvr_id or "", down)


NVR_LINKS = NvrLinks()
