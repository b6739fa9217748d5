"""The in-process agent's gateway identity under ``kotahub run``: made once, kept 0600.

On one machine nobody should have to copy a password the registry printed into a config
file. When ``agent.gateway_id`` is set and no ``agent.mqtt_password`` is given, ``kotahub
run`` registers the gateway in the registry (which creates its broker identity: publish
under ``kota/v1/gw/{gateway_id}/`` only), or issues it a new secret when the gateway exists
but its secret was never kept here, and stores the secret in
``<state_dir>/agent/gateway-<gateway_id>.secret`` (mode 0600). Later starts read that file;
a stored secret the broker no longer takes is replaced the same way. It is never printed
or logged.

An agent built by other code (the demo runner) gets its credential the same way: call
``ensure_gateway_credential`` and pass the returned settings to ``Agent``, or set
``agent.mqtt_username``/``agent.mqtt_password`` in the settings it is given.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import SecretStr

from device_registry.errors import NotFoundError, RegistryError
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate
from hub.local_stack import mqtt_connect_check, mqtt_endpoint
from hub.settings import ConfigError, Settings

log = logging.getLogger(__name__)
GATEWAY_TYPE = "field_agent"
ACTOR = "kotahub-run"


def credential_path(settings: Settings, gateway_id: str) -> Path:
    """Where ``kotahub run`` keeps a gateway's MQTT secret."""
    configured = settings.agent.credential_file
    return configured or settings.state_dir / "agent" / f"gateway-{gateway_id}.secret"


def _needs_credential(settings: Settings) -> bool:
    agent = settings.agent
    # Given in the settings, or told to log in as the admin (test and bench setups).
    return agent.mqtt_password is None and agent.mqtt_username != settings.mqtt.username


def _read(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise ConfigError(f"agent.credential_file: {path}: {err.strerror}") from err
    return text or None


def _write_private(path: Path, secret: str) -> None:
    """Write the secret atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _broker_accepts(settings: Settings, username: str, password: str) -> bool:
    host, port, tls = mqtt_endpoint(settings)
    ok, reason = mqtt_connect_check(
        host, port, username, password, settings.mqtt.connect_timeout_s, tls=tls, client_id=username
    )
    if not ok and "authori" not in reason.lower() and "password" not in reason.lower():
        # Not a refusal of the secret (the broker is down, TLS): the agent's own
        # reconnect loop handles that; a new secret would not help.
        log.warning("gateway identity not checked: broker answered %s", reason)
        return True
    return ok


def _issue(service: RegistryService, gateway_id: str) -> str:
    """Register the gateway (or give it a new secret); return the secret."""
    try:
        device = service.get_device(gateway_id)
    except NotFoundError:
        device = None
    if device is None:
        try:
            service.get_type(GATEWAY_TYPE)
        except NotFoundError:
            service.create_type(
                DeviceTypeCreate(
                    name=GATEWAY_TYPE,
                    family="gateway",
                    protocol="mqtt",
                    expected_interval_s=60,
                    is_gateway=True,
                    description="A Kotahub field agent (kotahub agent / kotahub run)",
                ),
                actor=ACTOR,
            )
        written = service.create_device(
            DeviceCreate(id=gateway_id, device_type=GATEWAY_TYPE, state="active"), actor=ACTOR
        )
        log.info("gateway %s registered with an MQTT identity of its own", gateway_id)
    else:
        if not service.get_type(device.device_type).is_gateway:
            raise ConfigError(
                f"agent.gateway_id: {gateway_id!r} is a {device.device_type} in the registry, "
                "not a gateway"
            )
        written = service.rotate_credentials(gateway_id, actor=ACTOR)
        log.info("gateway %s: new MQTT secret issued (none was kept here)", gateway_id)
    if written.credentials is None:
        raise ConfigError(f"agent.gateway_id: the registry issued no MQTT secret for {gateway_id}")
    return written.credentials.password


def ensure_gateway_credential(
    settings: Settings, service: RegistryService, gateway_id: str
) -> Settings:
    """Settings whose agent logs in as ``gateway_id`` with a secret the broker takes.

    Unchanged when the settings give the password (or name the admin identity). Needs a
    registry with MQTT identities (``registry.mqtt_identities``); ConfigError says why not.
    """
    if not _needs_credential(settings):
        return settings
    username = settings.agent.mqtt_username or gateway_id
    if username != gateway_id:
        return settings  # another identity, named by the operator: its password is theirs
    path = credential_path(settings, gateway_id)
    secret = _read(path)
    if secret is None or not _broker_accepts(settings, username, secret):
        if service.identities is None:
            raise ConfigError(
                f"agent.mqtt_password: not set for gateway {gateway_id!r}, and the registry "
                "makes no MQTT identities (registry.mqtt_identities = false) to issue one"
            )
        try:
            secret = _issue(service, gateway_id)
        except RegistryError as err:
            raise ConfigError(
                f"agent.gateway_id: cannot issue {gateway_id}'s secret: {err}"
            ) from err
        _write_private(path, secret)
    agent = settings.agent.model_copy(update={"mqtt_password": SecretStr(secret)})
    return settings.model_copy(update={"agent": agent})
