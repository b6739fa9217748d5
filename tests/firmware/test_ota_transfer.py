"""OTA over the real broker: devices log in with their own registry identities.

A device takes an image end to end and the registry's firmware version follows; a device
dropped mid-transfer resumes from its last good chunk; a chunk altered in flight (with a
recomputed chunk hash) or an offer with a bad signature is refused by the device; a device
cannot subscribe to another device's OTA topics.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from firmware_tools.ota_protocol import CHUNK, ota_topic
from firmware_tools.ota_sender import DeviceTransfer, OtaSender, PreparedImage, SenderSettings
from firmware_tools.reference_device import DeviceLogin, DeviceSwarm
from firmware_tools.simulated_fleet import (
    SignedImage,
    make_signed_image,
    reference_device,
    register_ota_devices,
)
from tests.broker_security import AclClient
from tests.conftest import RunningStack


@pytest.fixture
def registry(running_stack: RunningStack, tmp_path: Path) -> Iterator[RegistryService]:
    """A registry of this test's own that creates identities on the session's broker."""
    s = running_stack.settings
    client = DynamicSecurityClient(
        BrokerAdmin(
            host=s.mqtt.host,
            port=s.mqtt.port,
            username=s.mqtt.username,
            password=running_stack.mqtt_password,
        )
    )
    database = open_database(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    try:
        yield RegistryService(database, DynsecIdentities(client))
    finally:
        client.close()
        database.close()


class Changes:
    """The sender's state changes, waited on by device and state."""

    def __init__(self) -> None:
        self.seen: list[DeviceTransfer] = []
        self._cond = threading.Condition()

    def __call__(self, record: DeviceTransfer) -> None:
        with self._cond:
            self.seen.append(record)
            self._cond.notify_all()

    def wait(self, device_id: str, states: set[str], timeout_s: float = 30.0) -> DeviceTransfer:
        def found() -> DeviceTransfer | None:
            return next(
                (r for r in reversed(self.seen) if r.device_id == device_id and r.state in states),
                None,
            )

        with self._cond:
            self._cond.wait_for(lambda: found() is not None, timeout=timeout_s)
            record = found()
        assert record is not None, f"{device_id} never reached {states}: {self.seen[-5:]}"
        return record


def sender_for(running_stack: RunningStack, changes: Changes, **settings: float) -> OtaSender:
    s = running_stack.settings
    sender = OtaSender(
        host=s.mqtt.host,
        port=s.mqtt.port,
        username=s.mqtt.username,
        password=running_stack.mqtt_password,
        client_id=f"ota-{secrets.token_hex(4)}",
        settings=SenderSettings(**settings),  # type: ignore[arg-type]
        on_change=changes,
    )
    sender.start()
    return sender


@pytest.fixture
def swarm(running_stack: RunningStack) -> Iterator[DeviceSwarm]:
    swarm = DeviceSwarm(running_stack.mqtt_host, running_stack.mqtt_port)
    yield swarm
    swarm.stop()


@pytest.fixture
def image(tmp_path: Path) -> SignedImage:
    return make_signed_image(tmp_path / "image", size=40_000 + 123)


def test_a_device_takes_an_image_and_reports_its_version(
    running_stack: RunningStack,
    registry: RegistryService,
    swarm: DeviceSwarm,
    image: SignedImage,
    unique_id: str,
) -> None:
    device_id = f"{unique_id}-g1"
    logins = register_ota_devices(registry, [device_id])
    swarm.add(reference_device(device_id, image), logins[device_id])
    swarm.start()
    assert swarm.wait_connected()
    changes = Changes()
    sender = sender_for(running_stack, changes)
    try:
        sender.offer(device_id, "camp1", PreparedImage.of(image.manifest, image.data, 4096))
        done = changes.wait(device_id, {"installed", "failed", "declined"})
    finally:
        sender.stop()
    assert done.state == "installed", done
    assert done.version == "2.0.0"
    # It went through its reboot: the rebooting state came before installed.
    states = [r.state for r in changes.seen if r.device_id == device_id]
    assert states.index("rebooting") < states.index("installed")
    assert swarm.members[device_id].ota.version == "2.0.0"
    assert swarm.members[device_id].connects >= 2


def test_a_device_dropped_mid_transfer_resumes_from_its_last_chunk(
    running_stack: RunningStack,
    registry: RegistryService,
    swarm: DeviceSwarm,
    image: SignedImage,
    unique_id: str,
) -> None:
    device_id = f"{unique_id}-g2"
    logins = register_ota_devices(registry, [device_id])
    swarm.add(
        reference_device(device_id, image), logins[device_id], drop_after_chunks=4, drop_for_s=1.0
    )
    swarm.start()
    assert swarm.wait_connected()
    changes = Changes()
    sender = sender_for(running_stack, changes, window=2)
    try:
        prepared = PreparedImage.of(image.manifest, image.data, 2048)
        sender.offer(device_id, "camp2", prepared)
        done = changes.wait(device_id, {"installed", "failed"})
    finally:
        sender.stop()
    member = swarm.members[device_id]
    assert done.state == "installed", done
    assert member.connects >= 3  # first connect, after the drop, after the reboot
    # After the drop the device accepted again from chunk 4, and the sender went on from there.
    resumed = [r.acked for r in changes.seen if r.device_id == device_id and r.state == "receiving"]
    assert resumed[0] == 0
    assert max(resumed) >= 4
    # Chunks kept across the drop were not counted twice: every chunk was written once.
    assert member.ota.chunks_received == prepared.chunks


def test_a_chunk_altered_in_flight_and_a_bad_signature_are_refused(
    running_stack: RunningStack,
    registry: RegistryService,
    swarm: DeviceSwarm,
    image: SignedImage,
    unique_id: str,
) -> None:
    tampered_id, forged_id = f"{unique_id}-tc", f"{unique_id}-ts"
    logins = register_ota_devices(registry, [tampered_id, forged_id])
    for device_id in (tampered_id, forged_id):
        swarm.add(reference_device(device_id, image), logins[device_id])
    swarm.start()
    assert swarm.wait_connected()
    changes = Changes()
    sender = sender_for(running_stack, changes)
    try:
        # In flight: one byte of chunk 3 changed and its chunk hash recomputed, so only
        # the signed image hash can catch it.
        data = bytearray(image.data)
        data[3 * 4096 + 17] ^= 0xFF
        prepared = PreparedImage.of(image.manifest, image.data, 4096)
        altered = PreparedImage(
            image.manifest,
            bytes(data),
            4096,
            tuple(hashlib.sha256(data[i : i + 4096]).digest() for i in range(0, len(data), 4096)),
        )
        assert altered.digests[3] != prepared.digests[3]
        sender.offer(tampered_id, "camp3", altered)
        # A manifest whose version was changed after signing.
        forged_manifest = image.manifest.model_copy(update={"version": "9.9.9"})
        forged = PreparedImage(forged_manifest, image.data, 4096, prepared.digests)
        sender.offer(forged_id, "camp3", forged)
        tampered = changes.wait(tampered_id, {"installed", "failed"})
        refused = changes.wait(forged_id, {"installed", "declined", "failed"})
    finally:
        sender.stop()
    assert (tampered.state, tampered.reason) == ("failed", "image_sha256")
    assert (refused.state, refused.reason) == ("declined", "bad_signature")
    assert swarm.members[tampered_id].ota.version == "1.0.0"
    assert swarm.members[forged_id].ota.version == "1.0.0"
    assert base64.b64decode(image.manifest.signature)  # the real one was untouched


def test_a_device_cannot_read_another_devices_ota_topics(
    running_stack: RunningStack, registry: RegistryService, unique_id: str, image: SignedImage
) -> None:
    mine, other = f"{unique_id}-a", f"{unique_id}-b"
    logins = register_ota_devices(registry, [mine, other])
    login: DeviceLogin = logins[mine]
    device = AclClient(
        running_stack.mqtt_host,
        running_stack.mqtt_port,
        login.username,
        login.password,
        client_id=login.username,
    )
    try:
        assert device.connect_reason == "Success"
        assert device.subscribe(ota_topic(mine, CHUNK)) < 0x80
        assert device.subscribe(ota_topic(other, CHUNK)) >= 0x80
        assert device.subscribe(f"kota/v1/dev/{other}/ota/#") >= 0x80
        assert device.subscribe("kota/v1/dev/+/ota/#") >= 0x80
        # And its own status topic is one it may publish on (the broker takes it).
        device.publish(ota_topic(mine, "status"), b'{"state":"error","reason":"probe"}')
    finally:
        device.close()


def test_the_byte_rate_limit_holds_the_sender_back(
    running_stack: RunningStack,
    registry: RegistryService,
    swarm: DeviceSwarm,
    tmp_path: Path,
    unique_id: str,
) -> None:
    # 96 KiB at 32 KiB/s, with one second's burst: no faster than 2 s, however fast the box.
    image = make_signed_image(tmp_path / "big", size=96 * 1024)
    device_id = f"{unique_id}-slow"
    logins = register_ota_devices(registry, [device_id])
    swarm.add(reference_device(device_id, image), logins[device_id])
    swarm.start()
    assert swarm.wait_connected()
    changes = Changes()
    sender = sender_for(running_stack, changes, rate_bytes_per_s=32 * 1024)
    try:
        started = time.monotonic()
        sender.offer(device_id, "camp-rate", PreparedImage.of(image.manifest, image.data, 4096))
        done = changes.wait(device_id, {"rebooting", "failed"})
        elapsed = time.monotonic() - started
    finally:
        sender.stop()
    assert done.state == "rebooting", done
    assert elapsed >= 1.9
    assert sender.bytes_sent >= 96 * 1024
