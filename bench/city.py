"""City benchmark (``make bench-city``): one whole simulated city at its real reporting rates.

Everything runs on this box, each part in a process of its own so that its CPU share can be
measured with psutil: Mosquitto and InfluxDB (a private stack on free ports under a temp
folder), the hub (ingest), the simulators, and the agents (one per gateway, in one
process). The fleet is the demo's (``--scale city``: 10,700 cameras, 2,300 WiFi points,
54 ATCS controllers, about 150 gauges and pumps, 450 vehicles), registered once.

Measured in the same run:

- CPU cores of each part over the measuring window (CPU seconds / wall seconds), and the
  idle stack (Mosquitto + InfluxDB with no fleet, the reference). The window (300 s, one
  interval of the slowest family) starts after a warm-up of 300 s in which every device
  is polled for the first time (a camera's first poll sets up its ONVIF services, media
  profiles and pull point: three times a steady poll's CPU); the warm-up's cores are
  printed as a reference. Ten minutes of city in all;
- hub p99 publish-to-queryable: probe trackers publish stamped with their publish time,
  a poller asks InfluxDB every 200 ms (an upper bound: it includes up to one poll);
- points written vs points the simulators produced, per family (must be equal). A polled
  device's simulator groups the agent's requests into polls (``PollCounter``): a completed
  poll is one point however many requests and retries it took; a poll the device left
  unanswered is not produced but counted apart (``polls_failed``, per family). At the end
  the simulated city goes dark (every device dies on the fault board) and the bench waits
  out the longest poll timeout, so no poll is cut half-way; then the simulators stop and
  report, and the bench waits for what they produced to drain into InfluxDB;
- InfluxDB disk per day and per 30 days: the points stamped inside the window per second
  times the bytes a point takes once its series is long-lived. A 10-minute run holds one
  or two points per camera series, so its own TSM files are mostly per-block overhead
  (printed, not used); instead the window's rows are replayed into a scratch database as
  a history of full 1000-point blocks per field, series in proportion to each
  measurement's share of the points, at the interval its devices reported at, and
  InfluxDB compacts it (a few seconds after the writes stop, ``city_influx.INFLUX_ENV``):
  its TSM bytes over its points. The raw growth of TSM + WAL over the window's second
  half (no series index creation in it, but uncompacted) is printed as an upper bound;
- messages in and agent polls over the window only (the hub and the agents snapshot their
  counters at its start and end).

    python -m bench.city [--scale city] [--warmup-s 300] [--duration-s 300] [--fleet-file F]
    python -m bench.city --city-fraction 0.1 --warmup-s 0 --duration-s 120  # a tenth
    python -m bench.city ... --profile DIR   # cProfile each child: python -m pstats DIR/X

Prints a table, then ONE JSON line (the last line).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.bench_stack import BenchError, free_port, percentile
from bench.city_influx import (
    INFLUX_ENV,
    PROBE_PREFIX,
    disk_use,
    per_day_bytes,
    points_by_device,
    points_by_measurement,
    steady_bytes_per_point,
    wait_compacted,
)
from bench.city_probe import LatencyProbe
from bench.city_roles import GO_DARK, READY_TIMEOUT_S, SNAPSHOT, run_role
from hub.influxql import InfluxQL
from hub.local_stack import LocalStack
from hub.settings import Settings, load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ROLES = ("hub", "simulators", "agents")
PROBE_TYPE = "gps_tracker"
TARGET_CORES = 0.5
DRAIN_TIMEOUT_S = 180.0
IDLE_REFERENCE_S = 5.0
OWN_CONNECTIONS_PER_PROCESS = 250
# The longest poll timeout of a simulated family (a camera's 20 s), with a margin: after
# the city goes dark, every poll under way has ended before the simulators report.
QUIESCE_S = 25.0
# The longest poll interval (a camera's 300 s): every device's first poll, with its one-off
# session set-up, falls in the warm-up; the window measures the steady state after it.
WARMUP_S = 300.0
DURATION_S = 300.0  # one full interval of every family: 10 minutes of city with the warm-up
PROFILE_ENV = "KOTAHUB_CITY_PROFILE"
AGENT_PROCESSES = 3


# -- the parent ------------------------------------------------------------------------
@dataclass
class CityBench:
    """One run: the stack, the registered fleet, the three children, the probes."""

    scale: str
    duration_s: float
    fleet_file: Path | None
    probes: int
    speed: float = 1.0
    sim_processes: int = 1
    # Agents in this many processes, the gateways dealt over them: a city runs one agent
    # per gateway; all of them on one event loop starved it (camera ONVIF polls holding it
    # while SNMP answers waited), and polls the devices had answered timed out.
    agent_processes: int = 1
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kotahub-city-")))
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.t0 = time.monotonic()
        self.state_dir = self.root / "state"
        self.config = self.root / "kotahub.toml"
        self.config.write_text(
            f'state_dir = "{self.state_dir}"\n'
            f"[mqtt]\nport = {free_port()}\ntls_port = {free_port()}\n"
            f'[influx]\nurl = "http://127.0.0.1:{free_port()}"\n'
            f"[stack]\ninflux_rpc_port = {free_port()}\nstart_timeout_s = 60\n"
            # The probes publish as the admin identity: "full" lets it write under kota/.
            'admin_acl = "full"\n'
            f"[ingest]\nmetrics_port = 0\n"
            f"[registry]\napi_port = {free_port()}\n"
        )
        self.settings: Settings = load_settings(self.config)
        self.stack = LocalStack(self.settings)

    def log(self, message: str) -> None:
        """Progress on stderr (the last stdout line is the JSON)."""
        print(f"[city {time.monotonic() - self.t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    def register(self) -> int:
        """Register the fleet once (the children find it registered) and the probes."""
        from hub.demo.runner import DemoOptions, DemoRunner

        runner = DemoRunner(
            self.settings,
            DemoOptions(
                speed=1.0,
                scale=self.scale,  # type: ignore[arg-type]
                manage_stack=False,
                with_api=False,
                fleet_file=self.fleet_file,
                parts=frozenset(),
            ),
        )

        async def go() -> int:
            started = time.monotonic()
            await runner.start()
            assert runner.fleet is not None
            count = len(runner.fleet.devices)
            self.log(f"fleet of {count:,} devices registered in {time.monotonic() - started:.1f} s")
            await runner.stop()
            return count

        count = asyncio.run(go())
        # Devices with a broker connection each, about 250 per process (see sim_share).
        own = sum(1 for d in runner.fleet.devices if d.gateway_id is None) if runner.fleet else 0
        self.sim_processes = (
            1
            if own <= OWN_CONNECTIONS_PER_PROCESS
            else 1 + math.ceil(own / OWN_CONNECTIONS_PER_PROCESS)
        )
        self._register_probes()
        return count

    def _register_probes(self) -> None:
        from device_registry.database import open_database
        from device_registry.registry_service import RegistryService
        from device_registry.schemas import DeviceCreate

        database = open_database(
            self.settings.registry.resolved_database_url(self.settings.state_dir)
        )
        try:
            service = RegistryService(database, None)
            for index in range(self.probes):
                service.create_device(
                    DeviceCreate(
                        id=f"{PROBE_PREFIX}-{index}", device_type=PROBE_TYPE, state="active"
                    ),
                    actor="bench-city",
                    issue_credentials=False,
                )
        finally:
            database.close()

    def spawn(self, name: str) -> None:
        """Start one child (``wait_ready`` waits); ``simulators-I``, ``agents-I``: shard I."""
        role, _, shard = name.partition("-")
        argv = [sys.executable, "-m", "bench.city", "--role", role, "--config", str(self.config)]
        if shard:
            count = self.sim_processes if role == "simulators" else self.agent_processes
            argv += ["--shard", f"{shard}/{count}"]
        argv += ["--out", str(self.root), "--scale", self.scale, "--speed", str(self.speed)]
        if self.fleet_file is not None:
            argv += ["--fleet-file", str(self.fleet_file)]
        log_file = (self.root / f"{name}.stderr").open("ab")
        self.children[name] = subprocess.Popen(
            argv, cwd=PROJECT_ROOT, stdout=log_file, stderr=subprocess.STDOUT
        )

    def wait_ready(self, role: str) -> None:
        """Wait until a child says it is ready; its log's tail if it exited."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (self.root / f"ready-{role}").exists():
            if self.children[role].poll() is not None:
                tail = (self.root / f"{role}.stderr").read_text(errors="replace")[-2000:]
                raise BenchError(f"{role} exited during start-up:\n{tail}")
            if time.monotonic() > deadline:
                raise BenchError(f"{role} not ready within {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.1)

    def stop_child(self, role: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM one child (if not yet), wait, return its stats."""
        proc = self.children.pop(role)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise BenchError(f"{role} did not stop within {timeout_s:.0f} s") from None
        path = self.root / f"stats-{role}.json"
        if not path.exists():
            raise BenchError(f"{role} left no stats (exit {proc.returncode})")
        return dict(json.loads(path.read_text()))

    def simulators(self) -> list[str]:
        """The simulator children's names."""
        return [f"simulators-{i}" for i in range(self.sim_processes)]

    def agents(self) -> list[str]:
        """The agent children's names."""
        return [f"agents-{i}" for i in range(self.agent_processes)]

    def processes(self) -> dict[str, psutil.Process]:
        """Each part's process: the children and the stack's two servers."""
        out = {role: psutil.Process(proc.pid) for role, proc in self.children.items()}
        for name, part in (("broker", "mosquitto"), ("influxdb", "influxdb")):
            record = json.loads((self.stack.run_dir / f"{part}.json").read_text())
            out[name] = psutil.Process(int(record["pid"]))
        return out

    def close(self, keep: bool = False) -> None:
        """Stop whatever still runs and remove the temp folder (unless ``keep``)."""
        for role in list(self.children):
            with contextlib.suppress(Exception):
                proc = self.children.pop(role)
                proc.kill()
                proc.wait(5)
        with contextlib.suppress(Exception):
            self.stack.down()
        if keep:
            self.log(f"kept {self.root} (its logs and the stack's data)")
            return
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of a process and its children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> Any:
    """The JSON a child writes to ``path`` (BenchError if it exits or takes too long)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"no {path.name} from its child")
        time.sleep(0.05)
    return json.loads(path.read_text())


def summed(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The agent shards' counters added up."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict):  # counts by kind: added up kind by kind
                merged = out.setdefault(key, {})
                for kind, count in value.items():
                    merged[kind] = merged.get(kind, 0) + count
            else:
                out[key] = out.get(key, 0) + value
    return out


def snapshot(bench: CityBench, tag: int) -> dict[str, dict[str, Any]]:
    """The hub's and the agents' counters now (each writes its ``snap-NAME-TAG.json``)."""
    names = ["hub", *bench.agents()]
    for name in names:
        bench.children[name].send_signal(SNAPSHOT)
    snaps = {
        name: wait_for_file(bench.root / f"snap-{name}-{tag}.json", bench.children[name])
        for name in names
    }
    return {"hub": snaps["hub"], "agents": summed([snaps[n] for n in bench.agents()])}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run; returns the figures."""
    os.environ.update(INFLUX_ENV)  # inherited by influxd: compaction once writes stop
    bench = CityBench(
        args.scale,
        args.duration_s,
        args.fleet_file,
        args.probes,
        args.speed,
        agent_processes=args.agent_processes,
    )
    try:
        if args.city_fraction is not None:
            from hub.demo.fleet import city_data

            bench.fleet_file = bench.root / "city-fraction.json"
            bench.fleet_file.write_text(json.dumps(city_data(fraction=args.city_fraction)))
            bench.scale = "sample"  # the file is the fleet
        bench.log(f"stack under {bench.root}")
        bench.stack.up()
        devices = bench.register()
        procs = bench.processes()
        before = {n: cpu_seconds(p) for n, p in procs.items()}
        time.sleep(args.idle_s)
        idle_cores = sum(cpu_seconds(p) - before[n] for n, p in procs.items()) / args.idle_s
        # The hub first: its persistent session must exist before anything is published.
        bench.log("starting the hub, then the simulators and the agents")
        names = ["hub", *bench.simulators(), *bench.agents()]
        for name in names:
            bench.spawn(name)
        for name in names:
            bench.wait_ready(name)
        probe = LatencyProbe(bench.settings, args.probes)
        probe.start()
        procs = bench.processes()
        warm_cores = 0.0
        if args.warmup_s > 0:
            # Every device's first poll (a camera's session and pull point set-up, three
            # times a steady poll's CPU) falls in the first interval: measured apart.
            bench.log(f"warm-up {args.warmup_s:.0f} s (every device polled once)")
            warm0 = {n: cpu_seconds(p) for n, p in procs.items()}
            time.sleep(args.warmup_s)
            warm_cores = sum(cpu_seconds(p) - warm0[n] for n, p in procs.items()) / args.warmup_s
        influx_dir = bench.stack.influx_dir
        database = bench.settings.influx.database
        counters0 = snapshot(bench, 0)
        machine0 = psutil.cpu_times()
        cpu0 = {n: cpu_seconds(p) for n, p in procs.items()}
        t0, t0_ms = time.monotonic(), int(time.time() * 1000)
        bench.log(f"measuring {args.duration_s:.0f} s")
        disk_half: Any = None
        while (elapsed := time.monotonic() - t0) < args.duration_s:
            if disk_half is None and elapsed >= args.duration_s / 2:
                disk_half, half_t = disk_use(influx_dir, database), time.monotonic()
            time.sleep(max(0.1, min(5.0, args.duration_s - elapsed)))
        window = time.monotonic() - t0
        t1_ms = int(time.time() * 1000)
        cpu1 = {n: cpu_seconds(p) for n, p in procs.items()}
        machine1 = psutil.cpu_times()
        disk_end = disk_use(influx_dir, database)
        counters1 = snapshot(bench, 1)
        if disk_half is None:
            disk_half, half_t = disk_end, time.monotonic()
        half_s = max(time.monotonic() - half_t, 1e-9)
        probe.stop()
        cores: dict[str, float] = {}
        for n in procs:  # the simulator shards count as one part, the agent shards too
            part = n.partition("-")[0]
            cores[part] = cores.get(part, 0.0) + (cpu1[n] - cpu0[n]) / window
        busy = (
            sum(machine1)
            - machine1.idle
            - getattr(machine1, "iowait", 0.0)
            - (sum(machine0) - machine0.idle - getattr(machine0, "iowait", 0.0))
        ) / window
        bench.log(f"the city goes dark; {QUIESCE_S:.0f} s for the polls under way to end")
        for name in bench.simulators():
            bench.children[name].send_signal(GO_DARK)
        window_failed: dict[str, int] = {}
        for name in bench.simulators():
            snap = wait_for_file(bench.root / f"snap-{name}-0.json", bench.children[name])
            for family, count in snap.get("polls_failed", {}).items():
                window_failed[family] = window_failed.get(family, 0) + int(count)
        time.sleep(QUIESCE_S)
        bench.log("stopping the simulators; waiting for everything produced to be written")
        for name in bench.simulators():
            bench.children[name].send_signal(signal.SIGTERM)
        produced: dict[str, int] = {}
        sim_failed: dict[str, int] = {}
        by_device: dict[str, int] = {}
        by_family: dict[str, dict[str, int]] = {}
        for name in bench.simulators():
            sims = bench.stop_child(name)
            for family, count in sims["produced"].items():
                produced[family] = produced.get(family, 0) + int(count)
            for family, count in sims.get("polls_failed", {}).items():
                sim_failed[family] = sim_failed.get(family, 0) + int(count)
            by_device.update(sims["by_device"])
            for family, devices_made in sims.get("by_family", {}).items():
                by_family.setdefault(family, {}).update(devices_made)
        influx = InfluxQL(bench.settings.influx.url, timeout_s=60.0)
        written = drain(influx, database, produced)
        for name in (*bench.agents(), "hub"):  # at once; each writes its stats as it ends
            bench.children[name].send_signal(signal.SIGTERM)
        agents = summed([bench.stop_child(name) for name in bench.agents()])
        hub = bench.stop_child("hub")
        bench.log("writes stopped; waiting for InfluxDB to snapshot and compact")
        compacted, compact_s = wait_compacted(influx_dir, database)
        all_points = sum(points_by_measurement(influx, database, families_only=False).values())
        in_window = points_by_measurement(
            influx, database, since_ms=t0_ms, until_ms=t1_ms, families_only=False
        )
        bench.log("replaying the window as a long history to measure a point's steady cost")
        steady, history_points, history_s = steady_bytes_per_point(
            influx, influx_dir, database, in_window, window, t1_ms
        )
        bench.log("stopped")
        missing = {f: max(0, n - written.get(f, 0)) for f, n in produced.items()}
        short: dict[str, list[tuple[str, int, int]]] = {}
        if any(missing.values()):
            (bench.root / "produced-by-device.json").write_text(json.dumps(by_device))
            short = short_devices(influx, database, missing, by_family)
        influx.close()
        hub0, hub1 = counters0["hub"], counters1["hub"]
        ag0, ag1 = counters0["agents"], counters1["agents"]
        return {
            "devices": devices,
            "window_s": window,
            "msg_per_s": (hub1["messages_in"] - hub0["messages_in"]) / max(window, 1e-9),
            "cores": cores,
            "idle_stack_cores": idle_cores,
            "warmup_s": args.warmup_s,
            "warmup_cores": warm_cores,
            "machine_busy_cores": busy,
            "p99_ms": percentile(probe.latencies_ms, 99),
            "p50_ms": percentile(probe.latencies_ms, 50),
            "probes_seen": len(probe.latencies_ms),
            "produced": produced,
            "written": written,
            "missing": missing,
            "sim_polls_failed": sim_failed,
            "sim_polls_failed_before_dark": window_failed,
            "agent_polls": ag1["polls"] - ag0["polls"],
            "agent_polls_failed": ag1["polls_failed"] - ag0["polls_failed"],
            "agent_readings": agents.get("readings", 0),
            "agent_polls_run": agents.get("polls", 0),
            "agent_polls_failed_run": agents.get("polls_failed", 0),
            "agent_late_polls_run": agents.get("late_polls", 0),
            "agent_patient_polls_run": agents.get("patient_polls", 0),
            "agent_failed_by": agents.get("failed_by", {}),
            "short_devices": short,
            "deadletters": hub.get("deadletters", {}),
            "raw_growth_bytes_per_s": (disk_end.data - disk_half.data) / half_s,
            "tsm_bytes": compacted.tsm,
            "wal_bytes_left": compacted.wal,
            "index_bytes": compacted.index,
            "compact_s": compact_s,
            "all_points": all_points,
            "window_points": sum(in_window.values()),
            "steady_bytes_per_point": steady,
            "history_points": history_points,
            "history_s": history_s,
        }
    finally:
        bench.close(keep=args.keep)


def drain(influx: InfluxQL, database: str, produced: dict[str, int]) -> dict[str, int]:
    """Points written per family once all that was produced is in (or nothing moves)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    written: dict[str, int] = {}
    stable_since, last_total = time.monotonic(), -1
    while time.monotonic() < deadline:
        written = points_by_measurement(influx, database)
        total = sum(written.get(f, 0) for f in produced)
        if all(written.get(f, 0) >= n for f, n in produced.items()):
            break
        if total != last_total:
            stable_since, last_total = time.monotonic(), total
        elif time.monotonic() - stable_since > 30:
            break  # nothing moved for 30 s: what is missing is lost
        time.sleep(2.0)
    return written


def short_devices(
    influx: InfluxQL, database: str, missing: dict[str, int], by_family: dict[str, dict[str, int]]
) -> dict[str, list[tuple[str, int, int]]]:
    """Per family with points missing: each device written fewer than it produced.

    (device id, produced, written), the largest shortfall first: whether the loss is a
    few devices' or spread thin over many says where to look.
    """
    out: dict[str, list[tuple[str, int, int]]] = {}
    for family, count in missing.items():
        if not count:
            continue
        written = points_by_device(influx, database, family)
        rows = [
            (device_id, made, written.get(device_id, 0))
            for device_id, made in by_family.get(family, {}).items()
            if made > written.get(device_id, 0)
        ]
        out[family] = sorted(rows, key=lambda r: r[2] - r[1])
    return out


def report(figures: dict[str, Any]) -> dict[str, Any]:
    """Print the table; return the JSON summary."""
    from rich.console import Console
    from rich.table import Table

    window = figures["window_s"]
    run_bytes_per_point = figures["tsm_bytes"] / max(figures["all_points"], 1)
    bytes_per_point = figures["steady_bytes_per_point"]
    per_day_gb = per_day_bytes(bytes_per_point, figures["window_points"], window) / 1e9
    raw_day_gb = figures["raw_growth_bytes_per_s"] * 86400 / 1e9
    cores = figures["cores"]
    total = sum(cores.values())
    table = Table(title=f"City bench: {figures['devices']:,} devices, {window:.0f} s window")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in sorted(cores.items()):
        table.add_row(f"CPU cores: {name}", f"{value:.3f}")
    table.add_row("CPU cores: all parts", f"{total:.3f} (target <= {TARGET_CORES})")
    table.add_row("reference: idle stack (broker + InfluxDB)", f"{figures['idle_stack_cores']:.3f}")
    table.add_row("reference: whole machine busy", f"{figures['machine_busy_cores']:.2f}")
    if figures["warmup_s"] > 0:
        table.add_row(
            f"reference: all parts in the {figures['warmup_s']:.0f} s warm-up (first polls)",
            f"{figures['warmup_cores']:.3f}",
        )
    table.add_row("messages in / s (hub, window)", f"{figures['msg_per_s']:.1f}")
    table.add_row(
        "publish -> queryable p50 / p99 ms",
        f"{figures['p50_ms']:.0f} / {figures['p99_ms']:.0f} ({figures['probes_seen']} probes)",
    )
    for family, count in sorted(figures["produced"].items()):
        table.add_row(
            f"points {family}: produced / written",
            f"{count:,} / {figures['written'].get(family, 0):,}",
        )
    for family, count in sorted(figures["sim_polls_failed"].items()):
        before = figures["sim_polls_failed_before_dark"].get(family, 0)
        table.add_row(
            f"polls failed {family}: until the window's end / in the dark end",
            f"{before:,} / {count - before:,}",
        )
    table.add_row(
        "agent polls / failed in the window",
        f"{figures['agent_polls']:,} / {figures['agent_polls_failed']:,}",
    )
    table.add_row(
        "agent polls / failed / late / timeout waited for the agent, whole run; readings",
        f"{figures['agent_polls_run']:,} / {figures['agent_polls_failed_run']:,} / "
        f"{figures['agent_late_polls_run']:,} / {figures['agent_patient_polls_run']:,}; "
        f"{figures['agent_readings']:,}",
    )
    failed_by = sorted(figures["agent_failed_by"].items(), key=lambda kv: -kv[1])
    if failed_by:
        table.add_row(
            "agent's failed polls by reason, whole run (top 6)",
            "\n".join(f"{count:,} {kind}" for kind, count in failed_by[:6]),
        )
    for family, rows in sorted(figures["short_devices"].items()):
        shortfall: dict[int, int] = {}
        for _device, made, got in rows:
            shortfall[made - got] = shortfall.get(made - got, 0) + 1
        spread = ", ".join(f"{n} device(s) short by {k}" for k, n in sorted(shortfall.items()))
        examples = ", ".join(f"{d} {made}/{got}" for d, made, got in rows[:3])
        table.add_row(f"devices short {family} (produced/written)", f"{spread}; e.g. {examples}")
    for reason, count in sorted(figures["deadletters"].items()):
        table.add_row(f"dead-letters: {reason}", f"{count:,}")
    table.add_row(
        "this run's TSM bytes / point (1-2 points a series: block overhead)",
        f"{run_bytes_per_point:.1f} ({figures['tsm_bytes']:,} B / {figures['all_points']:,},"
        f" compacted in {figures['compact_s']:.0f} s, WAL left {figures['wal_bytes_left']:,} B)",
    )
    table.add_row(
        "steady bytes / point (the window replayed as full blocks, compacted)",
        f"{bytes_per_point:.2f} ({figures['history_points']:,} points,"
        f" {figures['history_s']:.0f} s)",
    )
    table.add_row("points stamped in the window / s", f"{figures['window_points'] / window:.1f}")
    table.add_row("InfluxDB disk per day / 30 days", f"{per_day_gb:.3f} / {per_day_gb * 30:.2f} GB")
    table.add_row(
        "raw TSM + WAL growth, 2nd half, per 30 days (upper bound)", f"{raw_day_gb * 30:.2f} GB"
    )
    table.add_row("series index (once, not per day)", f"{figures['index_bytes'] / 1e6:.1f} MB")
    Console(stderr=True).print(table)
    p99 = figures["p99_ms"]
    return {
        "devices": figures["devices"],
        "msg_per_s": round(figures["msg_per_s"], 1),
        "cpu_cores_total": round(total, 3),
        "cpu_cores_hub": round(cores.get("hub", 0.0), 3),
        "p99_ms": None if math.isnan(p99) else round(p99, 1),
        "points_missing": sum(figures["missing"].values()),
        "disk_gb_per_30d": round(per_day_gb * 30, 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the options; run the bench (or one child role)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scale", choices=("sample", "city"), default="city")
    parser.add_argument("--duration-s", type=float, default=DURATION_S)
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=WARMUP_S,
        help="run this long before measuring (every device's first poll falls in it)",
    )
    parser.add_argument("--fleet-file", type=Path, default=None)
    parser.add_argument(
        "--city-fraction",
        type=float,
        default=None,
        help="this share (0-1] of the city's cameras, APs, controllers and vehicles",
    )
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument(
        "--agent-processes",
        type=int,
        default=AGENT_PROCESSES,
        help=f"agent processes, the gateways dealt over them ({AGENT_PROCESSES})",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="cProfile every child into this folder"
    )
    parser.add_argument("--idle-s", type=float, default=IDLE_REFERENCE_S)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, data)")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="simulated time x real (1: real rates)"
    )
    parser.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        index, _, count = args.shard.partition("/")
        role_args = (args.role, args.config, args.out, args.fleet_file, args.scale, args.speed)
        profile_dir = os.environ.get(PROFILE_ENV)
        if not profile_dir:
            run_role(*role_args, (int(index), int(count)))
            return 0
        import cProfile

        # Each child profiled in its own file (--profile DIR): python -m pstats reads them.
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            run_role(*role_args, (int(index), int(count)))
        finally:
            profiler.disable()
            profiler.dump_stats(Path(profile_dir) / f"{args.role}-{index}.pstats")
        return 0
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        os.environ[PROFILE_ENV] = str(args.profile.resolve())
    if min(args.duration_s, args.idle_s, args.speed) <= 0 or args.probes < 1 or args.warmup_s < 0:
        parser.error(
            "--duration-s, --idle-s and --speed must be positive, --warmup-s not negative,"
            " --probes at least 1"
        )
    if args.city_fraction is not None and not 0 < args.city_fraction <= 1:
        parser.error("--city-fraction must be in (0, 1]")
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        figures = run(args)
    except BenchError as err:
        print(f"bench-city failed: {err}", file=sys.stderr)
        return 1
    print(json.dumps(report(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
