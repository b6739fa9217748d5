"""The WiFi AP driver against simulated MikroTik/UniFi APs and Debian's snmpd."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from drivers.framework import DeviceSpec
from drivers.snmp.simulated_agent import SimulatedAgents
from drivers.wifi import FAMILY
from drivers.wifi.access_point import AccessPoint
from drivers.wifi.if_counters import COUNTER64, TIMETICKS, RateMeter, octet_delta, uptime_rebooted
from drivers.wifi.simulated_ap import SimulatedAccessPoint
from tests.drivers.snmp.conftest import Snmpd


class Clock:
    """A clock the test steps instead of sleeping."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def access_point(address: str, device_type: str, **config: Any) -> AccessPoint:
    spec = DeviceSpec(
        device_id=f"ap-{device_type}",
        device_type=device_type,
        protocol="snmp",
        address=address,
        driver_config=config,
    )
    driver = FAMILY.create_poller(spec, FAMILY.validate(spec))  # type: ignore[misc]
    assert isinstance(driver, AccessPoint)
    return driver


async def poll_at(driver: AccessPoint, clock: Clock) -> dict[str, object]:
    """One real SNMP poll with the simulated clock as the rates' time base."""
    driver.clock = clock
    return dict((await driver.poll())[0].metrics)


async def test_mikrotik_clients_rates_and_reboot(agents: SimulatedAgents) -> None:
    clock = Clock()
    sim = SimulatedAccessPoint(vendor="mikrotik", clock=clock, rx_bps=8e6, tx_bps=2e6)
    driver = access_point(f"127.0.0.1:{await agents.serve(sim)}", "mikrotik_ap")
    metrics = await poll_at(driver, clock)
    assert metrics["clients"] == 10
    assert metrics["up"] is True
    assert metrics["reboots"] == 0
    assert "rx_bps" not in metrics  # no rate from one reading
    clock.now += 60
    sim.clients_by_radio = (12, 1)
    later = await poll_at(driver, clock)
    assert later["clients"] == 13
    assert later["uptime_s"] == 60.0
    assert abs(float(later["rx_bps"]) - 8e6) < 1e3  # type: ignore[arg-type]
    assert abs(float(later["tx_bps"]) - 2e6) < 1e3  # type: ignore[arg-type]
    sim.reboot()
    clock.now += 30
    after = await poll_at(driver, clock)
    assert after["reboots"] == 1
    assert after["uptime_s"] == 30.0
    assert "rx_bps" not in after  # counters restarted with the AP: no fake rate
    clock.now += 60
    assert (await poll_at(driver, clock))["reboots"] == 1


async def test_unifi_sums_vaps_and_counter64_wraps(agents: SimulatedAgents) -> None:
    clock = Clock()
    sim = SimulatedAccessPoint(
        vendor="unifi",
        clock=clock,
        rx_bps=80e6,
        counter_start=COUNTER64 - 300_000_000,
        clients_by_radio=(4, 9, 2),
    )
    driver = access_point(f"127.0.0.1:{await agents.serve(sim)}", "unifi_ap")
    assert (await poll_at(driver, clock))["clients"] == 15
    clock.now += 60  # 600 MB at 80 Mbit/s: the in-counter wraps past 2^64
    wrapped = await poll_at(driver, clock)
    assert abs(float(wrapped["rx_bps"]) - 80e6) < 1e3  # type: ignore[arg-type]
    assert wrapped["reboots"] == 0


async def test_routeros7_no_such_object_means_no_client_metric(agents: SimulatedAgents) -> None:
    sim = SimulatedAccessPoint(vendor="mikrotik", clock=Clock(), new_wifi_package=True)
    driver = access_point(f"127.0.0.1:{await agents.serve(sim)}", "mikrotik_ap", version="1")
    metrics = dict((await driver.poll())[0].metrics)
    assert "clients" not in metrics  # unsupported, never zero
    assert "rx_bps" not in metrics  # v1 has no Counter64 objects at all
    assert metrics["up"] is True


async def test_interface_down_and_selection(agents: SimulatedAgents) -> None:
    sim = SimulatedAccessPoint(vendor="unifi", clock=Clock(), wlan_up=False)
    port = await agents.serve(sim)
    assert (
        dict((await access_point(f"127.0.0.1:{port}", "unifi_ap").poll())[0].metrics)["up"] is False
    )
    only_lo = access_point(f"127.0.0.1:{port}", "unifi_ap", interfaces=["lo"])
    assert dict((await only_lo.poll())[0].metrics)["up"] is True


async def test_snmpd_as_a_generic_ap(snmpd: Snmpd) -> None:
    v2 = access_point(snmpd.address, "generic_snmp_ap", community=snmpd.community)
    v3 = access_point(
        snmpd.address,
        "generic_snmp_ap",
        version="3",
        user=snmpd.user,
        auth_key=snmpd.auth_key,
        priv_key=snmpd.priv_key,
    )
    for driver in (v2, v3):
        metrics = dict((await driver.poll())[0].metrics)
        assert float(metrics["uptime_s"]) >= 0
        assert "clients" not in metrics
        assert metrics["reboots"] == 0
        assert isinstance(metrics.get("up"), bool)
        second = dict((await driver.poll())[0].metrics)
        assert float(second.get("rx_bps", 0.0)) >= 0
    from drivers.snmp.client import close_family_clients

    close_family_clients()


@given(st.integers(0, COUNTER64 - 1), st.integers(0, 10**10), st.floats(1, 600))
def test_counter64_delta_across_wrap(start: int, octets: int, seconds: float) -> None:
    end = (start + octets) % COUNTER64
    assert octet_delta(start, end, seconds) == octets


@given(st.integers(2**40, COUNTER64 - 1), st.integers(0, 2**30), st.floats(1, 600))
def test_a_big_drop_is_a_reset_not_a_wrap(start: int, end: int, seconds: float) -> None:
    # Falling from far below 2^64 to near zero would need > 100 Gbit/s: a reset.
    if start < COUNTER64 - 2**50:
        assert octet_delta(start, end, seconds) is None


@given(st.integers(0, TIMETICKS - 1), st.integers(0, TIMETICKS - 1), st.floats(1, 3600))
def test_uptime_decrease_is_a_reboot_unless_the_497_day_wrap(
    before: int, after: int, elapsed: float
) -> None:
    rebooted = uptime_rebooted(before, after, elapsed)
    if after >= before:
        assert not rebooted
    elif before < TIMETICKS * 0.99:
        assert rebooted


def test_tick_wrap_is_not_a_reboot() -> None:
    assert not uptime_rebooted(TIMETICKS - 1000, 5000, 60.0)
    assert uptime_rebooted(TIMETICKS - 1000, 5000 + 100 * 86400, 60.0) is True


def test_rate_meter_first_reading_and_reset() -> None:
    meter = RateMeter()
    assert meter.update(1000, 0.0) is None
    assert meter.update(2000, 8.0) == 1000.0
    assert meter.update(10, 9.0, reset=True) is None
