"""Both SNMP families in the real agent: polls and traps reach Mosquitto per the contract."""

from __future__ import annotations

import asyncio
import shutil

from device_registry.directory import DeviceRecord
from drivers.atcs.simulated_controller import SimulatedController
from drivers.snmp.simulated_agent import SimulatedAgents
from drivers.wifi.simulated_ap import SimulatedAccessPoint
from hub.settings import Settings
from tests.agent.conftest import agent_settings, by_topic, running_agent, wait_until
from tests.conftest import MqttClientFactory
from tests.drivers.snmp.conftest import free_udp_port


def record(
    device_id: str,
    gw: str,
    family: str,
    device_type: str,
    protocol: str,
    port: int,
    **config: object,
) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        family=family,
        device_type=device_type,
        gateway_id=gw,
        expected_interval_s=0.5,
        protocol=protocol,
        address=f"127.0.0.1:{port}",
        driver_config={"timeout_s": 2.0, "request_timeout_s": 0.4, "retries": 1, **config},
    )


async def test_agent_polls_aps_and_controllers_and_publishes_traps_as_events(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    agents: SimulatedAgents,
    unique_id: str,
) -> None:
    gw = f"gw-{unique_id}"
    ap_port = await agents.serve(SimulatedAccessPoint(vendor="unifi", clients_by_radio=(3, 4)))
    silent = SimulatedAccessPoint(vendor="mikrotik", silent=True)
    silent_port = await agents.serve(silent)
    controller_port = await agents.serve(SimulatedController(period_s=1))
    trap_port = free_udp_port()
    ctl = f"{unique_id}-ctl"
    records = [
        record(f"{unique_id}-ap", gw, "wifi", "unifi_ap", "snmp", ap_port),
        record(f"{unique_id}-dead", gw, "wifi", "mikrotik_ap", "snmp", silent_port),
        record(
            ctl,
            gw,
            "atcs",
            "ntcip_1202_controller",
            "ntcip_1202",
            controller_port,
            trap_port=trap_port,
            detectors={"1": f"{ctl}-det1", "2": f"{ctl}-det2"},
        ),
    ]
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gw}/#")
    async with running_agent(agent_settings(test_settings), gw, records):
        await wait_until(
            lambda: (
                bool(by_topic(watcher.messages, f"dev/{ctl}-det1/telemetry"))
                and bool(by_topic(watcher.messages, f"dev/{unique_id}-ap/telemetry"))
            ),
            timeout_s=20,
        )
        process = await asyncio.create_subprocess_exec(
            shutil.which("snmptrap") or "/usr/bin/snmptrap",
            "-v2c",
            "-c",
            "public",
            f"127.0.0.1:{trap_port}",
            "",
            "1.3.6.1.6.3.1.1.5.1",
        )
        assert await process.wait() == 0
        await wait_until(lambda: bool(by_topic(watcher.messages, f"dev/{ctl}/event")), 20)
        await wait_until(
            lambda: (
                [s["online"] for s in by_topic(watcher.messages, f"dev/{unique_id}-dead/status")]
                == [False]
            ),
            timeout_s=20,
        )
    messages = list(watcher.messages)
    ap = by_topic(messages, f"dev/{unique_id}-ap/telemetry")
    assert ap[0]["metrics"]["clients"] == 7
    assert ap[0]["metrics"]["up"] is True
    controller = by_topic(messages, f"dev/{ctl}/telemetry")
    assert controller[0]["metrics"]["control_mode"] == "timebase"
    detector = by_topic(messages, f"dev/{ctl}-det1/telemetry")[0]["metrics"]
    assert detector["fault"] == "ok"
    assert isinstance(detector["volume"], int)
    events = by_topic(messages, f"dev/{ctl}/event")
    assert events[0]["metrics"] == {"trap": "cold_start", "trap_oid": "1.3.6.1.6.3.1.1.5.1"}
    assert not by_topic(messages, f"dev/{unique_id}-dead/telemetry")
    assert silent.requests >= 2  # it was asked (and retried), and never answered
