"""Bench: one process polls 2,300 simulated WiFi APs and 54 NTCIP controllers over SNMP.

The targets are served by a few simulator processes on loopback (one UDP port each,
``drivers.snmp.simulated_agent``), 2 % of them silent. The poller is the agent's code path
for these families: the family's shared engine, one driver per target (``create_poller``),
every target polled at once (the worst burst a cycle can start with) under the per-target
timeout the agent applies, each reading encoded as its contract payload. ``cycle_s`` is
the time until every target answered or timed out in the last of ``--cycles`` cycles (the
steady state: the first, printed too, meets the silent targets for the first time);
``agent_cpu_pct`` is the poller's CPU in that cycle over the 60 s polling interval.

Reference in the same run: the same targets read by net-snmp (``snmpbulkget`` for the APs'
columns, ``snmpget`` for the controllers' objects), ``--parallel`` processes at a time.

    python -m bench.snmp [--aps 2300] [--controllers 54] [--servers 4] [--quick]

Last line: {"targets": N, "cycle_s": X, "p99_target_ms": Y, "agent_cpu_pct": Z,
"netsnmp_cycle_s": W}
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import multiprocessing
import multiprocessing.connection
import os
import shutil
import sys
import time
from typing import Any

from drivers.framework import DeviceSpec, DriverError, DriverFamily, PolledDriver

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


def drivers_for(
    targets: list[tuple[str, bool, int]], detectors: int, families: dict[str, DriverFamily]
) -> list[PolledDriver]:
    """One driver per target, as the agent makes them (config validated, no network)."""
    out = []
    for index, (kind, _silent, port) in enumerate(targets):
        common = {
            "timeout_s": POLL_TIMEOUT_S,
            "request_timeout_s": REQUEST_TIMEOUT_S,
            "retries": RETRIES,
        }
        if kind == "ap":
            family = families["wifi"]
            device_type = "unifi_ap" if index % 3 == 0 else "mikrotik_ap"
            config: dict[str, Any] = common
        else:
            family = families["atcs"]
            device_type = "ntcip_1202_controller"
            config = {
                **common,
                "detectors": {n: f"t{index}-det{n}" for n in range(1, detectors + 1)},
            }
        spec = DeviceSpec(
            device_id=f"t{index}",
            device_type=device_type,
            protocol=family.protocols[0],
            address=f"127.0.0.1:{port}",
            driver_config=config,
        )
        assert family.create_poller is not None
        out.append(family.create_poller(spec, family.validate(spec)))
    return out


async def one_cycle(drivers: list[PolledDriver]) -> tuple[float, list[float], int, int, float]:
    """Poll every driver at once: (cycle s, answered targets' ms, failures, readings, cpu s)."""
    durations: list[float] = []
    failures = 0
    readings = 0

    async def poll(driver: PolledDriver) -> None:
        nonlocal failures, readings
        started = time.monotonic()
        try:
            async with asyncio.timeout(POLL_TIMEOUT_S):
                got = await driver.poll()
        except (DriverError, TimeoutError):
            failures += 1
            return
        for reading in got:
            reading.payload()  # the contract payload the agent would publish
        readings += len(got)
        durations.append((time.monotonic() - started) * 1000)

    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(poll(d) for d in drivers))
    return time.monotonic() - wall0, durations, failures, readings, time.process_time() - cpu0


async def agent_cycles(drivers: list[PolledDriver], cycles: int) -> list[tuple[Any, ...]]:
    """``cycles`` cycles on one loop (the family engines are per loop); then close them."""
    from drivers.snmp.client import close_family_clients

    try:
        return [await one_cycle(drivers) for _ in range(cycles)]
    finally:
        close_family_clients()


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
            failures += (await process.wait()) != 0

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
    parser.add_argument("--quick", action="store_true", help="20 APs, 2 controllers")
    args = parser.parse_args()
    if args.quick:
        args.aps, args.controllers, args.servers, args.cycles = 20, 2, 2, 2
    faulthandler.dump_traceback_later(600, file=sys.stderr)
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
        from drivers.framework import discover_families

        drivers = drivers_for(targets, args.detectors, discover_families())
        cycles = asyncio.run(agent_cycles(drivers, args.cycles))
        netsnmp_s, netsnmp_failures = asyncio.run(
            netsnmp_cycle(targets, args.detectors, args.parallel)
        )
    finally:
        for proc in processes:
            proc.terminate()
            proc.join(10)
    silent = sum(1 for _k, s, _p in targets if s)
    cycle_s, durations, failures, readings, cpu_s = cycles[-1]
    first_s = cycles[0][0]
    result = {
        "targets": len(targets),
        "cycle_s": round(cycle_s, 2),
        "p99_target_ms": round(p99(durations), 1),
        "agent_cpu_pct": round(100 * cpu_s / args.interval, 1),
        "netsnmp_cycle_s": round(netsnmp_s, 2),
    }
    print(f"{'measure':<34}{'net-snmp (ref)':>18}{'kotahub poller':>18}")
    for name, ref, value in (
        ("targets (silent)", f"{len(targets)} ({silent})", f"{len(targets)} ({silent})"),
        ("cycle s (last; first)", result["netsnmp_cycle_s"], f"{cycle_s:.2f}; {first_s:.2f}"),
        ("failed targets (net-snmp: non-zero exits)", netsnmp_failures, failures),
        ("readings", "-", readings),
        ("p99 answered target ms", "-", result["p99_target_ms"]),
        ("cpu s in the cycle", "-", round(cpu_s, 2)),
        (f"cpu % of one core per {args.interval:g} s", "-", result["agent_cpu_pct"]),
    ):
        print(f"{name:<34}{ref!s:>18}{value!s:>18}")
    print(
        f"{args.servers} simulator processes, {args.detectors} detectors per controller, "
        f"net-snmp {args.parallel} processes at a time, per attempt {REQUEST_TIMEOUT_S} s x "
        f"{RETRIES + 1}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
