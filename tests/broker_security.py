"""Helpers for the TLS and least-privilege tests: a broker set up as a new install is.

The stack is the project's own ``LocalStack`` with the admin identity limited to the
dynamic-security control topic (``stack.admin_acl = "control"``), a TLS listener on all
addresses, and clients that log in with TLS as a new install's hub, registry and agent do.
"""

from __future__ import annotations

import secrets
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device_registry.mqtt_identities import (
    DynamicSecurityClient,
    DynsecIdentities,
    IdentitySpec,
    IssuedSecret,
)
from hub.influxql import InfluxQL
from hub.local_stack import LocalStack, broker_admin, mqtt_password, read_credentials
from hub.settings import Settings, load_settings
from tests.conftest import free_port


@dataclass
class SecureStack:
    """A running broker + InfluxDB set up least-privileged, and the settings of its clients."""

    stack: LocalStack
    settings: Settings  # clients: mqtt.tls = true, the local CA
    admin_password: str
    hub_password: str
    influx: InfluxQL

    @property
    def ca_file(self) -> Path:
        """The local CA that signed the broker's certificate."""
        return self.settings.state_dir / "mosquitto" / "tls" / "ca.crt"

    @property
    def tls_port(self) -> int:
        """The TLS listener's port."""
        return self.settings.mqtt.resolved_tls_port

    def identities(self, *specs: IdentitySpec) -> dict[str, IssuedSecret]:
        """Create device or gateway identities the way the registry does (over TLS)."""
        client = DynamicSecurityClient(broker_admin(self.settings, self.admin_password))
        try:
            issued = DynsecIdentities(client).create(specs)
        finally:
            client.close()
        return {item.spec.username: item for item in issued}


@contextmanager
def secure_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, tls_names: list[str] | None = None
) -> Iterator[SecureStack]:
    """Start a least-privileged stack on free ports; stop it afterwards."""
    state_dir = tmp_path_factory.mktemp(name) / ".kotahub"
    settings = load_settings(
        None,
        state_dir=state_dir,
        mqtt={"port": free_port(), "tls_port": free_port(), "tls": True},
        influx={"url": f"http://127.0.0.1:{free_port()}"},
        stack={
            "influx_rpc_port": free_port(),
            "start_timeout_s": 60,
            "admin_acl": "control",
            "tls_bind": "0.0.0.0",
            "tls_names": tls_names or [],
        },
    )
    stack = LocalStack(settings)
    stack.up()
    hub = read_credentials(state_dir, "hub")
    assert hub is not None
    assert hub["username"] == "kotahub-hub"
    running = SecureStack(
        stack=stack,
        settings=settings,
        admin_password=mqtt_password(settings),
        hub_password=hub["password"],
        influx=InfluxQL(settings.influx.url),
    )
    try:
        yield running
    finally:
        running.influx.close()
        stack.down()


class AclClient:
    """A blocking paho client that reports SUBACK codes and collects deliveries."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        tls: ssl.SSLContext | None = None,
        client_id: str | None = None,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._arrived = threading.Condition()
        self._connected = threading.Event()
        self.connect_reason = ""
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"acl-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("no CONNACK")

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self.connect_reason = str(reason)
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._arrived:
            self.messages.append(msg)
            self._arrived.notify_all()

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1; return the SUBACK reason code (< 0x80 granted)."""
        done = threading.Event()
        codes: list[ReasonCode] = []

        def on_subscribe(
            _c: mqtt.Client, _u: object, _m: int, granted: list[ReasonCode], _p: Properties
        ) -> None:
            codes.extend(granted)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(topic, qos=1)
        if not done.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")
        return int(codes[0].value)

    def publish(self, topic: str, payload: bytes | str) -> None:
        """Publish at QoS 1 and wait for the PUBACK (sent for refused messages too)."""
        self.client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)

    def received(self, topic: str, timeout_s: float) -> list[mqtt.MQTTMessage]:
        """Messages on ``topic``, waiting up to ``timeout_s`` for the first."""
        with self._arrived:
            self._arrived.wait_for(
                lambda: any(m.topic == topic for m in self.messages), timeout=timeout_s
            )
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
