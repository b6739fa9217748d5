"""The OTA sender's own broker identity: least privilege for a hub that updates firmware.

A new install's admin may only manage dynamic security and the hub's ingest identity may
only read telemetry, so campaigns log in as ``kotahub-ota``: it may publish every device's
``ota/offer``, ``ota/chunk`` and ``ota/control`` and read their ``ota/status``, nothing else.
``ensure_ota_identity`` creates it once through the admin (over the control topic, so a
running broker needs no restart) and keeps its password in ``ota-identity.json`` (0600)
under the state folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from device_registry.errors import CredentialsError
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, new_secret
from drivers.contract import PREFIX
from firmware_tools.atomic_file import write_atomically
from firmware_tools.campaigns import BrokerLogin
from firmware_tools.errors import FirmwareError
from firmware_tools.ota_protocol import CHUNK, CONTROL, OFFER, STATUS_FILTER

OTA_USERNAME: Final = "kotahub-ota"
IDENTITY_FILE: Final = "ota-identity.json"


def ota_acls() -> list[dict[str, Any]]:
    """Publish offers, chunks and controls to any device; read any device's OTA status."""
    entries = [
        {"acltype": "publishClientSend", "topic": f"{PREFIX}dev/+/ota/{kind}"}
        for kind in (OFFER, CHUNK, CONTROL)
    ]
    entries += [
        {"acltype": acltype, "topic": STATUS_FILTER}
        for acltype in ("subscribePattern", "unsubscribePattern")
    ]
    return [{**entry, "priority": 0, "allow": True} for entry in entries]


def ensure_ota_identity(
    admin: BrokerAdmin, state_dir: Path, *, username: str = OTA_USERNAME
) -> BrokerLogin:
    """The OTA identity's login, creating the identity (and its role) the first time."""
    path = state_dir / IDENTITY_FILE
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            password = str(saved["password"])
            # The file names whose login it is: an identity made under another name stays it.
            saved_username = str(saved.get("username", username))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise FirmwareError(f"{path} is unreadable: delete it to make a new identity") from err
        return BrokerLogin(
            host=admin.host, port=admin.port, username=saved_username, password=password
        )
    password = new_secret()
    client = DynamicSecurityClient(admin)
    try:
        answers = client.execute(
            [
                {"command": "deleteClient", "username": username},
                {"command": "deleteRole", "rolename": username},
                {"command": "createRole", "rolename": username, "acls": ota_acls()},
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "textname": "Kotahub OTA sender (firmware campaigns)",
                    "roles": [{"rolename": username, "priority": 0}],
                },
            ]
        )
    except CredentialsError as err:
        raise FirmwareError(f"cannot create the OTA sender's broker identity: {err}") from err
    finally:
        client.close()
    # The two deletes may answer "not found"; the creates must not fail.
    errors = [str(a["error"]) for a in answers[2:] if a.get("error")]
    if errors:
        raise FirmwareError(f"the broker refused the OTA identity: {'; '.join(errors)}")
    state_dir.mkdir(parents=True, exist_ok=True)
    secret = json.dumps({"username": username, "password": password}).encode()
    write_atomically(path, secret, mode=0o600)
    return BrokerLogin(host=admin.host, port=admin.port, username=username, password=password)
