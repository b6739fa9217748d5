"""Bench: one agent polls 2,300 simulated WiFi APs and 54 NTCIP controllers over SNMP.

The targets are served by a few simulator processes on loopback (one UDP port each,
``drivers.snmp.simulated_agent``), 2 % of them silent and 0.5 % slow (answering after
``--slow-ms``). The poller is a real agent (``hub.agent.agent.Agent``) with the gateway's
device list (APs, controllers and their detectors, which the controllers' polls read),
publishing every reading to a Mosquitto of the bench's own; a subscriber notes when each
device's telemetry reached the broker. Two runs of the agent (docs/drivers/snmp.md):

- burst: every target's poll starts at once (no spread; the client's concurrency limit as
  configured), twice, ``--burst-interval`` apart. ``cycle_s`` is the second burst's time
  from its start until every answering target's reading was at the broker (the silent
  targets known as such, as in production); ``first_cycle_s`` the first burst's (the
  silent ones met for the first time).
- spread: the production schedule (polls spread over ``--interval``), ``--cycles``
  cycles. ``late_polls`` counts the answering targets whose reading of the last cycle
  reached the broker more than ``--late-s`` after their poll's slot; ``agent_cpu_pct`` is
  the agent's CPU in the last cycle (one round of polls) over the 60 s production interval.

Reference in the same run: the same targets read by net-snmp (``snmpbulkget`` for the APs'
columns, ``snmpget`` for the controllers' objects), ``--parallel`` processes at a time.

    python -m bench.snmp [--aps 2300] [--controllers 54] [--servers 4] [--interval 60]
                         [--burst-interval 30] [--quick]

Last line: {"targets": N, "cycle_s": X, "p99_target_ms": Y, "agent_cpu_pct": Z,
"netsnmp_cycle_s": W, "first_cycle_s": F, "late_polls": L, ...}
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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
# A target's plan: (kind "ap" or "atcs", silent, slow); with its port once served.
Planned = tuple[str, bool, bool]
Served = tuple[str, bool, bool, int]


def serve(
    kinds: list[Planned],
    detectors: int,
    slow_s: float,
    conn: multiprocessing.connection.Connection,
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
        for index, (kind, silent, slow) in enumerate(kinds):
            target: SimulatedTarget
            delay_s = slow_s if slow else 0.0
            if kind == "ap":
                target = SimulatedAccessPoint(
                    vendor="unifi" if index % 3 == 0 else "mikrotik",
                    seed=index,
                    silent=silent,
                    delay_s=delay_s,
                )
            else:
                target = SimulatedController(detectors=detectors, silent=silent, delay_s=delay_s)
            ports.append(await agents.serve(target))
        conn.send(ports)
        await asyncio.Event().wait()

    asyncio.run(main())


def plan(aps: int, controllers: int, silent_pct: float, slow_pct: float) -> list[Planned]:
    """Targets in order: one in 100/silent_pct is silent (the first one too), one in
    100/slow_pct slow (from just past half that on: never a silent one)."""
    kinds = ["ap"] * aps + ["atcs"] * controllers
    every = round(100 / silent_pct) if silent_pct > 0 else 0
    slow_every = round(100 / slow_pct) if slow_pct > 0 else 0
    out = []
    for i, kind in enumerate(kinds):
        silent = bool(every) and i % every == 0
        slow = bool(slow_every) and not silent and i % slow_every == slow_every // 2 + 1
        out.append((kind, silent, slow))
    return out


def records_for(targets: list[Served], detectors: int, interval: float) -> list[DeviceRecord]:
    """The gateway's device list as the registry hands it out: targets and detectors."""
    out = []
    for index, (kind, _silent, _slow, port) in enumerate(targets):
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

    def counts(self) -> dict[str, int]:
        """Readings so far, by device."""
        with self._lock:
            return {k: len(v) for k, v in self.times.items()}

    def take(self) -> dict[str, list[float]]:
        """Arrival times so far, by device, forgetting them (the next run starts empty)."""
        with self._lock:
            out, self.times = self.times, {}
        return out

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True, slots=True)
class RunResult:
    """One run of the agent: the agent (its stats), when it started, CPU s measured."""

    agent: Agent
    started: float
    cpu_s: float
    ran_s: float


async def run_agent(
    settings: Settings,
    records: list[DeviceRecord],
    *,
    spread: bool,
    until: Callable[[], bool],
    cpu_from: float,
    deadline: float,
) -> RunResult:
    """Run a real agent until ``until()`` holds or ``deadline`` s pass: its figures (its
    stop closes the SNMP families' engines)."""
    agent = Agent(
        settings=settings,
        gateway_id=GATEWAY,
        directory=SnapshotDirectory(records),
        spread_first_polls=spread,
    )
    stop = asyncio.Event()
    started = time.monotonic()
    cpu0: float | None = None
    cpu_s = 0.0
    task = asyncio.create_task(agent.run(stop))
    try:
        while time.monotonic() - started < deadline and not until():
            if cpu0 is None and time.monotonic() - started >= cpu_from:
                cpu0 = time.process_time()
            await asyncio.sleep(0.1)
        if cpu0 is not None:
            cpu_s = time.process_time() - cpu0
    finally:
        stop.set()
        await task
    return RunResult(agent, started, cpu_s, time.monotonic() - started)


def cycle_end(
    arrivals: dict[str, list[float]], answering: list[str], begin: float, cycle: int
) -> tuple[float, int]:
    """(s from ``begin`` until every answering target's reading of cycle ``cycle`` was at
    the broker, answering targets without that reading); a target's n-th reading is its
    n-th cycle's (the answering ones never fail a poll)."""
    ends, missing = [], 0
    for device_id in answering:
        seen = arrivals.get(device_id, [])
        if len(seen) > cycle:
            ends.append(seen[cycle] - begin)
        else:
            missing += 1
    return (max(ends) if ends else 0.0), missing


def late_readings(
    arrivals: dict[str, list[float]],
    answering: list[int],
    count: int,
    started: float,
    interval: float,
    cycle: int,
    late_s: float,
) -> tuple[int, float]:
    """(answering targets whose reading of ``cycle`` came more than ``late_s`` after their
    slot or never, the worst lateness s): target i of ``count`` has its first slot at
    ``interval * i / count`` after the start (the agent's spread), then every interval."""
    late, worst = 0, 0.0
    for index in answering:
        seen = arrivals.get(f"t{index}", [])
        slot = started + interval * index / count + cycle * interval
        lateness = seen[cycle] - slot if len(seen) > cycle else float("inf")
        late += lateness > late_s
        worst = max(worst, lateness)
    return late, worst


def answered_ms(agent: Agent) -> list[float]:
    """The agent's answered polls' durations (the failed ones, the silent targets', are the
    slowest: left out)."""
    return sorted(agent.stats.poll_ms)[: max(0, len(agent.stats.poll_ms) - agent.stats.failures)]


async def netsnmp_cycle(targets: list[Served], detectors: int, parallel: int) -> tuple[float, int]:
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
    await asyncio.gather(*(read(kind, port) for kind, _s, _w, port in targets))
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
    parser.add_argument("--slow-pct", type=float, default=0.5)
    parser.add_argument("--slow-ms", type=float, default=800.0, help="a slow target's delay")
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=60.0, help="the spread run's")
    parser.add_argument("--burst-interval", type=float, default=30.0)
    parser.add_argument("--cycles", type=int, default=2, help="the spread run's")
    parser.add_argument("--late-s", type=float, default=2.0, help="a reading this late is")
    parser.add_argument("--parallel", type=int, default=32, help="net-snmp processes at once")
    parser.add_argument("--quick", action="store_true", help="20 APs, 2 controllers, 4 s")
    args = parser.parse_args()
    if args.quick:
        args.aps, args.controllers, args.servers, args.cycles = 20, 2, 2, 2
        args.interval = args.burst_interval = 4.0
        args.slow_pct = 5.0  # one slow AP among the 22
    logging.getLogger("hub.agent").setLevel(logging.WARNING)  # not a line per device online
    runs_s = 2 * args.burst_interval + args.interval * (args.cycles + 1)
    faulthandler.dump_traceback_later(runs_s + 600, file=sys.stderr)
    kinds = plan(args.aps, args.controllers, args.silent_pct, args.slow_pct)
    ctx = multiprocessing.get_context("spawn")
    slices = [kinds[i :: args.servers] for i in range(args.servers)]
    processes = []
    targets: list[Served] = [("", False, False, 0)] * len(kinds)
    try:
        for number, chunk in enumerate(slices):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=serve,
                args=(chunk, args.detectors, args.slow_ms / 1000, child),
                daemon=True,
            )
            proc.start()
            processes.append(proc)
            if not parent.poll(120):
                raise RuntimeError(f"simulator process {number} did not start")
            for position, port in enumerate(parent.recv()):
                index = number + position * args.servers
                targets[index] = (*kinds[index], port)
        answering = [i for i, (_k, silent, _s, _p) in enumerate(targets) if not silent]
        names = [f"t{i}" for i in answering]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            broker, mqtt_port = start_broker(folder)
            arrivals = Arrivals(mqtt_port)

            def settings_for(run: str) -> Settings:
                settings = load_settings(
                    None,
                    state_dir=folder / "state",
                    mqtt={"port": mqtt_port, "password": "bench"},
                    # An outbox per run: the second never sends the first one's leftovers.
                    agent={"buffer_dir": folder / f"outbox-{run}", "refresh_interval_s": 5.0},
                )
                # The bench's gateway has no registry-issued identity: it logs in as admin.
                agent_cfg = settings.agent.model_copy(
                    update={"mqtt_username": settings.mqtt.username}
                )
                return settings.model_copy(update={"agent": agent_cfg})

            def all_read(times: int) -> Callable[[], bool]:
                def done() -> bool:
                    counts = arrivals.counts()
                    return all(counts.get(n, 0) >= times for n in names)

                return done

            try:
                burst = asyncio.run(
                    run_agent(
                        settings_for("burst"),
                        records_for(targets, args.detectors, args.burst_interval),
                        spread=False,
                        until=all_read(2),
                        cpu_from=args.burst_interval,
                        deadline=2 * args.burst_interval + POLL_TIMEOUT_S,
                    )
                )
                burst_seen = arrivals.take()
                spread = asyncio.run(
                    run_agent(
                        settings_for("spread"),
                        records_for(targets, args.detectors, args.interval),
                        spread=True,
                        until=lambda: False,
                        cpu_from=args.interval * (args.cycles - 1),
                        # The last cycle's last polls may still wait on silent targets.
                        deadline=args.interval * args.cycles
                        + min(POLL_TIMEOUT_S, REQUEST_TIMEOUT_S * (RETRIES + 1) + 1),
                    )
                )
                spread_seen = arrivals.take()
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
    silent = sum(1 for t in targets if t[1])
    slow = sum(1 for t in targets if t[2])
    first_s, first_missing = cycle_end(burst_seen, names, burst.started, 0)
    cycle_s, missing = cycle_end(burst_seen, names, burst.started + args.burst_interval, 1)
    last = args.cycles - 1
    # The others: a slow target's own reading is as late as its answers (one per request).
    others = [i for i in answering if not targets[i][2]]
    slow_ones = [i for i in answering if targets[i][2]]
    spread_at = (len(targets), spread.started, args.interval)
    late, worst_s = late_readings(spread_seen, others, *spread_at, last, args.late_s)
    first_late, _ = late_readings(spread_seen, others, *spread_at, 0, args.late_s)
    _, slow_worst_s = late_readings(spread_seen, slow_ones, *spread_at, last, args.late_s)
    failures = len(targets) - sum(1 for i in range(len(targets)) if spread_seen.get(f"t{i}"))
    durations = answered_ms(burst.agent)
    spread_ms = answered_ms(spread.agent)
    result = {
        "targets": len(targets),
        "cycle_s": round(cycle_s, 2),
        # Per target on the production schedule; a burst's polls mostly wait for a slot.
        "p99_target_ms": round(p99(spread_ms), 1),
        # The last cycle's CPU is one round of polls: over the 60 s production interval.
        "agent_cpu_pct": round(100 * spread.cpu_s / 60.0, 1),
        "netsnmp_cycle_s": round(netsnmp_s, 2),
        "first_cycle_s": round(first_s, 2),
        "late_polls": late,
        "late_after_s": args.late_s,
        "slow_worst_late_s": round(slow_worst_s, 2) if math.isfinite(slow_worst_s) else None,
        "silent": silent,
        "slow": slow,
        "burst_p99_target_ms": round(p99(durations), 1),
        "burst_cpu_pct": round(100 * burst.cpu_s / 60.0, 1),
    }
    rows: list[tuple[str, object, object]] = [
        (
            "targets (silent, slow)",
            f"{len(targets)} ({silent})",
            f"{len(targets)} ({silent}, {slow})",
        ),
        (
            "burst cycle s (second; first)",
            result["netsnmp_cycle_s"],
            f"{cycle_s:.2f}; {first_s:.2f}",
        ),
        ("  answering targets without a reading", "-", f"{missing}; {first_missing}"),
        ("  p99 answered poll ms (slot wait included)", "-", result["burst_p99_target_ms"]),
        ("  agent cpu s in the second burst", "-", round(burst.cpu_s, 2)),
        ("spread: others' late readings (last; first)", "-", f"{late}; {first_late}"),
        ("  worst lateness s: others; slow targets", "-", f"{worst_s:.2f}; {slow_worst_s:.2f}"),
        ("  late polls (agent's own count, > 1 s)", "-", spread.agent.stats.late_polls),
        ("  p99 answered poll ms", "-", result["p99_target_ms"]),
        ("  agent cpu s in the last cycle", "-", round(spread.cpu_s, 2)),
        ("  cpu % of one core per 60 s", "-", result["agent_cpu_pct"]),
        ("failed targets (net-snmp: non-zero exits)", netsnmp_failures, failures),
    ]
    print(f"{'measure':<44}{'net-snmp (ref)':>16}{'kotahub agent':>18}")
    for name, ref, value in rows:
        print(f"{name:<44}{ref!s:>16}{value!s:>18}")
    print(
        f"{args.servers} simulator processes, {args.detectors} detectors per controller, "
        f"slow targets answer after {args.slow_ms:g} ms; bursts {args.burst_interval:g} s "
        f"apart; spread run: interval {args.interval:g} s x {args.cycles} cycles, late = "
        f"reading at the broker > {args.late_s:g} s after its slot; net-snmp "
        f"{args.parallel} processes at a time, per attempt {REQUEST_TIMEOUT_S} s x {RETRIES + 1}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
