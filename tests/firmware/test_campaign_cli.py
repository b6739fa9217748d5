"""`kotahub firmware campaign create|start|pause|resume|status|rollback` against the real broker.

Run in-process through ``campaign_app`` with a runtime loader pointing at the session's
broker, a registry of the test's own and an image store holding a signed image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from device_registry.database import open_database
from device_registry.mqtt_identities import BrokerAdmin, DynamicSecurityClient, DynsecIdentities
from device_registry.registry_service import RegistryService
from firmware_tools.campaign_cli import CampaignRuntime, campaign_app, set_campaign_runtime_loader
from firmware_tools.campaign_store import CAMPAIGN_FILE, CampaignStore
from firmware_tools.campaigns import BrokerLogin
from firmware_tools.image_manifest import manifest_path_for
from firmware_tools.image_store import ImageStore
from firmware_tools.reference_device import DeviceSwarm
from firmware_tools.simulated_fleet import make_signed_image, reference_device, register_ota_devices
from tests.conftest import RunningStack


@pytest.fixture
def swarm(running_stack: RunningStack) -> Iterator[DeviceSwarm]:
    swarm = DeviceSwarm(running_stack.mqtt_host, running_stack.mqtt_port)
    yield swarm
    swarm.stop()


def test_create_start_status_pause_resume_rollback(
    running_stack: RunningStack,
    swarm: DeviceSwarm,
    tmp_path: Path,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    s = running_stack.settings
    database_url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    admin = DynamicSecurityClient(
        BrokerAdmin(
            host=s.mqtt.host,
            port=s.mqtt.port,
            username=s.mqtt.username,
            password=running_stack.mqtt_password,
        )
    )
    database = open_database(database_url)
    service = RegistryService(database, DynsecIdentities(admin))
    ids = [f"{unique_id}-{n}" for n in range(4)]
    logins = register_ota_devices(service, ids)
    admin.close()
    database.close()

    image = make_signed_image(tmp_path / "image", size=9000)
    for device_id in ids:
        swarm.add(reference_device(device_id, image), logins[device_id])
    swarm.start()
    assert swarm.wait_connected()
    images = ImageStore(tmp_path / "store")
    images.trust(image.key_folder / "kotahub-firmware.pub")
    images.add(image.path, manifest_path_for(image.path))

    runtime = CampaignRuntime(
        store_dir=tmp_path / "store",
        state_dir=tmp_path / "state",
        database_url=database_url,
        broker=BrokerLogin(
            host=s.mqtt.host,
            port=s.mqtt.port,
            username=s.mqtt.username,
            password=running_stack.mqtt_password,
        ),
    )
    set_campaign_runtime_loader(lambda _config: runtime)
    cli = CliRunner()

    made = cli.invoke(
        campaign_app,
        [
            "create",
            image.manifest.sha256[:12],
            "--id",
            "c1",
            "--waves",
            "25,100",
            "--chunk-size",
            "1024",
        ],
    )
    assert made.exit_code == 0, made.output
    assert "to 4 devices, waves of 1, 3" in made.output
    again = cli.invoke(campaign_app, ["create", image.manifest.sha256[:12], "--id", "c1"])
    assert again.exit_code == 1
    assert "already exists" in again.output

    # Paused before it starts: start refuses (it is not new), resume runs it.
    assert cli.invoke(campaign_app, ["pause", "c1"]).exit_code == 0
    refused = cli.invoke(campaign_app, ["start", "c1"])
    assert refused.exit_code == 1
    assert "use resume" in refused.output
    ran = cli.invoke(campaign_app, ["resume", "c1"])
    assert ran.exit_code == 0, ran.output
    assert "campaign c1 done" in ran.output

    shown = cli.invoke(campaign_app, ["status", "c1"])
    assert shown.exit_code == 0, shown.output
    assert "4 installed" in shown.output
    assert "25 %" in shown.output
    store = CampaignStore(tmp_path / "state" / CAMPAIGN_FILE)
    assert {d.version for d in store.devices("c1")} == {"2.0.0"}
    store.close()

    back = cli.invoke(campaign_app, ["rollback", "c1"])
    assert back.exit_code == 0, back.output
    assert "rolled_back" in back.output
    assert {swarm.members[d].ota.version for d in ids} == {"1.0.0"}

    bad = cli.invoke(campaign_app, ["create", "zz"])
    assert bad.exit_code == 1
    assert "hex digits" in bad.output
