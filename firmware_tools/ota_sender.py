"""The hub's side of OTA: offer images, serve chunks under a byte-rate limit, track each device.

One paho client (its network thread) receives every device's ``ota/status``; one pump
thread sends chunks: round-robin over the transfers, at most ``window`` chunks ahead of a
device's last ack, never faster than ``rate_bytes_per_s`` in all. A device that stops
acking gets its window again after ``ack_timeout_s`` (a few times), then waits silently for
it to come back and say where to resume; after ``stall_timeout_s`` of silence it has failed.

Every change of a device's state (not each ack) is handed to ``on_change`` from the
sender's threads: the campaign queues it, so nothing slow runs in the network thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from firmware_tools.errors import FirmwareError
from firmware_tools.image_manifest import ImageManifest
from firmware_tools.ota_protocol import (
    CHUNK,
    CHUNK_HEADER,
    CHUNK_MAGIC,
    CONTROL,
    OFFER,
    STATUS_FILTER,
    Control,
    Offer,
    OtaProtocolError,
    chunk_count,
    device_of_status_topic,
    ota_topic,
    parse_status,
)

log = logging.getLogger(__name__)

TransferState = Literal[
    "offered",
    "receiving",
    "rebooting",
    "installed",
    "declined",
    "failed",
    "rolled_back",
]
FINAL_STATES: Final = frozenset({"installed", "declined", "failed", "rolled_back"})
DEFAULT_CHUNK_SIZE: Final = 16 * 1024


def transfer_id(campaign: str, device_id: str) -> str:
    """The transfer's id: the same for a campaign and device after any restart (resume)."""
    return hashlib.sha256(f"{campaign}\n{device_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image in memory with the SHA-256 of each chunk computed once for every device."""

    manifest: ImageManifest
    data: bytes
    chunk_size: int
    digests: tuple[bytes, ...]

    @classmethod
    def of(cls, manifest: ImageManifest, data: bytes, chunk_size: int) -> PreparedImage:
        """Check ``data`` against the manifest and hash its chunks."""
        if len(data) != manifest.size or hashlib.sha256(data).hexdigest() != manifest.sha256:
            raise FirmwareError("the image does not match its manifest's size and SHA-256")
        digests = tuple(
            hashlib.sha256(data[i : i + chunk_size]).digest()
            for i in range(0, len(data), chunk_size)
        )
        return cls(manifest, data, chunk_size, digests)

    @property
    def chunks(self) -> int:
        """How many chunks."""
        return chunk_count(self.manifest.size, self.chunk_size)

    def chunk_payload(self, transfer: str, index: int) -> bytes:
        """The ``ota/chunk`` payload of chunk ``index`` for this transfer."""
        start = index * self.chunk_size
        data = self.data[start : start + self.chunk_size]
        header = CHUNK_HEADER.pack(
            CHUNK_MAGIC, bytes.fromhex(transfer), index, len(data), self.digests[index]
        )
        return header + data


@dataclass(slots=True, kw_only=True)
class DeviceTransfer:
    """Where one device's transfer stands (a copy is what ``on_change`` receives)."""

    device_id: str
    campaign: str
    transfer: str
    state: TransferState = "offered"
    acked: int = 0  # the next chunk the device wants
    chunks: int = 0
    version: str | None = None
    reason: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    changed_at: float = field(default_factory=time.monotonic)
    # Pump bookkeeping, not part of what the campaign stores.
    sent_upto: int = 0
    progress_at: float = field(default_factory=time.monotonic)
    retries: int = 0
    image: PreparedImage | None = None


ChangeCallback = Callable[[DeviceTransfer], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderSettings:
    """How the sender behaves."""

    window: int = 4
    rate_bytes_per_s: float = 0.0  # 0: unlimited
    offer_timeout_s: float = 30.0
    ack_timeout_s: float = 5.0
    max_retries: int = 3
    stall_timeout_s: float = 120.0
    online_timeout_s: float = 60.0


class _TokenBucket:
    """Bytes per second, with one second's worth of burst."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()

    def wait_for(self, amount: int, stop: threading.Event) -> None:
        if self.rate <= 0:
            return
        while not stop.is_set():
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= amount or self.tokens >= self.rate:
                self.tokens -= amount
                return
            stop.wait((min(amount, self.rate) - self.tokens) / self.rate)


class OtaSender:
    """Offers images to devices and serves them their chunks over MQTT."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        client_id: str,
        settings: SenderSettings | None = None,
        on_change: ChangeCallback | None = None,
    ) -> None:
        self.settings = settings or SenderSettings()
        self.on_change = on_change
        self.transfers: dict[str, DeviceTransfer] = {}
        self.bytes_sent = 0
        self.protocol_errors = 0
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._bucket = _TokenBucket(self.settings.rate_bytes_per_s)
        self._connected = threading.Event()
        self._connect_reason = ""
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._host, self._port = host, port
        self._pump_thread = threading.Thread(target=self._pump, name="ota-pump", daemon=True)

    # -- life cycle ---------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        """Connect, subscribe to every device's status, start the pump."""
        try:
            self.client.connect(self._host, self._port, keepalive=30)
        except OSError as err:
            raise FirmwareError(
                f"cannot reach the broker at {self._host}:{self._port}: {err}"
            ) from err
        self.client.loop_start()
        if not self._connected.wait(timeout_s) or self._connect_reason != "Success":
            self.client.loop_stop()
            raise FirmwareError(
                f"the broker refused the OTA sender: {self._connect_reason or 'no answer'}"
            )
        self._pump_thread.start()

    def stop(self) -> None:
        """Stop the pump and disconnect."""
        self._stop.set()
        with self._work:
            self._work.notify_all()
        if self._pump_thread.is_alive():
            self._pump_thread.join(10)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connect_reason = str(reason)
        if not reason.is_failure:
            client.subscribe(STATUS_FILTER, qos=1)
        self._connected.set()

    # -- what the campaign calls ---------------------------------------------------------------
    def offer(self, device_id: str, campaign: str, image: PreparedImage) -> DeviceTransfer:
        """Offer ``image`` to a device (again, if it was offered before: it resumes)."""
        transfer = transfer_id(campaign, device_id)
        offer = Offer(
            transfer=transfer,
            campaign=campaign,
            chunk_size=image.chunk_size,
            manifest=image.manifest,
        )
        record = DeviceTransfer(
            device_id=device_id,
            campaign=campaign,
            transfer=transfer,
            chunks=image.chunks,
            image=image,
        )
        with self._lock:
            self.transfers[device_id] = record
        self.client.publish(ota_topic(device_id, OFFER), offer.encode(), qos=1)
        self._changed(replace(record))
        return replace(record)

    def control(self, device_id: str, control: Control) -> None:
        """Send a device an abort or a rollback."""
        self.client.publish(ota_topic(device_id, CONTROL), control.encode(), qos=1)

    def forget(self, device_id: str) -> None:
        """Stop serving a device (a paused campaign stops its transfers)."""
        with self._lock:
            self.transfers.pop(device_id, None)

    def snapshot(self) -> dict[str, DeviceTransfer]:
        """A copy of every device's transfer."""
        with self._lock:
            return {k: replace(v) for k, v in self.transfers.items()}

    # -- statuses ---------------------------------------------------------------
    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device_id = device_of_status_topic(msg.topic)
        if device_id is None:
            return
        try:
            status = parse_status(bytes(msg.payload))
        except OtaProtocolError as err:
            self.protocol_errors += 1
            log.warning("device %s: bad OTA status: %s", device_id, err.detail)
            return
        changed: DeviceTransfer | None = None
        with self._lock:
            record = self.transfers.get(device_id)
            if record is None:
                if status.state in ("installed", "rolled_back") and status.version:
                    # A device reporting after a hub restart: the campaign still wants it.
                    changed = DeviceTransfer(
                        device_id=device_id,
                        campaign="",
                        transfer=status.transfer or "",
                        state=status.state,
                        version=status.version,
                    )
            elif status.transfer is not None and status.transfer != record.transfer:
                return  # an answer about another (older) transfer
            else:
                changed = self._apply(record, status)
            self._work.notify_all()
        if changed is not None:
            self._changed(changed)

    def _apply(self, record: DeviceTransfer, status: Any) -> DeviceTransfer | None:
        """Update ``record`` under the lock; a copy when its state changed."""
        now = time.monotonic()
        before = record.state
        state = status.state
        if state in ("accepted", "receiving"):
            if record.state in FINAL_STATES or record.state == "rebooting":
                return None
            wanted = min(status.next_chunk or 0, record.chunks)
            if state == "accepted" or wanted < record.acked or wanted > record.sent_upto:
                record.sent_upto = wanted  # a resume, or a device that missed chunks
            record.acked = wanted
            record.progress_at, record.retries = now, 0
            record.state = "receiving"
        elif state == "error":
            log.info("device %s answered an OTA message with %s", record.device_id, status.reason)
            return None
        elif state == "declined" and status.reason == "already_installed" and record.image:
            # It runs this image already: it installed while no hub listened (a pause or a
            # restart between its last chunk and its report), so the update is done.
            record.state, record.reason = "installed", None
            record.version = record.image.manifest.version
        else:
            record.state = state
            record.reason = status.reason
            if status.version is not None:
                record.version = status.version
            if state == "rebooting":
                record.progress_at = now
        if record.state == before and state != "accepted":
            return None
        record.changed_at = now
        return replace(record)

    def _changed(self, record: DeviceTransfer) -> None:
        if self.on_change is not None:
            self.on_change(record)

    def _fail(self, record: DeviceTransfer, reason: str) -> DeviceTransfer:
        record.state, record.reason = "failed", reason
        record.changed_at = time.monotonic()
        return replace(record)

    # -- chunks ---------------------------------------------------------------
    def _pump(self) -> None:
        s = self.settings
        while not self._stop.is_set():
            sends: list[tuple[str, bytes]] = []
            failed: list[DeviceTransfer] = []
            with self._work:
                now = time.monotonic()
                for record in self.transfers.values():
                    if record.state == "offered" and now - record.started_at > s.offer_timeout_s:
                        failed.append(self._fail(record, "no_answer"))
                    elif (
                        record.state == "rebooting"
                        and now - record.progress_at > s.online_timeout_s
                    ):
                        failed.append(self._fail(record, "not_back_online"))
                    elif record.state == "receiving" and record.image is not None:
                        idle = now - record.progress_at
                        if idle > s.stall_timeout_s:
                            failed.append(self._fail(record, "stalled"))
                            continue
                        if record.sent_upto < min(record.acked + s.window, record.chunks):
                            payload = record.image.chunk_payload(record.transfer, record.sent_upto)
                            sends.append((record.device_id, payload))
                            record.sent_upto += 1
                        elif (
                            idle > s.ack_timeout_s * (record.retries + 1)
                            and record.retries < s.max_retries
                        ):
                            record.retries += 1
                            record.sent_upto = record.acked  # send the window again
                if not sends and not failed:
                    self._work.wait(0.2)
                    continue
            for record in failed:
                self._changed(record)
            for device_id, payload in sends:
                self._bucket.wait_for(len(payload), self._stop)
                self.client.publish(ota_topic(device_id, CHUNK), payload, qos=1)
                self.bytes_sent += len(payload)
