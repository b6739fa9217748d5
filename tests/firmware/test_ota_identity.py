"""The OTA sender's own broker identity: it can run an update and do nothing else."""

from __future__ import annotations

import secrets
import stat
import threading
from pathlib import Path

from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from firmware_tools.ota_identity import IDENTITY_FILE, ensure_ota_identity
from firmware_tools.ota_sender import DeviceTransfer, OtaSender, PreparedImage
from firmware_tools.reference_device import DeviceSwarm
from firmware_tools.simulated_fleet import make_signed_image, reference_device, register_ota_devices
from tests.broker_security import AclClient
from tests.conftest import RunningStack


def test_the_ota_identity_updates_a_device_and_reads_nothing_else(
    running_stack: RunningStack, tmp_path: Path, unique_id: str
) -> None:
    s = running_stack.settings
    admin = BrokerAdmin(
        host=s.mqtt.host,
        port=s.mqtt.port,
        username=s.mqtt.username,
        password=running_stack.mqtt_password,
    )
    login = ensure_ota_identity(admin, tmp_path / "state", username=f"ota-{unique_id}")
    path = tmp_path / "state" / IDENTITY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_ota_identity(admin, tmp_path / "state", username=f"ota-{unique_id}") == login

    # It may not read what devices report, nor publish as a device.
    probe = AclClient(s.mqtt.host, s.mqtt.port, login.username, login.password)
    try:
        assert probe.connect_reason == "Success"
        assert probe.subscribe("kota/v1/dev/+/telemetry") >= 0x80
        assert probe.subscribe("kota/v1/dev/+/ota/chunk") >= 0x80
        assert probe.subscribe("kota/v1/dev/+/ota/status") < 0x80
    finally:
        probe.close()

    dynsec = DynamicSecurityClient(admin)
    database = open_database(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    device_id = f"{unique_id}-d"
    try:
        logins = register_ota_devices(
            RegistryService(database, DynsecIdentities(dynsec)), [device_id]
        )
    finally:
        dynsec.close()
        database.close()
    image = make_signed_image(tmp_path / "image", size=5000)
    swarm = DeviceSwarm(s.mqtt.host, s.mqtt.port)
    swarm.add(reference_device(device_id, image), logins[device_id])
    swarm.start()
    done = threading.Event()
    seen: list[DeviceTransfer] = []

    def on_change(record: DeviceTransfer) -> None:
        seen.append(record)
        if record.state in ("installed", "failed", "declined"):
            done.set()

    sender = OtaSender(
        host=login.host,
        port=login.port,
        username=login.username,
        password=login.password,
        client_id=f"ota-{secrets.token_hex(4)}",
        on_change=on_change,
    )
    try:
        assert swarm.wait_connected()
        sender.start()
        sender.offer(device_id, "c-ident", PreparedImage.of(image.manifest, image.data, 1024))
        assert done.wait(30)
    finally:
        sender.stop()
        swarm.stop()
    assert (seen[-1].state, seen[-1].version) == ("installed", "2.0.0")
