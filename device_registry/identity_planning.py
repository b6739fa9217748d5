"""What a device's state, gateway and type mean for its MQTT identity on the broker.

One rule for every write path (single update, create, bulk import): a device keeps an
identity only while it is live and needs one of that kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from device_registry.models import (
    Device,
    DeviceType,
)
from device_registry.mqtt_identities import (
    IdentitySpec,
    IssuedSecret,
)
from device_registry.schemas import (
    MqttCredentials,
)

LIVE_STATES = ("active", "maintenance")


def credentials_public(item: IssuedSecret) -> MqttCredentials:
    """The one-time view of a new secret."""
    return MqttCredentials(
        username=item.spec.username,
        client_id=item.spec.username,
        password=item.password,
        publish_prefix=item.spec.publish_prefix,
    )


def identity_spec(device: Device, device_type: DeviceType) -> IdentitySpec | None:
    """The MQTT identity a device needs, if any.

    Gateways (and agents) always speak MQTT; a device needs its own identity only when it
    speaks MQTT itself and reports directly, not through a gateway.
    """
    return _identity_spec(device.id, device.gateway_id, device_type)


def speaks_mqtt_itself(protocol: str) -> bool:
    """True for a type whose devices publish over MQTT themselves (``mqtt``, ``mqtt_gps``...).

    ``mqtt_<flavour>`` names a native-MQTT device with a payload of that flavour (the GPS
    family's trackers are ``mqtt_gps``); each needs a broker identity of its own.
    """
    return protocol == "mqtt" or protocol.startswith("mqtt_")


def _identity_spec(
    device_id: str, gateway_id: str | None, device_type: DeviceType
) -> IdentitySpec | None:
    if device_type.is_gateway:
        return IdentitySpec(device_id=device_id, kind="gateway")
    if speaks_mqtt_itself(device_type.protocol) and gateway_id is None:
        return IdentitySpec(device_id=device_id, kind="device")
    return None


@dataclass(frozen=True, slots=True)
class IdentityChange:
    """What a device's new state means for its MQTT identity: revoke the old, create a new."""

    revoke: IdentitySpec | None = None
    create: IdentitySpec | None = None


def plan_identity_change(
    *,
    device_id: str,
    state: str,
    gateway_id: str | None,
    device_type: DeviceType,
    existing_kind: str | None,
    issue_credentials: bool,
) -> IdentityChange:
    """The identity work a device's (new) state, gateway and type imply.

    The one rule for every write path (single update, create, bulk import): a device keeps
    an identity only while it is live and needs one of that kind; otherwise the existing
    identity is revoked. A missing identity is created only when credentials are wanted.
    """
    spec = _identity_spec(device_id, gateway_id, device_type)
    wanted = spec is not None and state in LIVE_STATES
    revoke: IdentitySpec | None = None
    if existing_kind is not None and (spec is None or not wanted or spec.kind != existing_kind):
        revoke = IdentitySpec(device_id=device_id, kind=identity_kind(existing_kind))
        existing_kind = None
    create = spec if wanted and existing_kind is None and issue_credentials else None
    return IdentityChange(revoke=revoke, create=create)


@dataclass(slots=True)
class PendingIdentities:
    """Broker work to do before the commit, and what to undo if the commit fails."""

    create: list[IdentitySpec] = field(default_factory=list)
    revoke: list[IdentitySpec] = field(default_factory=list)


def identity_kind(value: str) -> Any:
    """A stored identity's kind as an IdentitySpec takes it: ``gateway`` or ``device``."""
    return "gateway" if value == "gateway" else "device"
