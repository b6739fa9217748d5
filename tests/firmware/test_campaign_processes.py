"""Campaigns as real processes against the real broker: kill -9 and restart, pause from
another terminal, and ``start --background`` carried on by the daemon inside ``kotahub run``.

Each test has a state folder of its own (registry, image store, campaigns, and an OTA
sender identity of its own on the session's broker), a ``kotahub.toml`` pointing at the
session's broker, and reference devices (``DeviceSwarm``) in this process. A watcher
logged in as the admin sees every offer the hub publishes to the test's devices.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from device_registry.registry_settings import DATABASE_FILE
from firmware_tools.campaign_store import (
    CAMPAIGN_FILE,
    DEVICE_FINAL,
    CampaignSettings,
    CampaignStore,
)
from firmware_tools.campaigns import RegistryFleet, create_campaign
from firmware_tools.image_manifest import manifest_path_for
from firmware_tools.image_store import ImageStore
from firmware_tools.ota_identity import ensure_ota_identity
from firmware_tools.reference_device import DeviceSwarm
from firmware_tools.simulated_fleet import make_signed_image, reference_device, register_ota_devices
from tests.conftest import MqttClientFactory, MqttTestClient, RunningStack, free_port

KOTAHUB = str(Path(sys.executable).with_name("kotahub"))
IMAGE_SIZE = 20_000  # 20 chunks of 1 KiB


def wait_until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll generously (the machine is shared); fail clearly on timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.05)


@dataclass
class Site:
    """One test's hub: its config, state folder, devices and the offers seen."""

    config: Path
    state: Path
    ids: list[str]
    swarm: DeviceSwarm
    watcher: MqttTestClient
    image_sha256: str
    registry: RegistryService

    def store(self) -> CampaignStore:
        """The campaigns file as the processes see it."""
        return CampaignStore(self.state / CAMPAIGN_FILE)

    def offers(self, since: int = 0) -> Counter[str]:
        """How many offers each device got (from the watcher's message ``since`` on)."""
        return Counter(m.topic.split("/")[3] for m in self.watcher.messages[since:])

    def kotahub(self, *args: str) -> list[str]:
        """A command line of ``kotahub`` with this site's config."""
        return [KOTAHUB, *args, "--config", str(self.config)]


@pytest.fixture
def site(
    running_stack: RunningStack,
    mqtt_client: MqttClientFactory,
    tmp_path: Path,
    unique_id: str,
) -> Iterator[Site]:
    s = running_stack.settings
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "kotahub.toml"
    config.write_text(
        f'state_dir = "{state}"\n'
        f'[mqtt]\nhost = "{s.mqtt.host}"\nport = {s.mqtt.port}\n'
        f'password = "{running_stack.mqtt_password}"\n'
    )
    admin = BrokerAdmin(
        host=s.mqtt.host,
        port=s.mqtt.port,
        username=s.mqtt.username,
        password=running_stack.mqtt_password,
    )
    # An OTA identity of this test's own: the default name is one per broker, and a
    # parallel test making it again would change its password under another's feet.
    ensure_ota_identity(admin, state, username=f"ota-{unique_id}")
    dynsec = DynamicSecurityClient(admin)
    database = open_database(f"sqlite:///{state / DATABASE_FILE}")
    registry = RegistryService(database, DynsecIdentities(dynsec))
    ids = [f"{unique_id}-{n:02d}" for n in range(12)]
    logins = register_ota_devices(registry, ids)
    image = make_signed_image(tmp_path / "image", size=IMAGE_SIZE)
    images = ImageStore(state / "firmware")
    images.trust(image.key_folder / "kotahub-firmware.pub")
    images.add(image.path, manifest_path_for(image.path))
    swarm = DeviceSwarm(s.mqtt.host, s.mqtt.port)
    for device_id in ids:
        swarm.add(reference_device(device_id, image), logins[device_id])
    watcher = mqtt_client()
    for device_id in ids:
        watcher.subscribe(f"kota/v1/dev/{device_id}/ota/offer")
    swarm.start()
    assert swarm.wait_connected()
    try:
        yield Site(config, state, ids, swarm, watcher, image.manifest.sha256, registry)
    finally:
        swarm.stop()
        dynsec.close()
        database.close()


def make_campaign(
    site: Site, campaign_id: str, waves: tuple[float, ...], rate_bytes_per_s: int = 40_000
) -> None:
    """A campaign slowed by its byte rate, so a process can be stopped in the middle."""
    store = site.store()
    manifest = ImageStore(site.state / "firmware").get(site.image_sha256).manifest
    create_campaign(
        store,
        RegistryFleet(site.registry),
        manifest,
        campaign_id=campaign_id,
        waves=waves,
        settings=CampaignSettings(
            chunk_size=1024,
            max_concurrent=2,
            rate_bytes_per_s=rate_bytes_per_s,
            online_timeout_s=30,
        ),
    )
    store.close()


def states(site: Site, campaign_id: str) -> dict[str, str]:
    """Each device's state in the campaign now."""
    store = site.store()
    try:
        return {d.device_id: d.state for d in store.devices(campaign_id)}
    finally:
        store.close()


def installed(site: Site, campaign_id: str) -> int:
    """How many devices installed so far."""
    return sum(state == "installed" for state in states(site, campaign_id).values())


def finish(process: subprocess.Popen[str], timeout_s: float = 120) -> str:
    """Wait for a process, return its output (killing it if it hangs)."""
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        raise AssertionError(f"{process.args!r} did not end:\n{out}") from None
    return out


def assert_all_updated(site: Site, campaign_id: str) -> None:
    """None lost: every device installed, in the store, the registry and on the device."""
    assert set(states(site, campaign_id).values()) == {"installed"}
    for device_id in site.ids:
        assert site.registry.get_device(device_id).firmware_version == "2.0.0"
        assert site.swarm.members[device_id].ota.version == "2.0.0"


def test_a_campaign_killed_with_sigkill_mid_wave_finishes_after_a_restart(site: Site) -> None:
    make_campaign(site, "ck", (25, 100))
    start = subprocess.Popen(
        site.kotahub("firmware", "campaign", "start", "ck"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Killed in wave 2 (devices 4 to 12), with some of it done.
        wait_until(lambda: installed(site, "ck") >= 5 or start.poll() is not None)
        start.send_signal(signal.SIGKILL)
        start.wait(30)
    finally:
        if start.poll() is None:
            start.kill()
            start.wait(30)
    assert start.returncode == -signal.SIGKILL, finish(start)
    at_kill = states(site, "ck")
    final_at_kill = {d for d, state in at_kill.items() if state in DEVICE_FINAL}
    assert 5 <= len(final_at_kill) < len(site.ids), at_kill
    store = site.store()
    campaign = store.get("ck")
    assert (campaign.state, campaign.current_wave) == ("running", 1)
    assert store.holder("ck") is None  # the killed process's claim died with it
    store.close()
    seen = len(site.watcher.messages)

    resumed = subprocess.run(
        site.kotahub("firmware", "campaign", "resume", "ck"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "campaign ck done" in resumed.stdout
    assert_all_updated(site, "ck")
    again = site.offers(seen)
    # Offered again only where the store had not seen it finish, and once each.
    assert set(again) <= set(site.ids) - final_at_kill, again
    assert set(again.values()) <= {1}, again
    assert set(again) == {d for d, state in at_kill.items() if state not in DEVICE_FINAL}


def test_pause_from_another_terminal_stops_new_offers_and_resume_goes_on(site: Site) -> None:
    # A device a second: a second terminal's `kotahub` takes seconds to start on a busy
    # machine, and at 40 kB/s every device had installed before its pause landed.
    make_campaign(site, "cp", (100,), rate_bytes_per_s=10_000)
    start = subprocess.Popen(
        site.kotahub("firmware", "campaign", "start", "cp"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: installed(site, "cp") >= 2 or start.poll() is not None)
        paused = subprocess.run(
            site.kotahub("firmware", "campaign", "pause", "cp"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        offered_at_pause = set(site.offers())
        assert paused.returncode == 0, paused.stdout + paused.stderr
        assert "campaign cp paused" in paused.stdout
        # The running start sees the pause within a poll and ends by itself.
        out = finish(start, timeout_s=60)
    finally:
        if start.poll() is None:
            start.kill()
            start.wait(30)
    assert start.returncode == 0, out
    assert "campaign cp paused: paused by the operator" in out
    at_pause = states(site, "cp")
    offered = set(site.offers())
    # At most the one offer that may have been on its way as the pause landed.
    assert len(offered - offered_at_pause) <= 1, (offered_at_pause, offered)
    assert sum(state == "pending" for state in at_pause.values()) >= 6, at_pause
    assert offered == {d for d, state in at_pause.items() if state != "pending"}

    shown = subprocess.run(
        site.kotahub("firmware", "campaign", "status", "cp"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    done_at_pause = sum(state in DEVICE_FINAL for state in at_pause.values())
    assert f"{done_at_pause}/12" in shown.stdout  # the progress column
    assert "━" in shown.stdout  # drawn as a bar
    assert "paused by the operator" in shown.stdout

    resumed = subprocess.run(
        site.kotahub("firmware", "campaign", "resume", "cp"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "campaign cp done" in resumed.stdout
    assert_all_updated(site, "cp")
    # Those mid-transfer at the pause were offered again (to resume); nobody finished was.
    finished_at_pause = {d for d, state in at_pause.items() if state in DEVICE_FINAL}
    assert all(site.offers()[d] == 1 for d in finished_at_pause)


def test_kotahub_run_carries_a_background_campaign_and_obeys_pause(
    site: Site, running_stack: RunningStack, influx_db: str, unique_id: str
) -> None:
    with site.config.open("a") as config:
        config.write(
            f'[influx]\nurl = "{running_stack.settings.influx.url}"\n'
            f'database = "{influx_db}"\nretention_policy = "autogen"\n'
            f'[ingest]\nclient_id = "{unique_id}-hub"\nshared_group = ""\nmetrics_port = 0\n'
            f"[registry]\napi_port = {free_port()}\nmqtt_identities = false\n"
        )
    make_campaign(site, "cb", (25, 100))
    handed = subprocess.run(
        site.kotahub("firmware", "campaign", "start", "cb", "--background"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert handed.returncode == 0, handed.stdout + handed.stderr
    assert "`kotahub run` carries it on" in handed.stdout
    assert installed(site, "cb") == 0  # nothing ran in the terminal
    hub = subprocess.Popen(
        [sys.executable, "-m", "hub", "run", "--config", str(site.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: installed(site, "cb") >= 4 or hub.poll() is not None)
        assert hub.poll() is None, finish(hub)
        paused = subprocess.run(
            site.kotahub("firmware", "campaign", "pause", "cb"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert paused.returncode == 0, paused.stdout + paused.stderr
        store = site.store()
        wait_until(lambda: store.holder("cb") is None)  # the daemon's runner let it go
        at_pause = states(site, "cb")
        offered_at_pause = set(site.offers())
        assert "pending" in at_pause.values(), at_pause
        handed = subprocess.run(
            site.kotahub("firmware", "campaign", "resume", "cb", "--background"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert handed.returncode == 0, handed.stdout + handed.stderr
        wait_until(lambda: store.get("cb").state == "done" or hub.poll() is not None, 120)
        assert store.get("cb").state == "done", finish(hub)
        store.close()
        assert len(offered_at_pause) < len(site.ids)
    finally:
        hub.send_signal(signal.SIGTERM)
        out = finish(hub, timeout_s=60)
    assert hub.returncode == 0, out
    assert_all_updated(site, "cb")
