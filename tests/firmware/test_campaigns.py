"""Campaigns over the real broker: waves, resume after a hub restart, rollback, auto-pause.

Devices are registered in the registry with their own broker identities and run as
reference devices (``DeviceSwarm``); the hub's sender logs in as the session's admin.
The issue's 200-device campaign runs in ``bench/ota.py``; here the fleet is ~20 devices.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceUpdate
from firmware_tools.campaign_store import CAMPAIGN_FILE, CampaignSettings, CampaignStore
from firmware_tools.campaigns import (
    BrokerLogin,
    CampaignRunner,
    RegistryFleet,
    create_campaign,
    wave_sizes,
)
from firmware_tools.errors import FirmwareError
from firmware_tools.ota_sender import PreparedImage
from firmware_tools.reference_device import DeviceSwarm
from firmware_tools.simulated_fleet import (
    SignedImage,
    make_signed_image,
    reference_device,
    register_ota_devices,
)
from tests.conftest import MqttClientFactory, RunningStack

# The 200-device campaign: KOTAHUB_OTA_TEST_DEVICES=200 runs it here (about 40 s
# on a quiet 2-core machine); the suite's default keeps to its time budget.
DEVICES = int(os.environ.get("KOTAHUB_OTA_TEST_DEVICES", "20"))


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


@pytest.fixture
def swarm(running_stack: RunningStack) -> Iterator[DeviceSwarm]:
    swarm = DeviceSwarm(running_stack.mqtt_host, running_stack.mqtt_port)
    yield swarm
    swarm.stop()


@pytest.fixture
def login(running_stack: RunningStack) -> BrokerLogin:
    s = running_stack.settings
    return BrokerLogin(
        host=s.mqtt.host,
        port=s.mqtt.port,
        username=s.mqtt.username,
        password=running_stack.mqtt_password,
    )


@pytest.fixture
def image(tmp_path: Path) -> SignedImage:
    return make_signed_image(tmp_path / "image", size=20_000 + 7)


def test_a_campaign_runs_its_waves_survives_a_restart_and_rolls_back(
    registry: RegistryService,
    swarm: DeviceSwarm,
    login: BrokerLogin,
    image: SignedImage,
    mqtt_client: MqttClientFactory,
    tmp_path: Path,
    unique_id: str,
) -> None:
    ids = [f"{unique_id}-{n:03d}" for n in range(DEVICES)]
    logins = register_ota_devices(registry, ids)
    resting, retired = f"{unique_id}-maint", f"{unique_id}-gone"
    register_ota_devices(registry, [resting], state="maintenance")
    register_ota_devices(registry, [retired])
    registry.retire_device(retired, actor="test")
    # Nobody may offer these two anything: watch their OTA topics as the admin.
    watcher = mqtt_client()
    for device_id in (resting, retired):
        watcher.subscribe(f"kota/v1/dev/{device_id}/ota/#")
    droppers = set(ids[5:8])
    for device_id in ids:
        swarm.add(
            reference_device(device_id, image),
            logins[device_id],
            drop_after_chunks=3 if device_id in droppers else None,
            drop_for_s=0.5,
        )
    swarm.start()
    assert swarm.wait_connected()

    store_path = tmp_path / "state" / CAMPAIGN_FILE
    store = CampaignStore(store_path)
    fleet = RegistryFleet(registry)
    campaign = create_campaign(
        store,
        fleet,
        image.manifest,
        campaign_id="c-test",
        waves=(5, 25, 50, 100),
        settings=CampaignSettings(
            chunk_size=2048, devices_per_s=200, online_timeout_s=30, max_concurrent=100
        ),
    )
    sizes = [len(store.devices(campaign.id, wave=w)) for w in range(4)]
    assert sizes == wave_sizes(DEVICES, (5, 25, 50, 100))
    assert sizes[0] >= 1
    # Between creation and its wave, one device goes into maintenance: it is skipped.
    late = ids[-1]
    registry.update_device(late, DeviceUpdate(state="maintenance"), actor="test")

    prepared = PreparedImage.of(image.manifest, image.data, 2048)
    # A hub stopped (as if killed) once wave 2 is under way: the campaign stays "running"
    # with some devices done and others pending or mid-transfer.
    first = CampaignRunner(store, fleet, prepared, login)
    first.progress = lambda p: first.stop.set() if p.wave >= 1 else None
    interrupted = first.run(campaign.id)
    assert interrupted.state == "running"
    assert interrupted.current_wave in (1, 2)
    assert 0 < store.counts(campaign.id).get("installed", 0) < DEVICES - 1
    store.close()

    store = CampaignStore(store_path)
    done = CampaignRunner(store, fleet, prepared, login).run(campaign.id)
    assert (done.state, done.reason) == ("done", None)
    counts = store.counts(campaign.id)
    assert counts == {"installed": DEVICES - 1, "skipped": 1}, counts
    assert [d.reason for d in store.devices(campaign.id) if d.state == "skipped"] == [
        "state_maintenance"
    ]
    for device_id in ids[:-1]:
        assert registry.get_device(device_id).firmware_version == "2.0.0"
        assert swarm.members[device_id].ota.version == "2.0.0"
    assert registry.get_device(late).firmware_version == "1.0.0"
    for device_id in droppers:
        assert swarm.members[device_id].connects >= 3  # dropped, came back, rebooted
        assert swarm.members[device_id].ota.chunks_received == prepared.chunks
    assert watcher.messages == []

    back = CampaignRunner(store, fleet, prepared, login).rollback(campaign.id, timeout_s=30)
    assert (back.state, back.reason) == ("rolled_back", None)
    for device_id in ids[:-1]:
        assert registry.get_device(device_id).firmware_version == "1.0.0"
        assert swarm.members[device_id].ota.version == "1.0.0"
    store.close()


def test_a_failing_wave_pauses_the_campaign(
    registry: RegistryService,
    swarm: DeviceSwarm,
    login: BrokerLogin,
    image: SignedImage,
    tmp_path: Path,
    unique_id: str,
) -> None:
    ids = [f"{unique_id}-{n:02d}" for n in range(10)]
    logins = register_ota_devices(registry, ids)
    for device_id in ids:
        # These devices install, reboot and never come back within the timeout.
        swarm.add(reference_device(device_id, image), logins[device_id], reboot_s=3600)
    swarm.start()
    assert swarm.wait_connected()
    store = CampaignStore(tmp_path / CAMPAIGN_FILE)
    fleet = RegistryFleet(registry)
    campaign = create_campaign(
        store,
        fleet,
        image.manifest,
        waves=(60, 100),
        settings=CampaignSettings(
            chunk_size=4096, online_timeout_s=1.5, max_failure_rate=0.2, max_concurrent=2
        ),
    )
    prepared = PreparedImage.of(image.manifest, image.data, 4096)
    paused = CampaignRunner(store, fleet, prepared, login).run(campaign.id)
    assert paused.state == "paused"
    assert paused.reason is not None
    assert "wave 1" in paused.reason
    assert "failed" in paused.reason
    wave_1 = store.devices(campaign.id, wave=0)
    assert {d.reason for d in wave_1 if d.state == "failed"} == {"not_back_online"}
    # It paused within the wave, after the first two (concurrent) transfers failed: the
    # rest of the wave and the next wave were never offered anything.
    assert sum(d.state == "failed" for d in wave_1) == 2
    assert sum(d.state == "pending" for d in wave_1) == 4
    assert {d.state for d in store.devices(campaign.id, wave=1)} == {"pending"}
    other = make_signed_image(tmp_path / "other", size=5000, key_folder=image.key_folder)
    wrong = CampaignRunner(store, fleet, PreparedImage.of(other.manifest, other.data, 4096), login)
    with pytest.raises(FirmwareError, match="not the campaign's image"):
        wrong.run(campaign.id)
    store.close()


@given(total=st.integers(1, 5000), cuts=st.lists(st.floats(0.01, 99.9), max_size=5, unique=True))
def test_waves_cover_every_device_once(total: int, cuts: list[float]) -> None:
    waves = [*sorted(cuts), 100.0]
    sizes = wave_sizes(total, waves)
    assert sum(sizes) == total
    assert len(sizes) == len(waves)
    assert all(size >= 0 for size in sizes)
    assert sizes[0] >= 1


def test_waves_must_rise_to_100() -> None:
    for bad in ([50, 10, 100], [10, 50], [0, 100], []):
        with pytest.raises(FirmwareError, match="waves"):
            wave_sizes(10, bad)
