"""The health gate's "no new alerts on updated devices", over the real broker and alert store.

The alert store is the hub's own (``hub.alerts.alert_store``), written through its API as
the alert engine writes it; the gate (``AlertStoreGate``) reads it between waves. Also the
campaign claim that keeps two runners off one campaign.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from firmware_tools.campaign_store import (
    CAMPAIGN_FILE,
    CampaignSettings,
    CampaignStore,
    owner_alive,
    runner_name,
)
from firmware_tools.campaigns import (
    BrokerLogin,
    CampaignRunner,
    Progress,
    RegistryFleet,
    create_campaign,
)
from firmware_tools.ota_sender import PreparedImage
from firmware_tools.reference_device import DeviceSwarm
from firmware_tools.simulated_fleet import make_signed_image, reference_device, register_ota_devices
from hub.alerts.alert_store import AlertStore
from hub.alerts.rule_engine import AlertEvent
from hub.ota_campaigns import AlertStoreGate
from tests.conftest import RunningStack


@pytest.fixture
def registry(running_stack: RunningStack, tmp_path: Path) -> Iterator[RegistryService]:
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


def raise_alert(path: Path, device_id: str, rule_id: str, time_ms: int) -> None:
    """An alert raised on a device, stored as the alert engine stores one."""
    store = AlertStore(path)
    try:
        event = AlertEvent(
            kind="raise",
            key=f"{rule_id}|{device_id}",
            rule_id=rule_id,
            device_id=device_id,
            level=1,
            stage="warning",
            severity="warning",
            value=1.0,
            time_ms=time_ms,
            message="battery low after the update",
            family="flood",
            kecamatan="",
            team="",
        )
        store.apply([event], {}, None, None, time_ms)
    finally:
        store.close()


def test_a_new_alert_on_an_updated_device_holds_the_next_wave(
    running_stack: RunningStack, registry: RegistryService, tmp_path: Path, unique_id: str
) -> None:
    s = running_stack.settings
    login = BrokerLogin(
        host=s.mqtt.host,
        port=s.mqtt.port,
        username=s.mqtt.username,
        password=running_stack.mqtt_password,
    )
    ids = [f"{unique_id}-{n}" for n in range(6)]
    logins = register_ota_devices(registry, ids)
    image = make_signed_image(tmp_path / "image", size=6000)
    swarm = DeviceSwarm(s.mqtt.host, s.mqtt.port)
    for device_id in ids:
        swarm.add(reference_device(device_id, image), logins[device_id])
    swarm.start()
    try:
        assert swarm.wait_connected()
        alerts_path = tmp_path / "alerts" / "alerts.sqlite3"
        # An alert from before the campaign is not new: it must not hold anything.
        raise_alert(alerts_path, ids[0], "old_rule", int(time.time() * 1000) - 3_600_000)
        store = CampaignStore(tmp_path / CAMPAIGN_FILE)
        fleet = RegistryFleet(registry)
        campaign = create_campaign(
            store,
            fleet,
            image.manifest,
            waves=(34, 100),
            settings=CampaignSettings(chunk_size=2048, online_timeout_s=30),
        )
        wave_1 = [d.device_id for d in store.devices(campaign.id, wave=0)]
        assert len(wave_1) == 3
        raised: list[str] = []

        def on_progress(p: Progress) -> None:
            # The first updated device of wave 1 pages someone, as a bad image would.
            done = [
                d.device_id for d in store.devices(campaign.id, wave=0) if d.state == "installed"
            ]
            if done and not raised:
                raise_alert(alerts_path, done[0], "battery_low", int(time.time() * 1000))
                raised.append(done[0])

        prepared = PreparedImage.of(image.manifest, image.data, 2048)
        gate = AlertStoreGate(alerts_path)
        runner = CampaignRunner(store, fleet, prepared, login, progress=on_progress, alerts=gate)
        held = runner.run(campaign.id)
        assert held.state == "paused"
        assert held.reason == (
            f"wave 1 health gate: new alerts on updated devices: {raised[0]} (battery_low)"
        )
        assert {d.state for d in store.devices(campaign.id, wave=0)} == {"installed"}
        assert {d.state for d in store.devices(campaign.id, wave=1)} == {"pending"}

        # Resumed again without a look: still held.
        again = CampaignRunner(store, fleet, prepared, login, alerts=gate).run(campaign.id)
        assert (again.state, again.reason) == ("paused", held.reason)
        # The operator looked (the alert was the sensor's, not the image's) and resumed,
        # which restarts the gate's window as `campaign resume` does: wave 2 goes on.
        store.restart_gate(campaign.id, 0)
        done = CampaignRunner(store, fleet, prepared, login, alerts=gate).run(campaign.id)
        assert (done.state, done.reason) == ("done", None)
        assert set(store.counts(campaign.id)) == {"installed"}
        store.close()
    finally:
        swarm.stop()


def test_the_gate_reads_no_alert_store_as_no_alerts(tmp_path: Path) -> None:
    gate = AlertStoreGate(tmp_path / "none" / "alerts.sqlite3")
    assert gate.raised_since(["d1"], 0.0) == []
    assert not (tmp_path / "none").exists()  # reading never creates the hub's store


def test_one_campaign_has_one_runner_at_a_time(tmp_path: Path) -> None:
    store = CampaignStore(tmp_path / CAMPAIGN_FILE)
    store.create(
        "c1",
        image_sha256="0" * 64,
        version="2",
        waves=(100,),
        settings=CampaignSettings(),
        devices=[("d1", 0, None)],
    )
    mine, other = runner_name("a"), runner_name("b")
    assert store.claim("c1", mine) is None
    assert store.claim("c1", mine) is None  # renewed
    assert store.claim("c1", other) == mine
    assert store.holder("c1") == mine
    store.release("c1", mine)
    assert store.holder("c1") is None
    # A claim left by a process that is gone (killed with -9) is taken at once.
    gone = f"{socket.gethostname()}:{2**22 + 12345}:x"  # above any pid Linux hands out
    assert store.claim("c1", gone) is None
    assert store.claim("c1", other) is None
    assert store.holder("c1") == other
    store.close()


@given(owner=st.text(max_size=60))
def test_any_stored_owner_name_is_read_without_error(owner: str) -> None:
    assert owner_alive(owner) in (True, False)
    if owner.partition(":")[0] != socket.gethostname():
        assert owner_alive(owner)  # another machine's claim: only its expiry counts
