"""Per-device MQTT identities in Mosquitto's dynamic security, managed at run time.

Commands go to ``$CONTROL/dynamic-security/v1`` as ``{"commands": [...]}``; the broker
answers on ``$CONTROL/dynamic-security/v1/response``. Every command carries a
``correlationData`` so that answers are matched even when several commands share one
message (bulk import batches them).

Each identity gets a role of its own, named after it, whose ACL grants exactly its own
topics (``drivers.contract``'s ACL prefixes): a device publishes under ``kota/v1/dev/<id>/``
and subscribes to its ``cmd`` and ``ota`` topics; a gateway publishes and subscribes under
``kota/v1/gw/<id>/``. The client id is pinned to the username, so nobody else can take
over the session either.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import ssl
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from device_registry.errors import CredentialsError
from drivers.contract import device_acl_prefix, gateway_acl_prefix

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
IdentityKind = Literal["device", "gateway"]
# Answers that mean "already in the wanted state" when deleting.
_ABSENT_ERRORS = ("Client not found", "Role not found")


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerAdmin:
    """How the registry reaches the broker as its dynamic-security administrator."""

    host: str
    port: int
    username: str
    password: str
    timeout_s: float = 10.0
    # Set: connect with TLS, trusting this CA only and checking that the broker's
    # certificate names ``host``.
    ca_file: Path | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context for ``ca_file``, or None for plain MQTT (loopback)."""
        if self.ca_file is None:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as err:
            raise CredentialsError(f"cannot load the broker's CA {self.ca_file}: {err}") from err
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentitySpec:
    """Which identity to create: a device's or a gateway's."""

    device_id: str
    kind: IdentityKind

    @property
    def username(self) -> str:
        """MQTT username and pinned client id: the device id itself."""
        return self.device_id

    @property
    def rolename(self) -> str:
        """The identity's own role."""
        return f"{self.kind}-{self.device_id}"

    @property
    def publish_prefix(self) -> str:
        """The topic prefix the identity may publish under."""
        if self.kind == "device":
            return device_acl_prefix(self.device_id)
        return gateway_acl_prefix(self.device_id)

    def acls(self) -> list[dict[str, Any]]:
        """The ACL of the identity's role."""
        prefix = self.publish_prefix
        if self.kind == "device":
            subscribe = [f"{prefix}cmd/#", f"{prefix}ota/#"]
        else:
            subscribe = [f"{prefix}#"]
        entries = [_acl("publishClientSend", f"{prefix}#")]
        entries += [_acl("subscribePattern", topic) for topic in subscribe]
        entries += [_acl("unsubscribePattern", topic) for topic in subscribe]
        return entries


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedSecret:
    """A freshly issued secret: shown once to the caller, stored only as a hash."""

    spec: IdentitySpec
    password: str

    @property
    def sha256(self) -> str:
        """The hash the registry keeps."""
        return secret_hash(self.password)


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def secret_hash(secret: str) -> str:
    """SHA-256 of a random secret (192 bits of entropy: a slow hash adds nothing)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """A random secret for an MQTT identity or an API token."""
    return secrets.token_urlsafe(24)


class IdentityProvisioner(Protocol):
    """What the registry needs from the broker: create, rotate and revoke identities."""

    def create(self, specs: Sequence[IdentitySpec]) -> list[IssuedSecret]:
        """Create identities (replacing stale ones of the same name); return their secrets."""
        ...

    def rotate(self, spec: IdentitySpec) -> IssuedSecret:
        """Give an identity a new secret; the old one stops working at once."""
        ...

    def revoke(self, specs: Sequence[IdentitySpec]) -> None:
        """Delete identities; connected clients are disconnected."""
        ...


class DynamicSecurityClient:
    """A small blocking client for the dynamic-security control topic."""

    def __init__(self, broker: BrokerAdmin, *, batch_size: int = 50) -> None:
        self.broker = broker
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        self._connected = threading.Event()
        self._connect_reason = ""
        self._client: mqtt.Client | None = None

    def _connect(self) -> mqtt.Client:
        if self._client is not None and self._client.is_connected():
            return self._client
        self.close()
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"kotahub-registry-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(self.broker.username, self.broker.password)
        context = self.broker.tls_context()
        if context is not None:
            client.tls_set_context(context)
        subscribed = threading.Event()

        def on_connect(
            c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
        ) -> None:
            self._connect_reason = str(reason)
            if not reason.is_failure:
                c.subscribe(RESPONSE_TOPIC, qos=1)
            self._connected.set()

        def on_subscribe(
            _c: mqtt.Client, _u: object, _m: int, codes: list[ReasonCode], _p: object
        ) -> None:
            if codes and not codes[0].is_failure:
                subscribed.set()

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = self._on_message
        self._connected.clear()
        try:
            client.connect(self.broker.host, self.broker.port, keepalive=30)
        except ssl.SSLError as err:
            raise CredentialsError(
                f"TLS to the MQTT broker at {self.broker.host}:{self.broker.port} failed "
                f"(is {self.broker.ca_file} the CA that signed its certificate?): {err}"
            ) from err
        except OSError as err:
            raise CredentialsError(
                f"cannot reach the MQTT broker at {self.broker.host}:{self.broker.port}: {err}"
            ) from err
        client.loop_start()
        if not self._connected.wait(self.broker.timeout_s):
            client.loop_stop()
            raise CredentialsError("MQTT broker sent no CONNACK within the timeout")
        if self._connect_reason != "Success":
            client.loop_stop()
            raise CredentialsError(
                f"MQTT broker refused the registry's admin login: {self._connect_reason}"
            )
        if not subscribed.wait(self.broker.timeout_s):
            client.disconnect()
            client.loop_stop()
            raise CredentialsError(f"broker refused the subscription to {RESPONSE_TOPIC}")
        self._client = client
        return client

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            document = json.loads(msg.payload)
        except ValueError:
            return
        answers = document.get("responses", []) if isinstance(document, dict) else []
        with self._arrived:
            for answer in answers:
                if isinstance(answer, dict) and isinstance(answer.get("correlationData"), str):
                    self._answers[answer["correlationData"]] = answer
            self._arrived.notify_all()

    def execute(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send commands (batched) and return the broker's answer to each, in order."""
        results: list[dict[str, Any]] = []
        with self._lock:
            client = self._connect()
            for start in range(0, len(commands), self.batch_size):
                batch = [
                    {**command, "correlationData": uuid.uuid4().hex}
                    for command in commands[start : start + self.batch_size]
                ]
                keys = [c["correlationData"] for c in batch]
                info = client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1)
                info.wait_for_publish(timeout=self.broker.timeout_s)
                with self._arrived:
                    done = self._arrived.wait_for(
                        lambda keys=keys: all(k in self._answers for k in keys),  # type: ignore[misc]
                        timeout=self.broker.timeout_s,
                    )
                    if not done:
                        raise CredentialsError(
                            "the broker did not answer dynamic-security commands in time "
                            "(is the dynamic-security plugin loaded?)"
                        )
                    results += [self._answers.pop(k) for k in keys]
        return results

    def close(self) -> None:
        """Disconnect from the broker."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None


def _check(answers: Iterable[dict[str, Any]], *, tolerate: tuple[str, ...] = ()) -> None:
    failures = [
        f"{a.get('command')}: {a['error']}"
        for a in answers
        if a.get("error") and not any(t in str(a["error"]) for t in tolerate)
    ]
    if failures:
        raise CredentialsError("broker refused: " + "; ".join(failures[:5]))


class DynsecIdentities:
    """``IdentityProvisioner`` backed by Mosquitto's dynamic-security plugin."""

    def __init__(self, client: DynamicSecurityClient) -> None:
        self.client = client

    @staticmethod
    def _delete_commands(spec: IdentitySpec) -> list[dict[str, Any]]:
        return [
            {"command": "deleteClient", "username": spec.username},
            {"command": "deleteRole", "rolename": spec.rolename},
        ]

    def create(self, specs: Sequence[IdentitySpec]) -> list[IssuedSecret]:
        """Create a role and a client per identity, replacing any stale one."""
        issued = [IssuedSecret(spec=spec, password=new_secret()) for spec in specs]
        cleanup: list[dict[str, Any]] = []
        commands: list[dict[str, Any]] = []
        for item in issued:
            spec = item.spec
            # A stale identity of the same name (left by a failed registration) is
            # replaced; deleting an absent one costs the broker no file write.
            cleanup += self._delete_commands(spec)
            # One createRole with its ACL inline: the plugin saves its whole JSON file
            # after every command, so fewer commands per identity is what keeps bulk
            # registration fast.
            commands.append(
                {"command": "createRole", "rolename": spec.rolename, "acls": spec.acls()}
            )
            commands.append(
                {
                    "command": "createClient",
                    "username": spec.username,
                    "password": item.password,
                    "clientid": spec.username,
                    "textname": f"Kotahub {spec.kind} {spec.device_id}",
                    "roles": [{"rolename": spec.rolename, "priority": 0}],
                }
            )
        _check(self.client.execute(cleanup), tolerate=_ABSENT_ERRORS)
        _check(self.client.execute(commands))
        return issued

    def rotate(self, spec: IdentitySpec) -> IssuedSecret:
        """New password; the client is disabled and re-enabled so that a live session drops."""
        item = IssuedSecret(spec=spec, password=new_secret())
        _check(
            self.client.execute(
                [
                    {"command": "disableClient", "username": spec.username},
                    {
                        "command": "setClientPassword",
                        "username": spec.username,
                        "password": item.password,
                    },
                    {"command": "enableClient", "username": spec.username},
                ]
            )
        )
        return item

    def revoke(self, specs: Sequence[IdentitySpec]) -> None:
        """Delete client and role; deleting a client disconnects it."""
        commands: list[dict[str, Any]] = []
        for spec in specs:
            commands += self._delete_commands(spec)
        _check(self.client.execute(commands), tolerate=_ABSENT_ERRORS)
