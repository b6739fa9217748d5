"""Bench: one agent polls N simulated Modbus devices every 10 s.

The devices live in several pymodbus servers, each in a process of its own, so the CPU
measured here is the agent's alone (its process: polling, decoding, the on-disk outbox and
paho's thread). A private Mosquitto receives the telemetry. The reference, measured in the
same run, is the same agent with no devices (its idle cost).

    python bench/agent.py [--devices 500] [--servers 5] [--interval 10] [--seconds 60]

Last line: {"devices": N, "cycle_p99_ms": X, "cpu_pct": Y, "late_polls": N}
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from device_registry.directory import DeviceRecord, SnapshotDirectory
from drivers.framework import discover_families
from hub.agent.agent import Agent
from hub.settings import Settings, load_settings

UNITS_PER_SERVER_MAX = 247


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_station(port: int, units: int, ready: multiprocessing.synchronize.Event) -> None:
    """A process: one pymodbus server with `units` generic 4-20 mA transmitters."""
    from drivers.flood.simulated_station import SimulatedStation

    async def main() -> None:
        station = SimulatedStation(port=port, unit_ids=range(1, units + 1), register_count=16)
        for unit in range(1, units + 1):
            station.set_registers(unit, 3, [2])
            station.set_int16(unit, 4, 100 + unit)
        await station.start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def start_broker(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


# The generic 4-20 mA gauge's schema, from the flood family's table (what a hub enforces).
_FLOOD = discover_families()["flood"]
GAUGE_SCHEMA = _FLOOD.metric_schema(_FLOOD.device_type("generic_4_20ma").metrics)


def records(ports: list[int], per_server: int, devices: int, interval: float) -> list[DeviceRecord]:
    out = []
    for i in range(devices):
        port = ports[i // per_server]
        out.append(
            DeviceRecord(
                device_id=f"bench-{i:04d}",
                family="flood",
                device_type="generic_4_20ma",
                gateway_id="bench-gw",
                expected_interval_s=interval,
                protocol="modbus_tcp",
                address=f"127.0.0.1:{port}",
                driver_config={"unit_id": i % per_server + 1, "timeout_s": 2.0},
                metrics=GAUGE_SCHEMA,
            )
        )
    return out


async def run_agent(
    settings: Settings, recs: list[DeviceRecord], seconds: float
) -> tuple[Agent, float]:
    """Run an agent for `seconds`; return it and its process CPU % over that time."""
    agent = Agent(settings=settings, gateway_id="bench-gw", directory=SnapshotDirectory(recs))
    stop = asyncio.Event()
    me = psutil.Process()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(1.0)  # connect, spread the first polls
    cpu0, wall0 = me.cpu_times(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, wall1 = me.cpu_times(), time.monotonic()
    stop.set()
    await task
    used = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return agent, 100.0 * used / (wall1 - wall0)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def main() -> None:
    try:
        os.fstat(0)
    except OSError:
        # Started with stdin closed (as CI does): multiprocessing's spawn would hand fd 0
        # to one of its pipes and the server processes never report ready.
        os.open(os.devnull, os.O_RDONLY)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--servers", type=int, default=5)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    # A watchdog: if a run ever hangs, the stacks of every thread say where.
    faulthandler.dump_traceback_later(3 * args.seconds + 60, file=sys.stderr)
    per_server = -(-args.devices // args.servers)
    if per_server > UNITS_PER_SERVER_MAX:
        parser.error(f"more than {UNITS_PER_SERVER_MAX} devices per server: add --servers")

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker, mqtt_port = start_broker(folder)
        ports = [free_port() for _ in range(args.servers)]
        servers = []
        try:
            for port in ports:
                ready = ctx.Event()
                proc = ctx.Process(
                    target=serve_station, args=(port, per_server, ready), daemon=True
                )
                proc.start()
                servers.append(proc)
                if not ready.wait(30):
                    raise RuntimeError(f"station on port {port} did not start")
            settings = load_settings(
                None,
                state_dir=folder / "state",
                mqtt={"port": mqtt_port, "password": "bench"},
                agent={"buffer_dir": folder / "outbox"},
            )
            # The bench's gateway has no registry-issued identity: it logs in as admin.
            agent_cfg = settings.agent.model_copy(update={"mqtt_username": settings.mqtt.username})
            settings = settings.model_copy(update={"agent": agent_cfg})
            reference, ref_cpu = asyncio.run(run_agent(settings, [], min(5.0, args.seconds)))
            recs = records(ports, per_server, args.devices, args.interval)
            agent, cpu = asyncio.run(run_agent(settings, recs, args.seconds))
        finally:
            for proc in servers:
                proc.terminate()
                proc.join(10)
            broker.terminate()
            broker.wait(10)

    stats = agent.stats
    result = {
        "devices": args.devices,
        "cycle_p99_ms": round(p99(list(stats.poll_ms)), 2),
        "cpu_pct": round(cpu, 1),
        "late_polls": stats.late_polls,
    }
    print(f"{'measure':<28}{'agent, 0 devices (ref)':>24}{f'agent, {args.devices} devices':>24}")
    rows = [
        ("polls", reference.stats.polls, stats.polls),
        ("failed polls", reference.stats.failures, stats.failures),
        ("late polls", reference.stats.late_polls, stats.late_polls),
        ("messages published", reference.publisher.published, agent.publisher.published),
        (
            "outbox left / dropped",
            f"{len(reference.outbox)}/{reference.outbox.dropped}",
            f"{len(agent.outbox)}/{agent.outbox.dropped}",
        ),
        (
            "poll p50 ms",
            "-",
            round(sorted(stats.poll_ms)[len(stats.poll_ms) // 2], 2) if stats.poll_ms else "-",
        ),
        ("poll p99 ms", "-", result["cycle_p99_ms"]),
        ("cpu % of one core", round(ref_cpu, 1), result["cpu_pct"]),
    ]
    for name, ref, value in rows:
        print(f"{name:<28}{ref!s:>24}{value!s:>24}")
    print(
        f"interval {args.interval:g} s, {args.servers} server processes, "
        f"{args.seconds:g} s measured"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
