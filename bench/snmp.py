"""Bench: one agent polls 2,300 simulated WiFi APs and 54 NTCIP controllers over SNMP.

The targets are served by a few simulator processes on loopback (one UDP port each,
``drivers.snmp.simulated_agent``), 2 % of them silent. The poller is a real agent
(``hub.agent.agent.Agent``) with the gateway's device list (APs, controllers and their
detectors, which the controllers' polls read), publishing every reading to a Mosquitto of
the bench's own; a subscriber notes when each device's telemetry reached the broker. The
agent spreads each cycle's polls over its interval (``--interval``), so a cycle lasts at
least that spread: ``cycle_s`` is the time from the start of the last of ``--cycles``
cycles until every answering target's reading of it was at the broker (the first cycle,
printed too, meets the silent targets for the first time). ``agent_cpu_pct`` is the
agent's CPU in the last cycle (one round of polls) over the 60 s production interval.

Reference in the same run: the same targets read by net-snmp (``snmpbulkget`` for the APs'
columns, ``snmpget`` for the controllers' objects), ``--parallel`` processes at a time.

    python -m bench.snmp [--aps 2300] [--controllers 54] [--servers 4] [--interval 60]
                         [--quick]

Last line: {"targets": N, "cycle_s": X, "p99_target_ms": Y, "agent_cpu_pct": Z,
"netsnmp_cycle_s": W}
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.agent import start_broker
from device_registry.directory import DeviceRecord, SnapshotDirectory
from drivers.framework import DeviceSpec
from hub.agent.agent import Agent
from hub.agent.mqtt_publisher import gateway_topic
from hub.settings import Settings, load_settings

AP_COLUMNS = (
    "1.3.6.1.2.1.1.3",
    "1.3.6.1.2.1.31.1.1.1.1",
    "1.3.6.1.2.1.2.2.1.8",
    "1.3.6.1.2.1.31.1.1.1.6",
    "1.3.6.1.2.1.31.1.1.1.10",
    "1.3.6.1.4.1.14988.1.1.1.3.1.6",
)
REQUEST_TIMEOUT_S = 1.5
RETRIES = 1
POLL_TIMEOUT_S = 30.0
GATEWAY = "bench-snmp-gw"


def serve(
    kinds: list[tuple[str, bool]], detectors: int, conn: multiprocessing.connection.Connection
) -> None:
    """A simulator process: serves its targets, sends their ports, runs until killed."""
    from drivers.atcs.simulated_controller import SimulatedController
    from drivers.snmp.simulated_agent import SimulatedAgents, SimulatedTarget
    from drivers.snmp.simulated_fleet import raise_open_files_limit
    from drivers.wifi.simulated_ap import SimulatedAccessPoint

    async def main() -> None:
        raise_open_files_limit(len(kinds) + 256)  # one socket per target
        agents = SimulatedAgents()
        ports = []
        for index, (kind, silent) in enumerate(kinds):
            target: SimulatedTarget
            if kind == "ap":
                target = SimulatedAccessPoint(
                    vendor="unifi" if index % 3 == 0 else "mikrotik", seed=index, silent=silent
                )
            else:
                target = SimulatedController(detectors=detectors, silent=silent)
            ports.append(await agents.serve(target))
        conn.send(ports)
        await asyncio.Event().wait()

    asyncio.run(main())


def plan(aps: int, controllers: int, silent_pct: float) -> list[tuple[str, bool]]:
    """Targets in order: (kind, silent); one in 100/silent_pct is silent, the first one too."""
    kinds = ["ap"] * aps + ["atcs"] * controllers
    every = round(100 / silent_pct) if silent_pct > 0 else 0
    return [(k, bool(every) and i % every == 0) for i, k in enumerate(kinds)]


def records_for(
    targets: list[tuple[str, bool, int]], detectors: int, interval: float
) -> list[DeviceRecord]:
    """The gateway's device list as the registry hands it out: targets and detectors."""
    out = []
    for index, (kind, _silent, port) in enumerate(targets):
        common: dict[str, Any] = {
            "timeout_s": POLL_TIMEOUT_S,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "retries": RETRIES,
        }
        if kind == "ap":
            family, protocol = "wifi", "snmp"
            device_type = "unifi_ap" if index % 3 == 0 else "mikrotik_ap"
            config = common
        else:
            family, protocol, device_type = "atcs", "ntcip_1202", "ntcip_1202_controller"
            config = {
                **common,
                "detectors": {n: f"t{index}-det{n}" for n in range(1, detectors + 1)},
            }
            out += [
                DeviceRecord(
                    device_id=f"t{index}-det{n}",
                    family="atcs_detector",
                    device_type="ntcip_1202_detector",
                    gateway_id=GATEWAY,
                    expected_interval_s=interval,
                    protocol="ntcip_1202_detector",
                    parent_id=f"t{index}",
                )
                for n in range(1, detectors + 1)
            ]
        out.append(
            DeviceRecord(
                device_id=f"t{index}",
                family=family,
                device_type=device_type,
                gateway_id=GATEWAY,
                expected_interval_s=interval,
                protocol=protocol,
                address=f"127.0.0.1:{port}",
                driver_config=config,
            )
        )
    return out


class Arrivals:
    """A subscriber on the bench's broker: when each device's telemetry arrived."""

    def __init__(self, port: int) -> None:
        self.times: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-snmp-watch"
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(gateway_topic(GATEWAY, "+", "telemetry"), qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        device_id = msg.topic.split("/")[-2]
        with self._lock:
            self.times.setdefault(device_id, []).append(time.monotonic())

    def snapshot(self) -> dict[str, list[float]]:
        """Arrival times so far, by device."""
        with self._lock:
            return {k: list(v) for k, v in self.times.items()}

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


async def run_agent(
    settings: Settings, records: list[DeviceRecord], interval: float, cycles: int
) -> tuple[Agent, float, float]:
    """Run a real agent for ``cycles`` intervals: (agent, its start, CPU s of the last one)."""
    from drivers.snmp.client import close_family_clients

    agent = Agent(settings=settings, gateway_id=GATEWAY, directory=SnapshotDirectory(records))
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.sleep(interval * (cycles - 1))
        cpu0 = time.process_time()
        await asyncio.sleep(interval)
        cpu_s = time.process_time() - cpu0
        # The last cycle's last polls may still wait on silent targets: let them end.
        await asyncio.sleep(min(POLL_TIMEOUT_S, REQUEST_TIMEOUT_S * (RETRIES + 1) + 1))
    finally:
        stop.set()
        await task
        close_family_clients()
    return agent, started, cpu_s


def last_cycle(
    arrivals: dict[str, list[float]], polled: list[str], started: float, interval: float, cycle: int
) -> tuple[float, int]:
    """(s from cycle ``cycle``'s start until every answering target's reading of it was at
    the broker, answering targets without that reading); a target's n-th reading is its
    n-th cycle's (the answering ones never fail a poll)."""
    begin = started + cycle * interval
    ends, missing = [], 0
    for device_id in polled:
        seen = arrivals.get(device_id, [])
        if not seen:
            continue  # silent all along
        if len(seen) > cycle:
            ends.append(seen[cycle] - begin)
        else:
            missing += 1
    return (max(ends) if ends else 0.0), missing


async def netsnmp_cycle(
    targets: list[tuple[str, bool, int]], detectors: int, parallel: int
) -> tuple[float, int]:
    """The same targets read by net-snmp's C tools, ``parallel`` at a time: (s, failures)."""
    from drivers.atcs.ntcip_controller import NtcipController, NtcipControllerConfig

    bulkget = shutil.which("snmpbulkget") or "/usr/bin/snmpbulkget"
    snmpget = shutil.which("snmpget") or "/usr/bin/snmpget"
    common = [
        "-v2c",
        "-c",
        "public",
        "-t",
        str(REQUEST_TIMEOUT_S),
        "-r",
        str(RETRIES),
        "-On",
        "-Oq",
    ]
    limit = asyncio.Semaphore(parallel)
    failures = 0
    sample = NtcipController(
        DeviceSpec(device_id="x", device_type="ntcip_1202_controller", protocol="ntcip_1202"),
        NtcipControllerConfig(
            address="127.0.0.1", detectors={n: f"d{n}" for n in range(1, detectors + 1)}
        ),
    )

    async def read(kind: str, port: int) -> None:
        nonlocal failures
        address = f"127.0.0.1:{port}"
        if kind == "ap":
            args = [bulkget, *common, "-Cn0", "-Cr8", address, *AP_COLUMNS]
        else:
            args = [snmpget, *common, address, *sample.oids]
        async with limit:
            process = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            # Awaited first: `failures += await ...` reads failures before the await, so
            # concurrent reads would each add to the same stale count.
            code = await process.wait()
        failures += code != 0

    started = time.monotonic()
    await asyncio.gather(*(read(kind, port) for kind, _s, port in targets))
    return time.monotonic() - started, failures


def p99(values: list[float]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def main() -> None:
    """Run the bench and print the table and the JSON line."""
    try:
        os.fstat(0)
    except OSError:
        os.open(os.devnull, os.O_RDONLY)  # spawn needs an fd 0 (CI closes stdin)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aps", type=int, default=2300)
    parser.add_argument("--controllers", type=int, default=54)
    parser.add_argument("--detectors", type=int, default=8)
    parser.add_argument("--silent-pct", type=float, default=2.0)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=32, help="net-snmp processes at once")
    parser.add_argument("--quick", action="store_true", help="20 APs, 2 controllers, 4 s")
    args = parser.parse_args()
    if args.quick:
        args.aps, args.controllers, args.servers, args.cycles = 20, 2, 2, 2
        args.interval = 4.0
    logging.getLogger("hub.agent").setLevel(logging.WARNING)  # not a line per device online
    faulthandler.dump_traceback_later(args.interval * (args.cycles + 1) + 600, file=sys.stderr)
    kinds = plan(args.aps, args.controllers, args.silent_pct)
    ctx = multiprocessing.get_context("spawn")
    slices = [kinds[i :: args.servers] for i in range(args.servers)]
    processes = []
    targets: list[tuple[str, bool, int]] = [("", False, 0)] * len(kinds)
    try:
        for number, chunk in enumerate(slices):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=serve, args=(chunk, args.detectors, child), daemon=True)
            proc.start()
            processes.append(proc)
            if not parent.poll(120):
                raise RuntimeError(f"simulator process {number} did not start")
            for position, port in enumerate(parent.recv()):
                index = number + position * args.servers
                targets[index] = (*kinds[index], port)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            broker, mqtt_port = start_broker(folder)
            arrivals = Arrivals(mqtt_port)
            try:
                settings = load_settings(
                    None,
                    state_dir=folder / "state",
                    mqtt={"port": mqtt_port, "password": "bench"},
                    agent={"buffer_dir": folder / "outbox", "refresh_interval_s": 5.0},
                )
                # The bench's gateway has no registry-issued identity: it logs in as admin.
                agent_cfg = settings.agent.model_copy(
                    update={"mqtt_username": settings.mqtt.username}
                )
                settings = settings.model_copy(update={"agent": agent_cfg})
                records = records_for(targets, args.detectors, args.interval)
                agent, started, cpu_s = asyncio.run(
                    run_agent(settings, records, args.interval, args.cycles)
                )
                seen = arrivals.snapshot()
            finally:
                arrivals.close()
                broker.terminate()
                broker.wait(10)
        netsnmp_s, netsnmp_failures = asyncio.run(
            netsnmp_cycle(targets, args.detectors, args.parallel)
        )
    finally:
        for proc in processes:
            proc.terminate()
            proc.join(10)
    silent = sum(1 for _k, s, _p in targets if s)
    polled = [f"t{i}" for i in range(len(targets))]
    cycle_s, missing = last_cycle(seen, polled, started, args.interval, args.cycles - 1)
    first_s, _ = last_cycle(seen, polled, started, args.interval, 0)
    spread_s = args.interval * (len(targets) - 1) / len(targets)
    failures = sum(1 for d in polled if not seen.get(d))
    readings = sum(len(v) for v in seen.values())
    # The failed polls (silent targets) are the slowest ones: leave them out, as answered.
    durations = sorted(agent.stats.poll_ms)[
        : max(0, len(agent.stats.poll_ms) - agent.stats.failures)
    ]
    result = {
        "targets": len(targets),
        "cycle_s": round(cycle_s, 2),
        "p99_target_ms": round(p99(durations), 1),
        # The last cycle's CPU is one round of polls: over the 60 s production interval.
        "agent_cpu_pct": round(100 * cpu_s / 60.0, 1),
        "netsnmp_cycle_s": round(netsnmp_s, 2),
    }
    print(f"{'measure':<42}{'net-snmp (ref)':>16}{'kotahub agent':>16}")
    for name, ref, value in (
        ("targets (silent)", f"{len(targets)} ({silent})", f"{len(targets)} ({silent})"),
        ("cycle s (last; first)", result["netsnmp_cycle_s"], f"{cycle_s:.2f}; {first_s:.2f}"),
        ("  of which the agent's spread of polls", "-", round(spread_s, 2)),
        ("failed targets (net-snmp: non-zero exits)", netsnmp_failures, failures),
        ("answering targets late (no reading)", "-", missing),
        ("readings at the broker", "-", readings),
        ("late polls (agent's own count)", "-", agent.stats.late_polls),
        ("p99 answered poll ms", "-", result["p99_target_ms"]),
        ("agent cpu s in the last cycle", "-", round(cpu_s, 2)),
        ("cpu % of one core per 60 s", "-", result["agent_cpu_pct"]),
    ):
        print(f"{name:<42}{ref!s:>16}{value!s:>16}")
    print(
        f"{args.servers} simulator processes, {args.detectors} detectors per controller, "
        f"agent interval {args.interval:g} s x {args.cycles} cycles (polls spread over the "
        f"interval, readings via Mosquitto), net-snmp {args.parallel} processes at a time, "
        f"per attempt {REQUEST_TIMEOUT_S} s x {RETRIES + 1}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
