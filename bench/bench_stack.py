"""What both benchmarks share: a private stack, a simulated fleet's device list, the hub as a
subprocess, and InfluxDB read-backs.

Every benchmark starts its own Mosquitto and InfluxDB (``hub.local_stack.LocalStack``) on
free loopback ports under a temporary state folder, never the user's ``.kotahub``, and
drives the hub only through its command line (``python -m hub hub run --config FILE``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import psutil

from device_registry.directory import DeviceRecord, save_device_file
from drivers.contract import MetricKind, device_topic
from hub.influxql import InfluxQL
from hub.local_stack import LocalStack, mqtt_password
from hub.settings import Settings, load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FAMILY = "flood"
TELEMETRY_TOPIC = device_topic("{device_id}", "telemetry")  # .format(device_id=...)
# The simulated gauges' type: what fleet_publisher.telemetry_payload sends. bench_seq is a
# number, as it was before types had a schema, so that runs stay comparable.
FLEET_METRICS: dict[str, MetricKind] = {
    "level_m": "number",
    "rain_mm": "number",
    "battery_v": "number",
    "bench_seq": "number",
}
KECAMATAN = ("Semarang Utara", "Semarang Timur", "Genuk", "Tugu", "Pedurungan", "Gayamsari")


def reference_query_ms(influx: InfluxQL, database: str, runs: int = 10) -> float:
    """Median milliseconds of a trivial one-point query: the same run's yardstick."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        influx.query('SELECT last("level_m") FROM "flood"', database=database)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


class BenchError(Exception):
    """A benchmark cannot go on; the message says which part failed and why."""


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def device_id(index: int, prefix: str = "bench-flood") -> str:
    """The id of simulated device number ``index``."""
    return f"{prefix}-{index:07d}"


def fleet_records(count: int, *, prefix: str = "bench-flood", site: str = "") -> list[DeviceRecord]:
    """``count`` active flood gauges with registry tags, as the hub's device list holds them."""
    records = []
    for index in range(count):
        kecamatan = KECAMATAN[index % len(KECAMATAN)]
        tags = {
            "site": site or f"gauge-{index % 500:03d}",
            "kecamatan": kecamatan,
            "team": f"bpbd-{index % 7}",
            "model": "VEGAPULS C 21",
        }
        records.append(
            DeviceRecord(
                device_id=device_id(index, prefix),
                family=FAMILY,
                device_type="flood_gauge",
                expected_interval_s=600.0,
                tags=MappingProxyType(tags),
                protocol="mqtt",
                metrics=MappingProxyType(FLEET_METRICS),
            )
        )
    return records


@dataclass
class BenchStack:
    """Mosquitto + InfluxDB of one benchmark run, under a temporary state folder."""

    keep_state: bool = False
    root: Path = field(init=False)
    settings: Settings = field(init=False)
    stack: LocalStack = field(init=False)
    password: str = field(init=False)
    influx: InfluxQL = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kotahub-bench-"))
        self.settings = load_settings(
            None,
            state_dir=self.root / "state",
            mqtt={"port": free_port(), "tls_port": free_port()},
            influx={"url": f"http://127.0.0.1:{free_port()}"},
            # The bench's publishers and watchers log in as admin: it needs "full".
            stack={"influx_rpc_port": free_port(), "start_timeout_s": 60, "admin_acl": "full"},
        )
        self.stack = LocalStack(self.settings)

    def __enter__(self) -> BenchStack:
        self.stack.up()
        self.password = mqtt_password(self.settings)
        self.influx = InfluxQL(self.settings.influx.url, timeout_s=60.0)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.influx.close()
        with contextlib.suppress(Exception):
            self.stack.down()
        if not self.keep_state:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def mqtt_host(self) -> str:
        """Broker host."""
        return self.settings.mqtt.host

    @property
    def mqtt_port(self) -> int:
        """Broker port."""
        return self.settings.mqtt.port

    @property
    def username(self) -> str:
        """The admin identity that publishers, subscribers and the hub use here."""
        return self.settings.mqtt.username

    def part_process(self, name: str) -> psutil.Process:
        """The live process of one stack part, from the PID record ``stack up`` wrote."""
        record = json.loads((self.settings.state_dir / "run" / f"{name}.json").read_text())
        proc = psutil.Process(int(record["pid"]))
        if abs(proc.create_time() - float(record["create_time"])) > 1.0:
            raise BenchError(f"{name}: PID {record['pid']} now belongs to another process")
        return proc

    def stop_part(self, name: str, timeout_s: float = 30.0) -> None:
        """Stop Mosquitto or InfluxDB with SIGTERM (a clean exit: Mosquitto saves its data)."""
        proc = self.part_process(name)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout_s)

    def start_missing(self) -> None:
        """Start whatever part is stopped again, and wait until both answer."""
        self.stack.up()

    def drop_database(self, name: str) -> None:
        """Drop a measured database: its cache and shards stop costing InfluxDB anything."""
        self.influx.query(f'DROP DATABASE "{name}"')

    def create_database(self, name: str) -> None:
        """A database of its own with the stack's default retention policy (as the hub's)."""
        ix = self.settings.influx
        self.influx.query(
            f'CREATE DATABASE "{name}" WITH DURATION {ix.retention} '
            f'REPLICATION 1 NAME "{ix.retention_policy}"'
        )


def hub_config_text(
    stack: BenchStack,
    *,
    devices_file: Path,
    client_id: str,
    wal_dir: Path,
    database: str,
    shared_group: str = "",
    metrics_port: int = 0,
) -> str:
    """The hub's TOML configuration for this stack (the interface agreed with the hub).

    An empty ``shared_group`` means a plain subscription (the hub reads "" as unset);
    ``metrics_port`` 0 leaves ``/metrics`` off.
    """
    ix = stack.settings.influx
    return f"""# Written by the Kotahub benchmark for one run.
state_dir = "{stack.settings.state_dir}"

[mqtt]
host = "{stack.mqtt_host}"
port = {stack.mqtt_port}
username = "{stack.username}"
password = "{stack.password}"

[influx]
api = "v1"
url = "{ix.url}"
database = "{database}"
retention_policy = "{ix.retention_policy}"

[ingest]
devices_file = "{devices_file}"
client_id = "{client_id}"
shared_group = "{shared_group}"
wal_dir = "{wal_dir}"
batch_lines = 5000
batch_interval_s = 1.0
metrics_port = {metrics_port}
"""


def write_fleet(stack: BenchStack, records: list[DeviceRecord]) -> Path:
    """Save the device list where the hub reads it."""
    path = stack.root / "devices.json"
    save_device_file(path, records)
    return path


class HubProcess:
    """The hub run as ``python -m hub hub run --config FILE``, watched from outside.

    A reader thread copies its stderr to a log file (so the pipe never fills) and notices
    the "ingest ready" line. CPU time and peak RSS are read from the process tree.
    """

    READY_MARK = "ingest ready"

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.peak_rss_bytes = 0
        self._cpu_dead_s = 0.0
        self._last_cpu_s = 0.0

    @staticmethod
    def available() -> bool:
        """True when the hub's ingest runtime and its ``hub run`` command exist."""
        if not (PROJECT_ROOT / "hub" / "ingest").is_dir():
            return False
        out = subprocess.run(
            [sys.executable, "-m", "hub", "hub", "run", "--help"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return out.returncode == 0

    def start(self, timeout_s: float = 60.0) -> float:
        """Start the hub and wait for "ingest ready"; return the monotonic time it came."""
        if self.running:
            raise BenchError("hub already running")
        self._ready.clear()
        env = dict(os.environ)
        # The hub must read only the file we give it, never a user's kotahub.toml.
        env.pop("KOTAHUB_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "hub", "run", "--config", str(self.config_path)],
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self._last_cpu_s = 0.0
        self._reader = threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ready.wait(0.05):
                return time.monotonic()
            if self.proc.poll() is not None:
                raise BenchError(
                    f"hub exited with status {self.proc.returncode} before 'ingest ready':\n"
                    + self.log_tail()
                )
        raise BenchError(f"hub not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def _read_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        with self.log_path.open("ab") as log:
            for line in proc.stderr:
                log.write(line)
                log.flush()
                if self.READY_MARK.encode() in line:
                    self._ready.set()

    @property
    def running(self) -> bool:
        """True while the hub process lives."""
        return self.proc is not None and self.proc.poll() is None

    def _tree(self) -> list[psutil.Process]:
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_s(self) -> float:
        """User + system CPU seconds of the hub process tree, over all its runs so far."""
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        if total:
            self._last_cpu_s = total
        return self._cpu_dead_s + self._last_cpu_s

    def sample_rss(self) -> int:
        """Current RSS of the process tree in bytes; also updates the peak."""
        rss = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                rss += proc.memory_info().rss
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss)
        return rss

    def _finish(self) -> None:
        # CPU of a process that is gone cannot be read: keep what was last seen.
        self._cpu_dead_s += self._last_cpu_s
        self._last_cpu_s = 0.0
        if self._reader is not None:
            self._reader.join(5)
        self.proc = None

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, wait for a clean exit; return the exit status."""
        if self.proc is None:
            return 0
        self.cpu_s()
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(10)
            self._finish()
            raise BenchError(f"hub did not stop within {timeout_s:.0f} s of SIGTERM") from None
        self._finish()
        return status

    def kill9(self) -> None:
        """kill -9 the whole hub process tree: no flush, no goodbye."""
        if self.proc is None:
            return
        self.cpu_s()
        tree = self._tree()
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        psutil.wait_procs(tree, timeout=10)
        self._finish()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the hub wrote to stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no hub log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty hub log)"


class RssSampler:
    """Samples the hub's RSS in the background so the peak is not missed between reads."""

    def __init__(self, hub: HubProcess, interval_s: float = 0.2) -> None:
        self.hub = hub
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.hub.sample_rss()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def count_points(
    influx: InfluxQL, database: str, field_name: str, start_ms: int, end_ms: int
) -> int:
    """Points of the bench measurement with ``start_ms <= time < end_ms``."""
    rows = influx.rows(
        f'SELECT count("{field_name}") FROM "{FAMILY}" '
        f"WHERE time >= {start_ms}ms AND time < {end_ms}ms",
        database=database,
    )
    if not rows:
        return 0
    return int(next(v for k, v in rows[0].items() if k != "time"))


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    """Measure a block: the list holds the elapsed seconds afterwards."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100.0 * len(ordered))))
    return ordered[rank - 1]
