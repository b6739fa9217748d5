"""The ATCS driver against the simulated NTCIP controller, and its decoders by hypothesis."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.atcs import FAMILY
from drivers.atcs import ntcip_objects as ntcip
from drivers.atcs.ntcip_controller import NtcipController
from drivers.atcs.simulated_controller import SimulatedController, cycle_length
from drivers.framework import DeviceSpec, DriverError, Reading
from drivers.snmp.simulated_agent import SimulatedAgents


class Clock:
    """A clock the test steps instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def controller_for(
    agents: SimulatedAgents, sim: SimulatedController, **config: object
) -> NtcipController:
    port = await agents.serve(sim)
    spec = DeviceSpec(
        device_id="atcs-simpang-lima",
        device_type="ntcip_1202_controller",
        protocol="ntcip_1202",
        address=f"127.0.0.1:{port}",
        driver_config={"detectors": {str(n): f"det-{n}" for n in range(1, 5)}, **config},
    )
    driver = FAMILY.create_poller(spec, FAMILY.validate(spec))  # type: ignore[misc]
    assert isinstance(driver, NtcipController)
    return driver


def by_device(readings: list[Reading]) -> dict[str, dict[str, object]]:
    return {r.device_id: dict(r.metrics) for r in readings}


async def test_phases_step_through_a_real_cycle(agents: SimulatedAgents) -> None:
    clock = Clock()
    driver = await controller_for(agents, SimulatedController(clock=clock))
    seen = []
    for offset in (1, 31, 35, 47, 60, 80, 91):
        clock.now = 1000.0 + offset
        controller = by_device(await driver.poll())["atcs-simpang-lima"]
        seen.append((controller["phases_green"], controller["phases_yellow"]))
        assert controller["cycle_s"] == cycle_length()
        assert controller["control_mode"] == "timebase"
        assert controller["flash"] is False
        assert controller["pattern"] == 3
        assert controller["pattern_mode"] == "pattern"
        assert controller["alarm_coord_active"] is True
    assert seen == [
        ("2,6", ""),
        ("", "2,6"),
        ("3,7", ""),
        ("", "3,7"),
        ("4,8", ""),
        ("1,5", ""),
        ("2,6", ""),
    ]


async def test_detectors_count_per_period_and_missed_periods(agents: SimulatedAgents) -> None:
    clock = Clock()
    sim = SimulatedController(clock=clock)
    driver = await controller_for(agents, sim)
    first = by_device(await driver.poll())
    assert set(first) == {"atcs-simpang-lima", "det-1", "det-2", "det-3", "det-4"}
    assert first["det-1"]["volume"] == 8  # (period 0 * 7 + 1 * 3) % 40 + 5
    assert first["det-1"]["occupancy_pct"] == 12.0
    assert first["det-1"]["fault"] == "ok"
    assert first["det-1"]["period_s"] == 60
    # Same period again: no detector reading (its counts were reported already).
    clock.now += 10
    again = by_device(await driver.poll())
    assert set(again) == {"atcs-simpang-lima"}
    assert again["atcs-simpang-lima"]["detector_periods_missed"] == 0
    # Three periods later: two were never read.
    clock.now += 3 * 60
    later = by_device(await driver.poll())
    assert later["atcs-simpang-lima"]["detector_periods_missed"] == 2
    assert later["det-2"]["volume"] == (3 * 7 + 2 * 3) % 40 + 5


async def test_open_loop_is_a_named_fault_never_an_occupancy(agents: SimulatedAgents) -> None:
    sim = SimulatedController(clock=Clock(), open_loop={3})
    driver = await controller_for(agents, sim)
    readings = by_device(await driver.poll())
    assert readings["det-3"]["fault"] == "open_loop,no_activity"
    assert "occupancy_pct" not in readings["det-3"]
    assert readings["det-3"]["alarms"] == 1
    assert readings["det-1"]["fault"] == "ok"
    assert readings["atcs-simpang-lima"]["alarm_detector_fault"] is True


async def test_mmu_flash_and_power_restart(agents: SimulatedAgents) -> None:
    clock = Clock()
    sim = SimulatedController(clock=clock)
    driver = await controller_for(agents, sim)
    sim.mmu_flash = True
    flashing = by_device(await driver.poll())["atcs-simpang-lima"]
    assert flashing["flash"] is True
    assert flashing["flash_state"] == "mmu"
    assert flashing["alarm_mmu_flash"] is True
    assert flashing["alarm_critical"] is True
    assert flashing["pattern_mode"] == "flash"
    assert flashing["phases_green"] == ""
    sim.mmu_flash = False
    sim.restart()
    restarted = by_device(await driver.poll())["atcs-simpang-lima"]
    assert restarted["alarm_power_restart"] is True
    assert restarted["flash"] is False
    # powerRestart clears when read, as on a real controller.
    clock.now += 1
    assert by_device(await driver.poll())["atcs-simpang-lima"]["alarm_power_restart"] is False


async def test_wrong_type_leaves_that_metric_out_and_logs_once(
    agents: SimulatedAgents, caplog: pytest.LogCaptureFixture
) -> None:
    class WrongCycle(SimulatedController):
        def objects(self):  # type: ignore[no-untyped-def]
            out = dict(super().objects())
            out[ntcip.COORD_CYCLE_STATUS] = ("octets", b"120")
            return out

    driver = await controller_for(agents, WrongCycle(clock=Clock()))
    with caplog.at_level(logging.WARNING):
        first = by_device(await driver.poll())["atcs-simpang-lima"]
        await driver.poll()
    assert "cycle_s" not in first
    assert first["pattern"] == 3
    warnings = [r for r in caplog.records if "coordCycleStatus came back as octets" in r.message]
    assert len(warnings) == 1


async def test_unsupported_objects_are_absent_not_zero(agents: SimulatedAgents) -> None:
    class NoCoordination(SimulatedController):
        def objects(self):  # type: ignore[no-untyped-def]
            out = dict(super().objects())
            del out[ntcip.COORD_PATTERN_STATUS]
            del out[ntcip.detector_volume(2)]
            return out

    for version in ("1", "2c"):
        driver = await controller_for(agents, NoCoordination(clock=Clock()), version=version)
        readings = by_device(await driver.poll())
        assert "pattern" not in readings["atcs-simpang-lima"]
        assert "volume" not in readings["det-2"]
        assert readings["det-1"]["volume"] == 8


async def test_gen_err_and_silence_raise_driver_errors(agents: SimulatedAgents) -> None:
    sim = SimulatedController(clock=Clock(), gen_err=True)
    driver = await controller_for(agents, sim)
    with pytest.raises(DriverError, match="genErr"):
        await driver.poll()
    sim.gen_err, sim.silent = False, True
    quick = await controller_for(agents, sim, request_timeout_s=0.3, retries=0)
    with pytest.raises(DriverError, match="no answer"):
        await quick.poll()


@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.integers(0, 255)), max_size=4, unique_by=lambda t: t[0]
    )
)
def test_phase_bitmasks_round_trip(groups: list[tuple[int, int]]) -> None:
    phases = ntcip.phases_in(groups)
    for group, mask in groups:
        rebuilt = sum(
            1 << (p - 8 * (group - 1) - 1) for p in phases if 0 < p - 8 * (group - 1) <= 8
        )
        assert rebuilt == mask
    assert all(1 <= p <= 32 for p in phases)


@given(st.integers(0, 255))
def test_occupancy_is_a_percentage_or_a_fault_never_both(code: int) -> None:
    decoded = ntcip.occupancy(code)
    if code <= 200:
        assert decoded.pct == code / 2
        assert decoded.fault == "ok"
    else:
        assert decoded.pct is None
        assert decoded.fault != "ok"
        if 210 <= code <= 217:
            assert not decoded.fault.startswith("code_")


@given(st.integers(0, 255), st.integers(0, 255))
def test_missed_periods_modulo_256(previous: int, step: int) -> None:
    new, missed = ntcip.missed_periods(previous, (previous + step) % 256)
    assert new == (step != 0)
    assert missed == max(step - 1, 0)


@given(st.integers(0, 255))
def test_alarm_bits_name_every_bit(word: int) -> None:
    named = ntcip.bits(word, ntcip.ALARM_1_BITS)
    assert sum(named.values()) == bin(word).count("1")


def test_sample_device_files_load_and_carry_their_types_schema() -> None:
    from pathlib import Path

    import drivers
    from device_registry.directory import load_device_file
    from drivers.atcs.metrics import ATCS_DETECTOR_METRICS
    from drivers.wifi import FAMILY as WIFI

    families = {"atcs": FAMILY, "wifi": WIFI}
    detector_schema = {m.key: m.kind for m in ATCS_DETECTOR_METRICS}
    for name in ("atcs", "wifi"):
        family = families[name]
        for record in load_device_file(Path(drivers.__file__).parent / name / "sample_config.json"):
            if record.family == "atcs_detector":
                assert dict(record.metrics) == detector_schema
                continue
            expected = family.metric_schema(family.device_type(record.device_type).metrics)
            assert dict(record.metrics) == expected, record.device_id
            spec = DeviceSpec(
                device_id=record.device_id,
                device_type=record.device_type,
                protocol=record.protocol or "",
                address=record.address,
                driver_config=record.driver_config,
            )
            family.validate(spec)  # the sample configs are valid configs
