"""The OTA protocol over MQTT, spelt once: topics, the four messages, and their parsers.

Everything lives under ``kota/v1/dev/{device_id}/ota/``; docs/ota.md gives every byte.

* ``ota/offer`` (hub -> device, JSON): the signed manifest, the transfer id, the chunk size.
* ``ota/status`` (device -> hub, JSON): accepted (with the chunk to start from), declined,
  receiving (an ack naming the next chunk wanted), rebooting, installed, failed, rolled_back,
  error (a message the device could not use, with the reason).
* ``ota/chunk`` (hub -> device, binary): a 60-byte header (magic, transfer id, index,
  length, SHA-256 of the data) and the data.
* ``ota/control`` (hub -> device, JSON): abort a transfer, or roll back to the previous image.

The parsers never raise anything but ``OtaProtocolError``, whose ``reason`` is a short
machine word the device sends back in its ``error`` status.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Final, Literal, get_args

import orjson
from pydantic import ValidationError

from drivers.contract import PREFIX
from firmware_tools.image_manifest import ImageManifest

OFFER: Final = "offer"
CHUNK: Final = "chunk"
STATUS: Final = "status"
CONTROL: Final = "control"
OtaTopicKind = Literal["offer", "chunk", "status", "control"]
# What the hub subscribes to: every device's OTA answers.
STATUS_FILTER: Final = f"{PREFIX}dev/+/ota/{STATUS}"

CHUNK_MAGIC: Final = b"KFC1"
# magic, transfer id (16 bytes), chunk index (u32), data length (u32), SHA-256 of the data.
CHUNK_HEADER: Final = struct.Struct(">4s16sII32s")
MIN_CHUNK_SIZE: Final = 256
MAX_CHUNK_SIZE: Final = 256 * 1024
MAX_JSON_BYTES: Final = 64 * 1024
TRANSFER_ID: Final = re.compile(r"[0-9a-f]{32}")
REASON: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")

StatusState = Literal[
    "accepted",
    "declined",
    "receiving",
    "rebooting",
    "installed",
    "failed",
    "rolled_back",
    "error",
]
STATUS_STATES: Final = frozenset(get_args(StatusState))
ControlAction = Literal["abort", "rollback"]


class OtaProtocolError(ValueError):
    """An OTA message breaks the protocol; ``reason`` is the short word sent back."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def ota_topic(device_id: str, kind: OtaTopicKind) -> str:
    """``kota/v1/dev/{device_id}/ota/{kind}``."""
    return f"{PREFIX}dev/{device_id}/ota/{kind}"


def device_of_status_topic(topic: str) -> str | None:
    """The device id of an ``ota/status`` topic, else None."""
    parts = topic.split("/")
    if len(parts) == 6 and parts[:3] == ["kota", "v1", "dev"] and parts[4:] == ["ota", STATUS]:
        return parts[3] or None
    return None


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks an image of ``size`` bytes takes."""
    return -(-size // chunk_size)


# -- messages ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """The hub offers a device an image."""

    transfer: str
    campaign: str
    chunk_size: int
    manifest: ImageManifest

    @property
    def chunks(self) -> int:
        """How many chunks the image takes."""
        return chunk_count(self.manifest.size, self.chunk_size)

    def encode(self) -> bytes:
        """The offer's payload."""
        return orjson.dumps(
            {
                "transfer": self.transfer,
                "campaign": self.campaign,
                "chunk_size": self.chunk_size,
                "chunks": self.chunks,
                "manifest": self.manifest.model_dump(mode="json"),
            }
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """What a device says about a transfer (or about a message it could not use)."""

    state: StatusState
    transfer: str | None = None
    next_chunk: int | None = None
    version: str | None = None
    reason: str | None = None

    def encode(self) -> bytes:
        """The status payload; absent fields are left out."""
        body: dict[str, object] = {"state": self.state}
        for key in ("transfer", "next_chunk", "version", "reason"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return orjson.dumps(body)


@dataclass(frozen=True, slots=True, kw_only=True)
class Chunk:
    """One piece of an image."""

    transfer: str
    index: int
    data: bytes

    def encode(self) -> bytes:
        """Header and data."""
        return (
            CHUNK_HEADER.pack(
                CHUNK_MAGIC,
                bytes.fromhex(self.transfer),
                self.index,
                len(self.data),
                hashlib.sha256(self.data).digest(),
            )
            + self.data
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Control:
    """The hub tells a device to abort a transfer or to roll back."""

    action: ControlAction
    transfer: str | None = None
    campaign: str | None = None

    def encode(self) -> bytes:
        """The control payload."""
        body: dict[str, object] = {"action": self.action}
        if self.transfer is not None:
            body["transfer"] = self.transfer
        if self.campaign is not None:
            body["campaign"] = self.campaign
        return orjson.dumps(body)


# -- parsers ------------------------------------------------------------------------------------
def _json_object(payload: bytes, what: str) -> dict[str, object]:
    if len(payload) > MAX_JSON_BYTES:
        raise OtaProtocolError("too_large", f"{what} is larger than {MAX_JSON_BYTES} bytes")
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise OtaProtocolError("not_json", f"{what} is not JSON: {err}") from err
    if not isinstance(value, dict):
        raise OtaProtocolError("not_object", f"{what} must be a JSON object")
    return value


def _transfer_id(value: object, what: str) -> str:
    if not isinstance(value, str) or TRANSFER_ID.fullmatch(value) is None:
        raise OtaProtocolError("bad_transfer", f"{what}: transfer must be 32 lower-case hex digits")
    return value


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OtaProtocolError("bad_field", f"{what} must be an integer from {low} to {high}")
    return value


def parse_offer(payload: bytes) -> Offer:
    """An ``ota/offer`` payload, checked; the signature is the device's to verify."""
    body = _json_object(payload, "offer")
    transfer = _transfer_id(body.get("transfer"), "offer")
    campaign = body.get("campaign")
    if not isinstance(campaign, str) or not 0 < len(campaign) <= 64:
        raise OtaProtocolError("bad_field", "offer: campaign must be a string of 1-64 characters")
    chunk_size = _int(body.get("chunk_size"), "offer: chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
    raw = body.get("manifest")
    if not isinstance(raw, dict):
        raise OtaProtocolError("bad_manifest", "offer: manifest must be a JSON object")
    try:
        manifest = ImageManifest.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise OtaProtocolError("bad_manifest", f"offer: manifest.{where}: {first['msg']}") from err
    offer = Offer(transfer=transfer, campaign=campaign, chunk_size=chunk_size, manifest=manifest)
    if "chunks" in body and body["chunks"] != offer.chunks:
        raise OtaProtocolError("bad_field", f"offer: chunks must be {offer.chunks} for this size")
    return offer


def parse_chunk(payload: bytes) -> Chunk:
    """An ``ota/chunk`` payload whose data matches its own length and SHA-256."""
    if len(payload) < CHUNK_HEADER.size:
        raise OtaProtocolError(
            "short_chunk", f"chunk shorter than its {CHUNK_HEADER.size}-byte header"
        )
    magic, transfer, index, length, digest = CHUNK_HEADER.unpack_from(payload)
    if magic != CHUNK_MAGIC:
        raise OtaProtocolError("bad_magic", "chunk does not start with KFC1")
    data = payload[CHUNK_HEADER.size :]
    if len(data) != length or length == 0:
        raise OtaProtocolError("bad_length", f"chunk says {length} bytes but carries {len(data)}")
    if hashlib.sha256(data).digest() != digest:
        raise OtaProtocolError("chunk_sha256", f"chunk {index}: data does not match its SHA-256")
    return Chunk(transfer=transfer.hex(), index=index, data=data)


def parse_control(payload: bytes) -> Control:
    """An ``ota/control`` payload."""
    body = _json_object(payload, "control")
    action = body.get("action")
    if action not in ("abort", "rollback"):
        raise OtaProtocolError("bad_action", "control: action must be abort or rollback")
    transfer = body.get("transfer")
    campaign = body.get("campaign")
    if campaign is not None and (not isinstance(campaign, str) or not 0 < len(campaign) <= 64):
        raise OtaProtocolError("bad_field", "control: campaign must be a string of 1-64 characters")
    return Control(
        action=action,
        transfer=None if transfer is None else _transfer_id(transfer, "control"),
        campaign=campaign,
    )


def parse_status(payload: bytes) -> Status:
    """An ``ota/status`` payload (the hub's side)."""
    body = _json_object(payload, "status")
    state = body.get("state")
    if state not in STATUS_STATES:
        raise OtaProtocolError("bad_state", f"status: unknown state {str(state)[:40]!r}")
    transfer = body.get("transfer")
    next_chunk = body.get("next_chunk")
    version = body.get("version")
    reason = body.get("reason")
    if version is not None and (not isinstance(version, str) or not 0 < len(version) <= 64):
        raise OtaProtocolError("bad_field", "status: version must be a string of 1-64 characters")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
        raise OtaProtocolError("bad_field", "status: reason must be a string of at most 200")
    return Status(
        state=state,  # type: ignore[arg-type]
        transfer=None if transfer is None else _transfer_id(transfer, "status"),
        next_chunk=None if next_chunk is None else _int(next_chunk, "status: next_chunk", 0, 2**32),
        version=version,
        reason=reason,
    )
