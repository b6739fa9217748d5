"""The shared SNMP client against real agents: simulated ones and Debian's snmpd."""

from __future__ import annotations

import asyncio

import pytest

from drivers.framework import DeviceSpec, DriverConfigError, DriverError
from drivers.snmp import UNSUPPORTED, SnmpClient, SnmpTargetConfig, SnmpValue
from drivers.snmp.simulated_agent import SimulatedAgents, SimulatedTarget
from drivers.wifi import FAMILY as WIFI
from tests.drivers.snmp.conftest import Snmpd

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"


def table_target() -> SimulatedTarget:
    return SimulatedTarget(
        static={
            SYS_UPTIME: ("timeticks", 4242),
            **{f"{IF_DESCR}.{i}": ("octets", f"if{i}".encode()) for i in range(1, 41)},
            # A truncated table: the status column stops after 3 rows.
            **{f"{IF_OPER}.{i}": ("integer", 1) for i in range(1, 4)},
            "1.3.6.1.2.1.31.1.1.1.6.1": ("counter64", 2**64 - 1),
        }
    )


@pytest.mark.parametrize("version", ["1", "2c"])
async def test_get_and_walk_v1_v2c(agents: SimulatedAgents, version: str) -> None:
    port = await agents.serve(table_target())
    client = SnmpClient("test")
    target = SnmpTargetConfig(address=f"127.0.0.1:{port}", version=version, max_repetitions=7)
    got = await client.get("dev", target, [SYS_UPTIME, "1.3.6.1.2.1.1.9.9.0"])
    assert got[SYS_UPTIME] == SnmpValue("timeticks", 4242)
    assert got["1.3.6.1.2.1.1.9.9.0"] is UNSUPPORTED  # noSuchInstance / noSuchName, never 0
    table = await client.walk("dev", target, [IF_DESCR, IF_OPER])
    assert len(table[IF_DESCR]) == 40  # more rows than one GETBULK holds
    assert table[IF_DESCR]["40"] == SnmpValue("octets", b"if40")
    assert sorted(table[IF_OPER]) == ["1", "2", "3"]  # truncated column: only its rows
    client.close()


async def test_gen_err_is_a_driver_error_naming_the_device(agents: SimulatedAgents) -> None:
    broken = table_target()
    broken.gen_err = True
    port = await agents.serve(broken)
    client = SnmpClient("test")
    with pytest.raises(DriverError, match=r"^ctl-7: agent answered genErr at 1\.3\.6\.1\.2"):
        await client.get("ctl-7", SnmpTargetConfig(address=f"127.0.0.1:{port}"), [SYS_UPTIME])
    client.close()


async def test_silent_target_retries_with_backoff_and_fails_alone(
    agents: SimulatedAgents,
) -> None:
    silent = table_target()
    silent.silent = True
    silent_port = await agents.serve(silent)
    good_ports = [await agents.serve(table_target()) for _ in range(20)]
    client = SnmpClient("test", in_flight=4)
    dead = SnmpTargetConfig(
        address=f"127.0.0.1:{silent_port}", request_timeout_s=0.5, retries=2, backoff_s=0.1
    )
    finished: list[str] = []

    async def read(name: str, target: SnmpTargetConfig) -> None:
        try:
            await client.get(name, target, [SYS_UPTIME])
        except DriverError as err:
            finished.append(f"{name} failed: {err.cause}")
        else:
            finished.append(name)

    await asyncio.gather(
        read("silent", dead),
        *(read(f"ap{p}", SnmpTargetConfig(address=f"127.0.0.1:{p}")) for p in good_ports),
    )
    # The silent one was asked retries + 1 times and ended last: it never held the others.
    assert silent.requests == 3
    assert (
        finished[-1] == "silent failed: no answer (timeout) from " + dead.address + " after 3 tries"
    )
    assert len(finished) == 21
    client.close()


async def test_wrong_community_reads_as_no_answer(agents: SimulatedAgents) -> None:
    port = await agents.serve(table_target())
    client = SnmpClient("test")
    target = SnmpTargetConfig(
        address=f"127.0.0.1:{port}", community="guess", request_timeout_s=0.3, retries=0
    )
    with pytest.raises(DriverError, match="no answer") as caught:
        await client.get("dev", target, [SYS_UPTIME])
    assert "guess" not in str(caught.value)
    client.close()


async def test_snmpd_v2c_system_group_and_if_mib(snmpd: Snmpd) -> None:
    client = SnmpClient("test")
    target = SnmpTargetConfig(address=snmpd.address, community=snmpd.community)
    got = await client.get("dev", target, [SYS_UPTIME, "1.3.6.1.2.1.1.6.0"])
    assert got["1.3.6.1.2.1.1.6.0"] == SnmpValue("octets", b"Semarang test rack")
    uptime = got[SYS_UPTIME]
    assert isinstance(uptime, SnmpValue)
    assert uptime.kind == "timeticks"
    table = await client.walk("dev", target, [IF_DESCR, IF_OPER])
    assert SnmpValue("octets", b"lo") in table[IF_DESCR].values()
    assert set(table[IF_OPER]) == set(table[IF_DESCR])
    client.close()


async def test_snmpd_v3_auth_priv_sha_aes(snmpd: Snmpd) -> None:
    client = SnmpClient("test")
    target = SnmpTargetConfig(
        address=snmpd.address,
        version="3",
        user=snmpd.user,
        auth_key=snmpd.auth_key,
        priv_key=snmpd.priv_key,
    )
    got = await client.get("dev", target, [SYS_UPTIME])
    assert isinstance(got[SYS_UPTIME], SnmpValue)
    table = await client.walk("dev", target, [IF_DESCR])
    assert SnmpValue("octets", b"lo") in table[IF_DESCR].values()
    client.close()


@pytest.mark.parametrize(
    ("auth", "priv", "words"),
    [
        ("wrong-auth-key-1", None, "SNMPv3 authentication failed"),
        # snmpd drops what it cannot decrypt, with no report: the message says what it means.
        (None, "wrong-priv-key-1", "a wrong privacy key or protocol also looks like this"),
    ],
)
async def test_snmpd_v3_wrong_keys_clear_and_not_leaking(
    snmpd: Snmpd, auth: str | None, priv: str | None, words: str
) -> None:
    client = SnmpClient("test")
    target = SnmpTargetConfig(
        address=snmpd.address,
        version="3",
        user=snmpd.user,
        auth_key=auth or snmpd.auth_key,
        priv_key=priv or snmpd.priv_key,
        request_timeout_s=1.0,
        retries=0,
    )
    with pytest.raises(DriverError) as caught:
        await client.get("dev", target, [SYS_UPTIME])
    message = str(caught.value)
    assert words in message, message
    for secret in (auth, priv, snmpd.auth_key, snmpd.priv_key):
        if secret:
            assert secret not in message
            assert secret not in repr(caught.value.__cause__)
    client.close()


def test_config_errors_name_the_field_never_the_key() -> None:
    spec = DeviceSpec(
        device_id="ap-1",
        device_type="mikrotik_ap",
        protocol="snmp",
        address="10.1.2.3",
        driver_config={"version": "3", "user": "u", "auth_key": "short", "priv_key": "x" * 9},
    )
    with pytest.raises(DriverConfigError, match="auth_key of at least 8") as caught:
        WIFI.validate(spec)
    assert "short" not in str(caught.value)
    slow = DeviceSpec(
        device_id="ap-2",
        device_type="mikrotik_ap",
        protocol="snmp",
        address="10.1.2.3:1161",
        driver_config={"request_timeout_s": 3, "retries": 2, "timeout_s": 5},
    )
    with pytest.raises(DriverConfigError, match="must fit in timeout_s"):
        WIFI.validate(slow)


async def test_a_target_silent_last_time_gets_one_probe_until_it_answers(
    agents: SimulatedAgents,
) -> None:
    silent = table_target()
    silent.silent = True
    port = await agents.serve(silent)
    client = SnmpClient("test")
    target = SnmpTargetConfig(address=f"127.0.0.1:{port}", request_timeout_s=0.3, retries=2)
    with pytest.raises(DriverError, match="after 3 tries"):
        await client.get("ap", target, [SYS_UPTIME])
    with pytest.raises(DriverError, match=r"after 1 try$"):
        await client.get("ap", target, [SYS_UPTIME])
    assert silent.requests == 4
    silent.silent = False
    assert (await client.get("ap", target, [SYS_UPTIME]))[SYS_UPTIME] == SnmpValue(
        "timeticks", 4242
    )
    silent.silent = True
    with pytest.raises(DriverError, match="after 3 tries"):  # answered once: retries again
        await client.get("ap", target, [SYS_UPTIME])
    client.close()


async def test_a_slow_target_answers_late_and_holds_no_one_up(agents: SimulatedAgents) -> None:
    slow = table_target()
    slow.delay_s = 0.6  # within its 1.5 s attempt: an answer, just late
    slow_port = await agents.serve(slow)
    good_ports = [await agents.serve(table_target()) for _ in range(12)]
    client = SnmpClient("test", in_flight=4)
    finished: list[str] = []

    async def read(name: str, port: int) -> None:
        got = await client.get(name, SnmpTargetConfig(address=f"127.0.0.1:{port}"), [SYS_UPTIME])
        assert got[SYS_UPTIME] == SnmpValue("timeticks", 4242)
        finished.append(name)

    await asyncio.gather(read("slow", slow_port), *(read(f"ap{p}", p) for p in good_ports))
    # Asked first, answered once, finished last: three slots kept serving the others.
    assert slow.requests == 1
    assert finished[-1] == "slow"
    assert len(finished) == 13
    client.close()
