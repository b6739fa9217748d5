"""A camera's model, firmware and serial reach its registry record, on change only.

The real agent polls a camera (the ONVIF stand-in) with its gateway's token against a real
registry API (uvicorn on a free port): the record gets what ``GetDeviceInformation`` says,
one audit entry per change however many polls; a firmware upgrade is one more. At the
route: another gateway's token, another gateway's device, a retired one are refused;
hypothesis sends any strings and sizes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_registry.api_tokens import create_token
from device_registry.database import open_database
from device_registry.device_info_api import FIELD_LENGTHS
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DevicePublic, DeviceTypeCreate
from drivers.framework import DeviceInfo
from hub.agent.agent import Agent
from hub.agent.device_info_report import DeviceInfoReporter, clean, report_row
from hub.agent.registry_feed import RegistryFeedDirectory, feed_config
from hub.settings import AgentSettings, Settings, load_settings
from tests.agent.conftest import agent_settings, wait_until
from tests.agent.registry_api_server import ServedRegistry, served_registry
from tests.drivers.cctv.conftest import StandInFactory

GW, OTHER_GW = "gw-cam", "gw-other"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRegistry]:
    """A registry (SQLite) with the seeded cctv types and two gateways, served over HTTP."""
    path = tmp_path_factory.mktemp("registry") / "registry.sqlite3"
    database = open_database(f"sqlite:///{path}")
    service = RegistryService(database)
    service.seed_types(actor="test")
    service.create_type(
        DeviceTypeCreate(
            name="field_agent",
            family="gateway",
            protocol="mqtt",
            expected_interval_s=60,
            is_gateway=True,
        ),
        actor="test",
    )
    for gw in (GW, OTHER_GW):
        service.create_device(DeviceCreate(id=gw, device_type="field_agent"), actor="test")
    with served_registry(service) as served:
        yield served
    database.close()


def add_camera(
    registry: ServedRegistry, device_id: str, gateway_id: str, address: str, **config: Any
) -> None:
    registry.service.create_device(
        DeviceCreate(
            id=device_id,
            device_type="rt_camera",
            state="active",
            gateway_id=gateway_id,
            protocol_address=address,
            driver_config=config,
        ),
        actor="test",
    )


def token(registry: ServedRegistry, gateway_id: str) -> str:
    return create_token(
        registry.service.database,
        name=f"{gateway_id}-agent",
        role="gateway",
        actor="test",
        gateway_id=gateway_id,
    ).token


def info_audits(registry: ServedRegistry, device_id: str) -> list[Any]:
    entries = registry.service.audit_log(entity_kind="device", limit=1000)
    return [e for e in entries if e.entity_id == device_id and e.action == "device_info"]


def put(registry: ServedRegistry, secret: str, gateway_id: str, rows: Any) -> httpx.Response:
    return httpx.put(
        f"{registry.url}/api/v1/gateways/{gateway_id}/device-info",
        json={"devices": rows},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=10,
    )


async def test_agent_writes_camera_identity_to_the_registry_on_change_only(
    registry: ServedRegistry,
    test_settings: Settings,
    onvif_stand_in: StandInFactory,
    unique_id: str,
) -> None:
    stand_in = await onvif_stand_in()
    camera = stand_in.camera
    device_id = f"cam-info-{unique_id}"
    add_camera(
        registry,
        device_id,
        GW,
        stand_in.address(),
        password=camera.password,
        stream=False,
        events=False,
        poll_interval_s=0.3,
        timeout_s=5,
    )
    base = agent_settings(test_settings)
    agent_part = base.agent.model_dump() | {
        "gateway_id": GW,
        "registry_url": registry.url,
        "registry_token": token(registry, GW),
        "registry_refresh_s": 0.5,
        "registry_timeout_s": 5,
        "buffer_dir": str(test_settings.state_dir / f"agent-{unique_id}"),
    }
    settings_ = base.model_copy(update={"agent": AgentSettings(**agent_part)})
    directory = RegistryFeedDirectory(feed_config(settings_, GW))
    agent = Agent(settings=settings_, gateway_id=GW, directory=directory)
    assert agent.device_info is not None
    agent.device_info.interval_s = 0.2
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:

        def record() -> DevicePublic:
            return registry.service.get_device(device_id)

        await wait_until(lambda: record().serial == camera.serial, 30)
        device = record()
        assert (device.vendor, device.model) == (camera.manufacturer, camera.model)
        assert device.firmware_version == camera.firmware
        # Many polls later, still the one write.
        polls = camera.calls.get("GetDeviceInformation", 0)
        await wait_until(lambda: camera.calls.get("GetDeviceInformation", 0) >= polls + 5, 30)
        assert len(info_audits(registry, device_id)) == 1
        # A firmware upgrade on the camera: one more write, of the firmware only.
        camera.firmware = "V5.8.0 build 261201"
        await wait_until(lambda: record().firmware_version == camera.firmware, 30)
        audits = info_audits(registry, device_id)
        assert len(audits) == 2
        assert audits[0].after == {"firmware_version": "V5.8.0 build 261201"}
        assert audits[0].actor.startswith("token:")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        directory.close()
    assert agent.device_info.stats.refused == 0


def test_a_gateway_writes_only_its_own_devices(registry: ServedRegistry, unique_id: str) -> None:
    mine, theirs, retired = (f"{k}-{unique_id}" for k in ("mine", "theirs", "retired"))
    add_camera(registry, mine, GW, "127.0.0.1:1")
    add_camera(registry, theirs, OTHER_GW, "127.0.0.1:1")
    add_camera(registry, retired, GW, "127.0.0.1:1")
    registry.service.retire_device(retired, actor="test")
    secret = token(registry, GW)
    rows = [{"device_id": d, "model": "X1"} for d in (mine, theirs, retired, f"nobody-{unique_id}")]
    answer = put(registry, secret, GW, rows)
    assert answer.status_code == 200, answer.text
    outcomes = [(r["device_id"], r["outcome"]) for r in answer.json()["results"]]
    assert outcomes == [
        (mine, "changed"),
        (theirs, "refused"),
        (retired, "refused"),
        (f"nobody-{unique_id}", "refused"),
    ]
    assert registry.service.get_device(theirs).model is None
    # An unknown device and another gateway's answer alike: no probing for ids.
    reasons = {r["reason"] for r in answer.json()["results"][1:] if r["device_id"] != retired}
    assert len(reasons) == 1
    # Another gateway's path with this token, and a viewer token: refused outright.
    assert put(registry, secret, OTHER_GW, [{"device_id": theirs, "model": "X"}]).status_code == 403
    viewer = create_token(
        registry.service.database, name="viewer", role="viewer", actor="test"
    ).token
    assert put(registry, viewer, GW, [{"device_id": mine, "model": "Y"}]).status_code == 403
    assert put(registry, "khr_nonsense", GW, [{"device_id": mine}]).status_code == 401
    assert registry.service.get_device(mine).model == "X1"


def test_the_reporter_sends_only_what_changed(
    registry: ServedRegistry, unique_id: str, tmp_path: Path
) -> None:
    device_id = f"rep-{unique_id}"
    add_camera(registry, device_id, GW, "127.0.0.1:1")
    config = feed_config(
        load_settings(
            None,
            state_dir=tmp_path,
            agent={"registry_url": registry.url, "registry_token": token(registry, GW)},
        ),
        GW,
    )
    reporter = DeviceInfoReporter(config)
    try:
        info = DeviceInfo(vendor="V", model="M\nodel\x00 2", firmware=" 1.0 ", serial="S1")
        reporter.observe(device_id, info)
        assert reporter.send_pending() == 1
        for _ in range(5):
            reporter.observe(device_id, info)
        assert reporter.pending == 0
        assert reporter.send_pending() == 0
        stored = registry.service.get_device(device_id)
        assert (stored.model, stored.firmware_version) == ("M odel 2", "1.0")
        reporter.observe(device_id, DeviceInfo(vendor="V", model="M odel 2", serial="S2"))
        assert reporter.send_pending() == 1
        assert registry.service.get_device(device_id).serial == "S2"
        assert reporter.stats.changed == 2
    finally:
        reporter.close()


TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=()), min_size=0, max_size=300
)


@pytest.fixture(scope="module")
def hypo_camera(registry: ServedRegistry) -> tuple[str, str]:
    """One camera of the gateway and the gateway's token, for the property test."""
    add_camera(registry, "hypo-cam", GW, "127.0.0.1:1")
    return "hypo-cam", token(registry, GW)


@settings(max_examples=60, deadline=None)
@given(model=TEXT, firmware=TEXT, serial=st.one_of(st.none(), TEXT))
def test_any_strings_are_stored_as_sent_or_refused_by_field(
    registry: ServedRegistry,
    hypo_camera: tuple[str, str],
    model: str,
    firmware: str,
    serial: str | None,
) -> None:
    device_id, secret = hypo_camera
    row: dict[str, Any] = {"device_id": device_id, "model": model, "firmware_version": firmware}
    if serial is not None:
        row["serial"] = serial
    answer = put(registry, secret, GW, [row])
    if answer.status_code == 422:
        problem = answer.json()
        assert problem["field"].startswith("body.devices.0."), problem
    else:
        assert answer.status_code == 200, answer.text
        stored = registry.service.get_device(device_id)
        assert (stored.model, stored.firmware_version) == (model, firmware)
    # What the agent sends after cleaning is always taken.
    cleaned = report_row(device_id, DeviceInfo(model=model, firmware=firmware, serial=serial))
    if len(cleaned) > 1:
        assert put(registry, secret, GW, [cleaned]).status_code == 200


@settings(max_examples=20, deadline=None)
@given(count=st.integers(501, 2000))
def test_a_huge_batch_is_refused_in_one_line(
    registry: ServedRegistry, hypo_camera: tuple[str, str], count: int
) -> None:
    _device_id, secret = hypo_camera
    rows = [{"device_id": f"d{i}", "model": "M"} for i in range(count)]
    answer = put(registry, secret, GW, rows)
    assert answer.status_code == 422
    assert answer.json()["field"] == "body.devices"


@given(value=st.one_of(st.none(), TEXT), limit=st.sampled_from(sorted(FIELD_LENGTHS.values())))
def test_cleaning_gives_one_bounded_printable_line(value: str | None, limit: int) -> None:
    text = clean(value, limit)
    if text is None:
        return
    assert 0 < len(text) <= limit
    assert text == text.strip()
    assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text), repr(text)
