"""ONVIF health against the ONVIF SOAP stand-in: identity, media, clock drift, faults, events."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.cctv import FAMILY
from drivers.cctv.camera_driver import CctvCamera, create_camera, sample_offset
from drivers.cctv.onvif_health import event_name
from drivers.cctv.onvif_stand_in import MOTION_TOPIC, TAMPER_TOPIC, OnvifStandIn
from drivers.framework import DeviceSpec, DriverConfigError, DriverError, Reading
from tests.drivers.cctv.conftest import StandInFactory


def camera_for(stand_in: OnvifStandIn, unique_id: str, **config: object) -> CctvCamera:
    spec = DeviceSpec(
        device_id=f"cam-{unique_id}",
        device_type="rt_camera",
        protocol="onvif",
        address=stand_in.address(),
        driver_config={"password": stand_in.camera.password, **config},
    )
    camera = create_camera(spec, FAMILY.validate(spec))
    assert isinstance(camera, CctvCamera)
    return camera


def assert_in_schema(readings: list[Reading]) -> None:
    """Every metric, telemetry and event alike, is a row of the device type's table."""
    allowed = set(FAMILY.device_type("rt_camera").metrics)
    for reading in readings:
        assert set(reading.metrics) <= allowed, set(reading.metrics) - allowed


async def test_healthy_camera_reports_identity_media_and_clock(
    onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    camera = camera_for(stand_in, unique_id)
    try:
        readings = await camera.poll()
    finally:
        await camera.close()
    assert_in_schema(readings)
    health = readings[0].metrics
    assert readings[0].kind == "telemetry"
    assert health["onvif_status"] == "ok"
    assert health["device_model"] == stand_in.camera.model
    assert health["firmware"] == stand_in.camera.firmware
    assert health["serial"] == stand_in.camera.serial
    assert health["profiles"] == 2
    assert health["fps_nominal"] == 10.0  # the substream (profile 1) is the one sampled
    assert health["stream_uri_ok"] is True
    assert health["snapshot_uri_ok"] is True
    assert health["events_ok"] is True
    assert abs(float(health["clock_drift_s"])) <= 1.5


async def test_clock_ten_minutes_off_is_measured_and_still_authenticates(
    onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    stand_in.camera.clock_offset_s = 600.0
    camera = camera_for(stand_in, unique_id)
    try:
        health = (await camera.poll())[0].metrics
    finally:
        await camera.close()
    assert abs(float(health["clock_drift_s"]) - 600.0) <= 1.5
    # The stand-in refuses tokens more than 5 min off its clock: signing with its time worked.
    assert health["onvif_status"] == "ok"
    assert health["serial"] == stand_in.camera.serial


@pytest.mark.parametrize(("mode", "status"), [("http401", "auth_failed"), ("fault", "auth_failed")])
async def test_refused_credentials_are_a_status_not_an_outage(
    onvif_stand_in: StandInFactory, unique_id: str, mode: str, status: str
) -> None:
    stand_in = await onvif_stand_in()
    stand_in.camera.reject_auth = mode
    camera = camera_for(stand_in, unique_id)
    try:
        health = (await camera.poll())[0].metrics
    finally:
        await camera.close()
    assert health["onvif_status"] == status
    assert "clock_drift_s" in health  # reachable: the authless probe answered
    assert "serial" not in health


async def test_soap_fault_on_a_media_call_is_reported(
    onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    stand_in.camera.fault_on.add("GetProfiles")
    camera = camera_for(stand_in, unique_id)
    try:
        health = (await camera.poll())[0].metrics
    finally:
        await camera.close()
    assert health["onvif_status"] == "fault"
    assert health["serial"] == stand_in.camera.serial


async def test_pull_point_events_and_recreation_after_the_camera_forgets(
    onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    camera = camera_for(stand_in, unique_id)
    try:
        await camera.poll()
        stand_in.camera.raise_event(TAMPER_TOPIC, True)
        stand_in.camera.raise_event(MOTION_TOPIC, True, item="IsMotion")
        stand_in.camera.raise_event("tns1:Device/Trigger/Relay", True)  # not watched
        readings = await camera.poll()
        events = [r for r in readings if r.kind == "event"]
        assert [(e.metrics["event"], e.metrics["event_active"]) for e in events] == [
            ("tamper", True),
            ("motion", True),
        ]
        assert events[0].metrics["event_topic"] == TAMPER_TOPIC
        assert_in_schema(readings)

        stand_in.camera.forget_subscriptions()  # a reboot
        stand_in.camera.raise_event(TAMPER_TOPIC, False)
        readings = await camera.poll()
    finally:
        await camera.close()
    assert readings[0].metrics["subscriptions_recreated"] == 1
    assert readings[0].metrics["events_ok"] is True
    assert stand_in.camera.calls["CreatePullPointSubscription"] == 2
    events = [r for r in readings if r.kind == "event"]
    assert [(e.metrics["event"], e.metrics["event_active"]) for e in events] == [("tamper", False)]


async def test_the_pull_point_outlives_two_polls_and_is_renewed_every_other_poll(
    onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    camera = camera_for(stand_in, unique_id, poll_interval_s=300)
    now = [time.monotonic()]
    camera.health.clock = lambda: now[0]
    try:
        renewed = []
        for _ in range(5):  # the agent's polls, 300 s apart on the health clock
            await camera.poll()
            renewed.append(stand_in.camera.calls.get("Renew", 0))
            now[0] += 300
    finally:
        await camera.close()
    # Two polls and a minute: a 300 s poll never finds it lapsed (a 120 s one always did).
    assert camera.health.subscription_s == 660
    assert renewed == [0, 0, 1, 1, 2]
    assert stand_in.camera.calls["CreatePullPointSubscription"] == 1
    assert stand_in.camera.calls["PullMessages"] == 5


async def test_a_camera_s_services_share_one_session_across_a_recreated_pull_point(
    onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    camera = camera_for(stand_in, unique_id)
    try:
        await camera.poll()
        stand_in.camera.forget_subscriptions()  # the library replaces the pull point services
        stand_in.camera.raise_event(TAMPER_TOPIC, True)
        readings = await camera.poll()
        library_camera = camera.health._camera
        assert library_camera is not None
        sessions = {id(s.transport.session) for s in library_camera.services.values()}
        assert len(sessions) == 1  # one pool, so a poll's calls ride one connection
        assert not next(iter(library_camera.services.values())).transport.session.closed
    finally:
        await camera.close()
    assert [r.metrics["event"] for r in readings if r.kind == "event"] == ["tamper"]
    assert readings[0].metrics["subscriptions_recreated"] == 1


async def test_unreachable_camera_raises_driver_error(
    onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    camera = camera_for(stand_in, unique_id)
    try:
        await camera.poll()
        await stand_in.stop()
        with pytest.raises(DriverError, match="ONVIF unreachable"):
            await camera.poll()
    finally:
        await camera.close()


@given(
    address=st.text(max_size=30),
    sample_s=st.one_of(st.floats(min_value=-10, max_value=1000), st.just(float("nan"))),
    zone=st.lists(st.tuples(st.floats(-1, 2), st.floats(-1, 2)), max_size=5),
)
def test_config_is_valid_or_one_clear_error(
    address: str, sample_s: float, zone: list[tuple[float, float]]
) -> None:
    spec = DeviceSpec(
        device_id="cam-x",
        device_type="atcs_camera",
        protocol="onvif",
        address=address,
        driver_config={
            "sample_s": sample_s,
            "timeout_s": 300,
            "analytics": {"no_parking_zone": zone},
        },
    )
    try:
        config = FAMILY.validate(spec)
    except DriverConfigError as err:
        message = str(err)
    else:
        message = ""
    if message:
        # One line naming the device and the field: the schema's or the timeout check's.
        assert message.startswith(("cam-x: invalid driver_config:", "cam-x: timeout_s ("))
        assert "\n" not in message
        return
    assert 0 < config.sample_s <= 300 - 7  # type: ignore[attr-defined]
    assert len(zone) >= 3


@given(topic=st.text(max_size=80))
def test_any_topic_maps_to_a_watched_event_or_none(topic: str) -> None:
    name = event_name(topic)
    assert name is None or name in {
        "tamper",
        "motion",
        "image_too_blurry",
        "image_too_dark",
        "image_too_bright",
        "videoloss",
    }


@given(n=st.integers(0, 10_000), every=st.floats(1, 86_400))
def test_sample_offsets_stay_inside_the_interval(n: int, every: float) -> None:
    assert 0 <= sample_offset(f"cctv-{n}", every) < every


def test_sample_offsets_spread_a_fleet_over_the_hour() -> None:
    offsets = [sample_offset(f"cctv-smg-{n:05d}", 3600) for n in range(2000)]
    per_quarter = [sum(1 for o in offsets if q * 900 <= o < (q + 1) * 900) for q in range(4)]
    assert all(400 <= count <= 600 for count in per_quarter), per_quarter


async def test_a_stream_is_not_sampled_before_its_turn(
    onvif_stand_in: StandInFactory, unique_id: str
) -> None:
    stand_in = await onvif_stand_in()
    camera = camera_for(stand_in, unique_id, sample_every_s=86_400, events=False)
    # Its turn comes at its offset within the day; until then polls are health only.
    camera._next_sample = max(camera._next_sample, time.monotonic() + 60)
    try:
        health = (await camera.poll())[0].metrics
    finally:
        await camera.close()
    assert health["onvif_status"] == "ok"
    assert "stream_ok" not in health
