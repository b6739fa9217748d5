"""The trap receiver against Debian's snmptrap: v1, v2c and v3 authPriv, known and unknown."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest

from drivers.framework import DeviceSpec, DriverConfig, Reading
from drivers.snmp.client import close_family_clients
from drivers.snmp.trap_receiver import TrapReceiver
from drivers.wifi import FAMILY as WIFI
from tests.drivers.snmp.conftest import free_udp_port

ENGINE_ID = "0x80001f8880c0ffee0102030405"
SNMPTRAP = shutil.which("snmptrap") or "/usr/bin/snmptrap"


def device(
    device_id: str, source: str, port: int, **config: object
) -> tuple[DeviceSpec, DriverConfig]:
    spec = DeviceSpec(
        device_id=device_id,
        device_type="mikrotik_ap",
        protocol="snmp",
        address=f"{source}:161",
        driver_config={"trap_port": port, "community": "trapcomm", **config},
    )
    return spec, WIFI.validate(spec)


async def snmptrap(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        SNMPTRAP, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()


async def next_event(events: AsyncIterator[Reading]) -> Reading:
    async with asyncio.timeout(15):
        return await anext(events)


async def test_traps_v1_v2c_v3_attributed_by_source_and_unknown_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_udp_port()
    devices = [
        device("ap-a", "127.0.0.5", port),
        device(
            "ap-b",
            "127.0.0.6",
            port,
            version="3",
            user="trapper",
            auth_key="trap-auth-123",
            priv_key="trap-priv-456",
            trap_engine_id=ENGINE_ID,
        ),
    ]
    receiver = TrapReceiver(
        "wifi",
        devices,
        metric_keys=[m.key for m in WIFI.metrics],
        host="127.0.0.1",
    )
    events = receiver.stream()
    waiting = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.2)  # let the receiver bind before the first trap
    target = f"127.0.0.1:{port}"
    try:
        await snmptrap(
            "-v2c", "-c", "trapcomm", "--clientaddr=127.0.0.5", target, "", "1.3.6.1.6.3.1.1.5.1"
        )
        async with asyncio.timeout(15):
            cold = await waiting
        assert cold.device_id == "ap-a"
        assert cold.kind == "event"
        assert dict(cold.metrics) == {"trap": "cold_start", "trap_oid": "1.3.6.1.6.3.1.1.5.1"}

        await snmptrap(
            "-v3",
            "-e",
            ENGINE_ID,
            "-u",
            "trapper",
            "-l",
            "authPriv",
            "-a",
            "SHA",
            "-A",
            "trap-auth-123",
            "-x",
            "AES",
            "-X",
            "trap-priv-456",
            "--clientaddr=127.0.0.6",
            target,
            "",
            "1.3.6.1.6.3.1.1.5.3",
            "1.3.6.1.2.1.2.2.1.1.2",
            "i",
            "2",
        )
        down = await next_event(events)
        assert (down.device_id, down.metrics["trap"], down.metrics["if_index"]) == (
            "ap-b",
            "link_down",
            2,
        )

        await snmptrap(
            "-v1",
            "-c",
            "trapcomm",
            "--clientaddr=127.0.0.5",
            target,
            "1.3.6.1.4.1.14988",
            "127.0.0.5",
            "6",
            "17",
            "",
        )
        vendor = await next_event(events)
        assert vendor.device_id == "ap-a"
        assert vendor.metrics["trap"] == "vendor"
        assert str(vendor.metrics["trap_oid"]).startswith("1.3.6.1.4.1.14988")

        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                await snmptrap(
                    "-v2c",
                    "-c",
                    "trapcomm",
                    "--clientaddr=127.0.0.9",
                    target,
                    "",
                    "1.3.6.1.6.3.1.1.5.2",
                )
            # A known device's trap after them proves the unknown ones were handled first.
            await snmptrap(
                "-v2c",
                "-c",
                "trapcomm",
                "--clientaddr=127.0.0.5",
                target,
                "",
                "1.3.6.1.6.3.1.1.5.4",
            )
            up = await next_event(events)
        assert (up.device_id, up.metrics["trap"]) == ("ap-a", "link_up")
        assert receiver.unknown == {"127.0.0.9": 3}
        logged = [r for r in caplog.records if "127.0.0.9" in r.message]
        assert len(logged) == 1

        # A trap with a wrong community is refused by the engine: nothing is yielded.
        await snmptrap(
            "-v2c", "-c", "nope", "--clientaddr=127.0.0.5", target, "", "1.3.6.1.6.3.1.1.5.2"
        )
        await snmptrap(
            "-v2c", "-c", "trapcomm", "--clientaddr=127.0.0.5", target, "", "1.3.6.1.6.3.1.1.5.1"
        )
        assert (await next_event(events)).metrics["trap"] == "cold_start"
    finally:
        await events.aclose()
        close_family_clients()  # the receiver lived on the family's shared engine
