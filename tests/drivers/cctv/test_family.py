"""The cctv family as the agent and the registry see it: discovery, types, the sample file."""

from __future__ import annotations

from pathlib import Path

import drivers
from device_registry.directory import DeviceRecord, SnapshotDirectory, load_device_file
from drivers.cctv import FAMILY, generated_scenes
from drivers.cctv.camera_driver import create_camera
from drivers.cctv.mjpeg_server import MjpegServer
from drivers.cctv.onvif_stand_in import TAMPER_TOPIC
from drivers.contract import epoch_ms
from drivers.framework import DeviceSpec, discover_families
from hub.agent.mqtt_publisher import gateway_topic
from hub.ingest.contract_decoder import Accepted, ContractDecoder
from tests.drivers.cctv.conftest import StandInFactory


def test_family_is_discovered_with_both_protocols() -> None:
    family = discover_families()["cctv"]
    assert family is FAMILY
    assert set(family.protocols) == {"onvif", "isapi"}
    assert {t.name for t in family.device_types} == {
        "rt_camera",
        "atcs_camera",
        "corporate_camera",
        "hikvision_isapi_camera",
        "nvr_4ch",
    }
    # Every camera is health-checked within 5 minutes.
    assert all(t.expected_interval_s <= 300 for t in family.device_types)


def test_sample_file_carries_each_types_schema_and_validates() -> None:
    path = Path(drivers.__file__).parent / "cctv" / "sample_config.json"
    records = load_device_file(path)
    assert len(records) == 4
    for record in records:
        expected = FAMILY.metric_schema(FAMILY.device_type(record.device_type).metrics)
        assert dict(record.metrics) == expected, record.device_id
        FAMILY.validate(
            DeviceSpec(
                device_id=record.device_id,
                device_type=record.device_type,
                protocol=record.protocol or "",
                address=record.address,
                driver_config=record.driver_config,
                parent_id=record.parent_id,
            )
        )
    # The RT package: the camera sits on channel 1 of the NVR listed with it.
    camera = next(r for r in records if r.device_type == "rt_camera")
    assert camera.parent_id in {r.device_id for r in records if r.device_type == "nvr_4ch"}
    assert camera.driver_config["nvr_channel"] == 1


async def test_every_reading_and_event_is_accepted_by_the_hub(
    onvif_stand_in: StandInFactory, mjpeg_server: MjpegServer, unique_id: str
) -> None:
    """Telemetry and events through the hub's real decoder, against the type's schema."""
    stand_in = await onvif_stand_in()
    stand_in.camera.stream_uri = mjpeg_server.add_clip("t", generated_scenes.walking_people(6, 2))
    device_id = f"cam-{unique_id}"
    spec = DeviceSpec(
        device_id=device_id,
        device_type="rt_camera",
        protocol="onvif",
        address=stand_in.address(),
        driver_config={
            "password": stand_in.camera.password,
            "sample_every_s": 0,
            "sample_s": 0.6,
            "analytics": {"people": True, "no_parking_zone": [[0, 0], [1, 0], [1, 1]]},
        },
    )
    camera = create_camera(spec, FAMILY.validate(spec))
    try:
        await camera.poll()
        stand_in.camera.raise_event(TAMPER_TOPIC, True)
        readings = await camera.poll()
    finally:
        await camera.close()
    record = DeviceRecord(
        device_id=device_id,
        family="cctv",
        device_type="rt_camera",
        gateway_id="gw1",
        metrics=FAMILY.metric_schema(FAMILY.device_type("rt_camera").metrics),
    )
    decoder = ContractDecoder(SnapshotDirectory([record]))
    assert any(r.kind == "event" for r in readings)
    for reading in readings:
        topic = gateway_topic("gw1", device_id, reading.kind)
        result = decoder.decode(topic, reading.payload(), epoch_ms(reading.ts))
        assert isinstance(result, Accepted), result


def test_default_configs_validate_for_every_type() -> None:
    for device_type in FAMILY.device_types:
        FAMILY.validate(
            DeviceSpec(
                device_id=f"d-{device_type.name}",
                device_type=device_type.name,
                protocol=device_type.protocol,
                address="127.0.0.1:80",
            )
        )
