"""Hub ingest benchmark (``make bench-ingest``): the hub against its references, one run.

Phases, all on one private stack (Mosquitto + InfluxDB on free ports, temp state):

1. **InfluxDB ceiling**: the backlog's points as prebuilt, gzipped 5,000-line batches
   posted one after the other to ``/write`` (one writer, as one hub worker has).
2. **Broker drain**: a bare QoS 1 subscriber with a persistent session (the hub's own
   MQTT intake, counting and acknowledging, nothing else) drains the backlog that the
   fleet published while it was away.
3. **Hub sustained rate**: the same backlog queued for the hub's persistent session while
   it is stopped; the clock runs from "ingest ready" until every point is queryable.
   Completion is watched cheaply (the hub's ``/metrics``, then a few devices' last
   points) and confirmed by one count of every point. Polling InfluxDB with full count
   queries meanwhile would steal its CPU from the run being measured (about 0.13 CPU-s
   per query over 15,000 series), which the ceiling phase never pays.
   CPU seconds and peak RSS of the hub process tree are read during this phase and the next.
4. **Latency**: the fleet publishes at ``--rate`` msg/s while probe devices publish a few
   messages a second stamped with their publish time (``ts``); a poller queries InfluxDB
   every 100 ms, and publish -> queryable is the difference (an upper bound: it includes
   up to one poll interval).

Phases 1-3 run ``--repeat`` times (3 by default), each run into a database or session
of its own, and the medians are reported: this machine is shared and a single run of
any phase can be off by 15-20 %. Every run's figure is printed in the table.

Prints a table, then ONE JSON line (the last line).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.console import Console
from rich.table import Table

from bench.bench_stack import (
    FAMILY,
    TELEMETRY_TOPIC,
    BenchError,
    BenchStack,
    HubProcess,
    RssSampler,
    count_points,
    device_id,
    fleet_records,
    free_port,
    hub_config_text,
    percentile,
    write_fleet,
)
from bench.broker_drain import DrainResult, IntakeDrain, discard_session
from bench.fleet_publisher import Fleet, FleetRun, telemetry_fields, telemetry_payload
from device_registry.directory import DeviceRecord
from hub.influxql import InfluxQL
from hub.ingest.device_status import StatusChange
from hub.ingest.line_protocol import series_batches

CEILING_DB = "bench_ceiling"
HUB_DB = "kotahub"
BATCH_LINES = 5000
PROBE_PREFIX = "bench-probe"
JSON_KEYS = (
    "influx_ceiling_pps",
    "broker_drain_mps",
    "hub_mps",
    "p50_ms",
    "p99_ms",
    "cpu_s_per_million",
    "rss_mb",
    "ratio_influx",
    "ratio_broker",
    "influx_sorted_pps",
    "ratio_influx_sorted",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """Sizes of one run."""

    devices: int
    rate: float
    seconds: float
    backlog_rounds: int
    processes: int
    clients_per_process: int
    probes: int
    probe_rate: float
    json_only: bool
    references_only: bool
    clients_compare: bool
    keep_state: bool
    hub_workers: int
    repeat: int
    first_start: bool = False

    @property
    def backlog(self) -> int:
        """Messages in the backlog phases."""
        return self.devices * self.backlog_rounds

    @property
    def live_rounds(self) -> int:
        """Rounds over all devices that the latency phase publishes."""
        return max(1, math.ceil(self.rate * self.seconds / self.devices))


def parse_options(argv: list[str]) -> Options:
    """Command-line options; ``--quick`` shrinks every size for the smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, help="simulated devices (default 15000)")
    parser.add_argument("--rate", type=float, help="offered msg/s in the latency phase (10000)")
    parser.add_argument("--seconds", type=float, help="length of the latency phase (30)")
    parser.add_argument("--backlog-rounds", type=int, help="messages per device in backlogs (20)")
    parser.add_argument("--processes", type=int, help="publishing processes (3)")
    parser.add_argument("--clients-per-process", type=int, help="MQTT connections each (12)")
    parser.add_argument("--probes", type=int, help="latency probe devices (20)")
    parser.add_argument("--probe-rate", type=float, help="probe messages per second (20)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument(
        "--references-only",
        action="store_true",
        help="measure only the InfluxDB ceiling and the broker drain (no hub)",
    )
    parser.add_argument(
        "--clients-compare",
        action="store_true",
        help="also drain with other MQTT client set-ups, to justify the hub's client",
    )
    parser.add_argument("--keep-state", action="store_true", help="keep the temp state folder")
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs of the ceiling, drain and hub backlog phases; medians are reported (3)",
    )
    parser.add_argument(
        "--first-start",
        action="store_true",
        help="backlog runs without the devices' status history (a city's very first start:"
        " every device's first message is a status change and a new device_status series)",
    )
    parser.add_argument(
        "--hub-workers",
        type=int,
        default=1,
        help="hub processes sharing the load via $share/kotahub/ (1)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    return Options(
        devices=args.devices or (300 if quick else 15_000),
        rate=args.rate or (600.0 if quick else 10_000.0),
        seconds=args.seconds or (3.0 if quick else 30.0),
        backlog_rounds=args.backlog_rounds or (4 if quick else 20),
        processes=args.processes or (1 if quick else 3),
        clients_per_process=args.clients_per_process or (4 if quick else 12),
        probes=args.probes or (5 if quick else 20),
        probe_rate=args.probe_rate or (10.0 if quick else 20.0),
        json_only=args.json_only,
        references_only=args.references_only,
        clients_compare=args.clients_compare,
        keep_state=args.keep_state,
        hub_workers=args.hub_workers,
        repeat=max(1, args.repeat or (1 if quick else 3)),
        first_start=args.first_start,
    )


# -- 1. InfluxDB ceiling -------------------------------------------------------------
def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _series_key(record: DeviceRecord) -> str:
    tags = sorted(record.influx_tags().items())
    return FAMILY + "".join(f",{k}={_escape_tag(v)}" for k, v in tags)


def ceiling_lines(records: list[DeviceRecord], rounds: int, ts_base_ms: int) -> list[str]:
    """The backlog's points as line protocol, in publishing order."""
    keys = [_series_key(r) for r in records]
    return [
        f"{keys[index]} {telemetry_fields(index, seq)} {ts_base_ms + seq}"
        for seq in range(rounds)
        for index in range(len(records))
    ]


def sorted_ceiling_batches(lines: list[str], window: int) -> list[bytes]:
    """The same points as the hub's catch-up writer posts them: each window of ``window``
    lines (publishing order) grouped by series, in bodies of about 5,000 lines, gzipped.
    """
    if window <= BATCH_LINES:
        return gzip_batches(lines)  # the hub does not sort then (catchup_sort_lines off)
    bodies: list[bytes] = []
    for start in range(0, len(lines), window):
        chunk = "\n".join(lines[start : start + window]).encode()
        bodies.extend(series_batches([chunk], BATCH_LINES))
    return [gzip.compress(body, compresslevel=1) for body in bodies]


def gzip_batches(lines: list[str]) -> list[bytes]:
    """Lines as gzipped bodies of ``BATCH_LINES`` lines each."""
    return [
        gzip.compress("\n".join(lines[i : i + BATCH_LINES]).encode(), compresslevel=1)
        for i in range(0, len(lines), BATCH_LINES)
    ]


def post_batches(stack: BenchStack, database: str, bodies: list[bytes], what: str) -> float:
    """Post gzipped bodies to ``/write`` one after the other; return the seconds it took."""
    url = f"{stack.settings.influx.url}/write"
    params = {"db": database, "precision": "ms"}
    headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
    with httpx.Client(timeout=60.0) as client:
        start = time.perf_counter()
        for body in bodies:
            resp = client.post(url, params=params, content=body, headers=headers)
            if resp.status_code != 204:
                raise BenchError(f"{what} write answered {resp.status_code}: {resp.text[:200]}")
        return time.perf_counter() - start


def influx_ceiling(
    stack: BenchStack, batches: list[bytes], points: int, database: str = CEILING_DB
) -> float:
    """Points per second that InfluxDB takes from one writer posting prebuilt batches.

    Each run writes into a database of its own, so that every run creates its series
    afresh, as the hub's backlog runs do.
    """
    stack.create_database(database)
    seconds = post_batches(stack, database, batches, "ceiling")
    written = count_points(stack.influx, database, "level_m", 0, 2**62 // 1_000_000)
    if written != points:
        raise BenchError(f"ceiling: InfluxDB holds {written} of {points} points")
    stack.drop_database(database)
    return points / seconds


# -- 2. broker drain -----------------------------------------------------------------
def make_fleet(
    stack: BenchStack,
    opts: Options,
    rounds: int,
    ts_base_ms: int,
    rate_per_s: float,
    prefix: str,
) -> Fleet:
    """The simulated fleet on this stack, sized by ``opts`` (rate 0: as fast as it can)."""
    return Fleet(
        host=stack.mqtt_host,
        port=stack.mqtt_port,
        username=stack.username,
        password=stack.password,
        devices=opts.devices,
        rounds=rounds,
        ts_base_ms=ts_base_ms,
        processes=opts.processes,
        clients_per_process=opts.clients_per_process,
        rate_per_s=rate_per_s,
        client_prefix=prefix,
    )


def publish_backlog(
    stack: BenchStack, opts: Options, ts_base_ms: int, prefix: str, rounds: int | None = None
) -> FleetRun:
    """Publish ``rounds`` (default ``backlog_rounds``) messages per device, as fast as it can."""
    fleet = make_fleet(stack, opts, rounds or opts.backlog_rounds, ts_base_ms, 0, prefix)
    fleet.prepare()
    fleet.go()
    return fleet.wait(timeout_s=600)


def broker_drain(
    stack: BenchStack, opts: Options, ts_base_ms: int, client_id: str = "bench-drain"
) -> tuple[DrainResult, float]:
    """Drain rate of a bare subscriber; also returns the fleet's publish rate."""
    drain = IntakeDrain(
        host=stack.mqtt_host,
        port=stack.mqtt_port,
        username=stack.username,
        password=stack.password,
        client_id=client_id,
    )
    drain.open_session()
    run = publish_backlog(stack, opts, ts_base_ms, "bench-pub-drain")
    return drain.drain(run.acked, timeout_s=600), run.offered_mps


# -- 3. hub sustained rate -----------------------------------------------------------
@dataclass
class HubFigures:
    """What the hub phases measured."""

    mps_runs: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    messages: int = 0
    live_offered_mps: float = float("nan")
    live_written: int = 0
    live_sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    probes_sent: int = 0
    probes_lost: int = 0
    # The intake handler's busy share over each drain (``intake_busy_seconds_total``): what
    # a drain looks like to the alert engine's hold-back (wal_consumers.INTAKE_BUSY_SHARE).
    drain_busy: list[float] = field(default_factory=list)

    @property
    def mps(self) -> float:
        """Median sustained rate over the backlog runs."""
        return statistics.median(self.mps_runs) if self.mps_runs else float("nan")


def wait_written(
    stack: BenchStack,
    ts_base_ms: int,
    rounds: int,
    devices: int,
    timeout_s: float,
    database: str = HUB_DB,
) -> float:
    """Wait until all ``rounds`` x ``devices`` points are queryable; return when (monotonic).

    The last round is polled alone (cheap for InfluxDB); then the whole range is checked.
    """
    deadline = time.monotonic() + timeout_s
    last_round = ts_base_ms + rounds - 1
    while True:
        if count_points(stack.influx, database, "level_m", last_round, last_round + 1) >= devices:
            seen = time.monotonic()
            total = count_points(stack.influx, database, "level_m", ts_base_ms, last_round + 1)
            if total >= devices * rounds:
                return seen
        if time.monotonic() > deadline:
            total = count_points(stack.influx, database, "level_m", ts_base_ms, last_round + 1)
            raise BenchError(
                f"hub wrote {total} of {devices * rounds} points within {timeout_s:.0f} s"
            )
        time.sleep(0.2)


def scrape_metrics(port: int, client: httpx.Client) -> dict[str, float]:
    """The hub's unlabelled-but-``hub`` counters and gauges from its ``/metrics`` page.

    ``client`` is kept across polls: a new one per request costs the bench about 40 ms
    of CPU (a TLS context), which at 20 polls a second took most of a core from the
    processes being measured.
    """
    text = client.get(f"http://127.0.0.1:{port}/metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "," in line.split(" ", 1)[0]:
            continue  # comments, and series with more labels than hub=
        name, _, value = line.partition(" ")
        out[name.split("{", 1)[0]] = float(value)
    return out


SAMPLED_DEVICES = 30
STALL_S = 60.0  # no message acked and no line written for this long: the run failed


BUSY_SECONDS = "kotahub_ingest_intake_busy_seconds_total"


def wait_backlog_written(
    stack: BenchStack,
    workers: HubWorkers,
    ts_base_ms: int,
    rounds: int,
    devices: int,
    timeout_s: float,
    busy: list[float] | None = None,
) -> float:
    """Wait until the backlog is queryable; return when (monotonic), confirmed by InfluxDB.

    ``busy`` gets the intake handler's busy share from the first scrape to the last ack.

    Cheap checks gate the one expensive count: the workers' ``/metrics`` must have acked
    the whole backlog, then a count over a few devices spread across the fleet (a tag
    filter: a few series) must show their last round; only then is every point counted,
    and polling goes on if that count falls short.
    """
    expected = devices * rounds
    database = workers.database
    step = max(1, devices // SAMPLED_DEVICES)
    sample = [device_id(i) for i in range(devices - 1, -1, -step)]
    sample_filter = " OR ".join(f"device_id = '{d}'" for d in sample)
    last_round = ts_base_ms + rounds - 1
    sample_query = (
        f'SELECT count("level_m") FROM "{FAMILY}" WHERE ({sample_filter}) '
        f"AND time >= {last_round}ms AND time < {last_round + 1}ms"
    )
    deadline = time.monotonic() + timeout_s
    progress, progress_at = -1.0, time.monotonic()
    busy_start: tuple[float, float] | None = None
    busy_done = False
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            pages = [scrape_metrics(port, client) for port in workers.metrics_ports]
            busy_s = sum(
                page.get("kotahub_ingest_intake_busy_seconds_total", 0.0) for page in pages
            )
            if busy_start is None:
                busy_start = (time.monotonic(), busy_s)
            acked = sum(page.get("kotahub_ingest_acked_total", 0.0) for page in pages)
            written = sum(page.get("kotahub_ingest_lines_written_total", 0.0) for page in pages)
            if acked + written != progress:
                progress, progress_at = acked + written, time.monotonic()
            elif time.monotonic() - progress_at > STALL_S:
                # E.g. InfluxDB refusing every write: fail now rather than at the timeout.
                retries = sum(page.get("kotahub_ingest_write_retries_total", 0.0) for page in pages)
                raise BenchError(
                    f"the hub made no progress for {STALL_S:.0f} s: acked {acked:.0f} of "
                    f"{expected}, wrote {written:.0f} lines, {retries:.0f} write retries; "
                    f"see {workers.log_path}"
                )
            if acked >= expected:
                if busy is not None and busy_start is not None and not busy_done:
                    seconds = time.monotonic() - busy_start[0]
                    busy.append((busy_s - busy_start[1]) / max(seconds, 1e-9) / len(pages))
                    busy_done = True  # once per drain
                rows = stack.influx.rows(sample_query, database=database)
                seen = int(next(v for k, v in rows[0].items() if k != "time")) if rows else 0
                if seen >= len(sample):
                    # The run ended when this check saw it; the full count only confirms
                    # (over 15,000 series it takes InfluxDB a few hundred milliseconds).
                    seen_at = time.monotonic()
                    held = count_points(
                        stack.influx, database, "level_m", ts_base_ms, last_round + 1
                    )
                    if held >= expected:
                        return seen_at
            time.sleep(0.05)
    total = count_points(stack.influx, database, "level_m", ts_base_ms, last_round + 1)
    raise BenchError(f"hub wrote {total} of {expected} points within {timeout_s:.0f} s")


class LatencyProbe:
    """Publishes probe messages stamped with their publish time and polls InfluxDB for them."""

    def __init__(self, stack: BenchStack, probes: int, rate: float, database: str) -> None:
        self.stack = stack
        self.database = database
        self.ids = [device_id(i, PROBE_PREFIX) for i in range(probes)]
        self.interval_s = 1.0 / rate
        self.sent: dict[int, float] = {}  # ts ms -> publish time, wall clock ms
        self.seen: dict[int, float] = {}  # ts ms -> first seen queryable, wall clock ms
        self._lock = threading.Lock()
        self._stop_publishing = threading.Event()
        self._stop_polling = threading.Event()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="bench-probe",
            protocol=mqtt.MQTTv311,
        )
        self._client.username_pw_set(stack.username, stack.password)
        self._publisher = threading.Thread(target=self._publish_loop, daemon=True)
        self._poller = threading.Thread(target=self._poll_loop, daemon=True)
        self._influx = InfluxQL(stack.settings.influx.url, timeout_s=10.0)

    def start(self) -> None:
        """Connect and start publishing and polling."""
        self._client.connect(self.stack.mqtt_host, self.stack.mqtt_port, keepalive=60)
        self._client.loop_start()
        self._publisher.start()
        self._poller.start()

    def _publish_loop(self) -> None:
        seq = 0
        last_ts = 0
        next_at = time.monotonic()
        while not self._stop_publishing.is_set():
            # A strictly increasing ts makes each probe's time its unique key.
            ts = max(int(time.time() * 1000), last_ts + 1)
            last_ts = ts
            probe = seq % len(self.ids)
            topic = TELEMETRY_TOPIC.format(device_id=self.ids[probe])
            with self._lock:
                self.sent[ts] = time.time() * 1000.0
            self._client.publish(topic, telemetry_payload(probe, seq, ts), qos=1)
            seq += 1
            next_at += self.interval_s
            self._stop_publishing.wait(max(0.0, next_at - time.monotonic()))

    def _poll_loop(self) -> None:
        while not self._stop_polling.wait(0.1):
            with self._lock:
                pending = [ts for ts in self.sent if ts not in self.seen]
            if not pending:
                continue
            asked_at = time.time() * 1000.0
            try:
                series = self._influx.query(
                    f"SELECT bench_seq FROM \"{FAMILY}\" WHERE site = '{PROBE_PREFIX}' "
                    f"AND time >= {min(pending)}ms",
                    database=self.database,
                )
            except Exception:  # a failed poll is simply retried at the next tick
                continue
            with self._lock:
                for item in series:
                    for row in item.values:
                        ts = int(row[0])
                        if ts in self.sent and ts not in self.seen:
                            self.seen[ts] = asked_at

    def stop_publishing(self) -> None:
        """Stop sending probes (polling goes on)."""
        self._stop_publishing.set()
        self._publisher.join(5)

    def finish(self, grace_s: float) -> tuple[list[float], int]:
        """Wait up to ``grace_s`` for the last probes; return latencies (ms) and lost count."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.seen) >= len(self.sent):
                    break
            time.sleep(0.1)
        self._stop_polling.set()
        self._poller.join(15)
        self._influx.close()
        self._client.loop_stop()
        self._client.disconnect()
        with self._lock:
            latencies = [self.seen[ts] - self.sent[ts] for ts in self.seen]
            return latencies, len(self.sent) - len(self.seen)


class HubWorkers:
    """One or more hub processes sharing the load through ``$share/kotahub/...``."""

    def __init__(
        self, stack: BenchStack, count: int, *, database: str = HUB_DB, name: str = "hub"
    ) -> None:
        self.stack = stack
        self.database = database
        self.hubs: list[HubProcess] = []
        self.metrics_ports: list[int] = []
        self.client_ids: list[str] = []
        for worker in range(count):
            self.metrics_ports.append(free_port())
            self.client_ids.append(f"kotahub-bench-{name}-{worker}")
            config = stack.root / f"{name}-{worker}.toml"
            config.write_text(
                hub_config_text(
                    stack,
                    devices_file=stack.root / "devices.json",
                    client_id=self.client_ids[-1],
                    wal_dir=stack.root / f"{name}-wal-{worker}",
                    database=database,
                    # One worker: the default plain subscription; several share the load.
                    shared_group="kotahub" if count > 1 else "",
                    metrics_port=self.metrics_ports[-1],
                )
            )
            self.hubs.append(HubProcess(config, stack.root / f"{name}-{worker}.log"))

    def start(self) -> float:
        """Start every worker; return when the first was ready (messages flow from then)."""
        return min(hub.start() for hub in self.hubs)

    def stop(self) -> None:
        """SIGTERM every running worker."""
        for hub in self.hubs:
            if hub.running:
                hub.stop()

    def end_sessions(self) -> None:
        """Discard the workers' persistent sessions, so that later runs queue nothing here."""
        stack = self.stack
        for client_id in self.client_ids:
            discard_session(
                stack.mqtt_host, stack.mqtt_port, stack.username, stack.password, client_id
            )

    def cpu_s(self) -> float:
        """CPU seconds of all workers' process trees."""
        return sum(hub.cpu_s() for hub in self.hubs)

    @property
    def peak_rss_mb(self) -> float:
        """Peak RSS of the largest worker (each holds the whole device list)."""
        return max(hub.peak_rss_bytes for hub in self.hubs) / 1e6

    @property
    def log_path(self) -> Path:
        """The first worker's log."""
        return self.hubs[0].log_path


def seed_status_history(
    stack: BenchStack, records: list[DeviceRecord], database: str, time_ms: int
) -> None:
    """Each device's last status as online, as a city's database holds it after day one.

    A hub restores these at start, so a restart (which the backlog runs model) is not
    reported as every device coming online.
    """
    lines = [StatusChange.of(r, True, "data", time_ms).line() for r in records]
    post_batches(stack, database, gzip_batches(lines), "status history")


def backlog_run(
    stack: BenchStack,
    opts: Options,
    records: list[DeviceRecord],
    backlog_base_ms: int,
    index: int,
    figures: HubFigures,
    *,
    keep_running: bool = False,
) -> HubWorkers:
    """One sustained-rate run: fresh workers and a fresh database, the backlog queued first.

    With ``keep_running`` the workers are left running (warm, their series created) for the
    latency phase; the caller stops them.
    """
    database = f"{HUB_DB}_backlog_{index}"
    stack.create_database(database)
    if not opts.first_start:
        seed_status_history(stack, records, database, backlog_base_ms - 60_000)
    workers = HubWorkers(stack, opts.hub_workers, database=database, name=f"backlog{index}")
    # A first start creates each worker's persistent session; while they are stopped the
    # broker queues the backlog for them, exactly as during a hub restart in production.
    workers.start()
    workers.stop()
    run = publish_backlog(stack, opts, backlog_base_ms, f"bench-pub-hub{index}")
    try:
        with contextlib.ExitStack() as samplers:
            for hub in workers.hubs:
                samplers.enter_context(RssSampler(hub))
            ready_at = workers.start()
            cpu_before = workers.cpu_s()
            done_at = wait_backlog_written(
                stack,
                workers,
                backlog_base_ms,
                opts.backlog_rounds,
                opts.devices,
                timeout_s=900,
                busy=figures.drain_busy,
            )
            figures.cpu_s += workers.cpu_s() - cpu_before
    except BaseException:
        keep_running = False
        raise
    finally:
        if not keep_running:
            workers.stop()
            workers.end_sessions()
            stack.drop_database(database)
    figures.messages += run.acked
    figures.mps_runs.append(run.acked / (done_at - ready_at))
    figures.peak_rss_mb = max(workers.peak_rss_mb, figures.peak_rss_mb)
    return workers


def latency_phase(
    stack: BenchStack, opts: Options, live_base_ms: int, figures: HubFigures, workers: HubWorkers
) -> None:
    """Latency under live load with probes, on the last backlog run's workers and database,
    as in steady state: the hub warm, the devices' series existing in InfluxDB."""
    try:
        with contextlib.ExitStack() as samplers:
            for hub in workers.hubs:
                samplers.enter_context(RssSampler(hub))
            _live_phase(stack, opts, live_base_ms, figures, workers)
    finally:
        workers.stop()
        workers.end_sessions()
    figures.peak_rss_mb = max(workers.peak_rss_mb, figures.peak_rss_mb)


def _live_phase(
    stack: BenchStack, opts: Options, live_base_ms: int, figures: HubFigures, hub: HubWorkers
) -> None:
    fleet = make_fleet(stack, opts, opts.live_rounds, live_base_ms, opts.rate, "bench-pub-live")
    fleet.prepare()
    probe = LatencyProbe(stack, opts.probes, opts.probe_rate, hub.database)
    probe.start()
    cpu_before = hub.cpu_s()
    fleet.go()
    run = fleet.wait(timeout_s=opts.seconds * 10 + 120)
    probe.stop_publishing()
    wait_written(
        stack, live_base_ms, opts.live_rounds, opts.devices, timeout_s=300, database=hub.database
    )
    figures.cpu_s += hub.cpu_s() - cpu_before
    figures.messages += run.acked + len(probe.sent)
    figures.live_offered_mps = run.offered_mps
    figures.live_sent = run.acked
    figures.live_written = count_points(
        stack.influx, hub.database, "level_m", live_base_ms, live_base_ms + opts.live_rounds
    )
    figures.latencies_ms, figures.probes_lost = probe.finish(grace_s=30.0)
    figures.probes_sent = len(probe.sent)


# -- report --------------------------------------------------------------------------
def _round(value: float, digits: int = 1) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def _runs(values: list[float]) -> str:
    return " / ".join(f"{v:,.0f}" for v in values)


def run(opts: Options) -> dict[str, float | None]:
    """Run every phase and return the JSON figures (also printing the table)."""
    console = Console(stderr=opts.json_only, quiet=opts.json_only)
    now_ms = int(time.time() * 1000)
    backlog_base = now_ms - 3_600_000
    live_base = now_ms - 1_800_000
    records = fleet_records(opts.devices)
    probes = fleet_records(opts.probes, prefix=PROBE_PREFIX, site=PROBE_PREFIX)
    if not opts.references_only and not HubProcess.available():
        raise BenchError(
            "the hub's ingest runtime (hub/ingest, `python -m hub hub run`) is not available; "
            "use --references-only to measure only InfluxDB and the broker"
        )
    with BenchStack(keep_state=opts.keep_state) as stack:
        write_fleet(stack, records + probes)
        console.print(
            f"stack up in {stack.root} (MQTT :{stack.mqtt_port}, InfluxDB "
            f"{stack.settings.influx.url}); {opts.devices} devices, backlog {opts.backlog}"
        )
        lines = ceiling_lines(records, opts.backlog_rounds, backlog_base)
        batches = gzip_batches(lines)
        window = stack.settings.ingest.catchup_sort_lines
        sorted_batches = sorted_ceiling_batches(lines, window)
        del lines
        last = opts.repeat - 1
        ceilings: list[float] = []
        sorted_ceilings: list[float] = []
        drains: list[float] = []
        drain_client = ""
        publish_mps = float("nan")
        figures = HubFigures()
        workers: HubWorkers | None = None
        for index in range(opts.repeat):
            # One round measures both references, the broker drain and the hub back to
            # back, so that a slow spell of this shared machine weighs on all of them; each
            # database is dropped once measured, so every phase finds InfluxDB alike.
            ceilings.append(influx_ceiling(stack, batches, opts.backlog, f"{CEILING_DB}_{index}"))
            sorted_ceilings.append(
                influx_ceiling(stack, sorted_batches, opts.backlog, f"{CEILING_DB}_sorted_{index}")
            )
            drained, publish_mps = broker_drain(stack, opts, backlog_base, f"bench-drain-{index}")
            drains.append(drained.mps)
            drain_client = drained.client
            hub_text = ""
            if not opts.references_only:
                workers = backlog_run(
                    stack, opts, records, backlog_base, index, figures, keep_running=index == last
                )
                hub_text = f"; hub {figures.mps_runs[-1]:,.0f} msg/s"
            console.print(
                f"round {index + 1}: InfluxDB ceiling {ceilings[-1]:,.0f} points/s, sorted "
                f"by series in windows of {window:,} lines {sorted_ceilings[-1]:,.0f}; "
                f"broker drain {drained.mps:,.0f} msg/s (fleet published "
                f"{publish_mps:,.0f}){hub_text}"
            )
        ceiling = statistics.median(ceilings)
        sorted_ceiling = statistics.median(sorted_ceilings)
        drain_mps = statistics.median(drains)
        hub_log = None
        if workers is not None:
            latency_phase(stack, opts, live_base, figures, workers)
            hub_log = workers.log_path
        compare: list[DrainResult] = []
        if opts.clients_compare:
            from bench.client_compare import compare_clients

            compare = compare_clients(stack, opts, backlog_base)
        rss_mb = float("nan") if opts.references_only else figures.peak_rss_mb
        p50 = percentile(figures.latencies_ms, 50)
        p99 = percentile(figures.latencies_ms, 99)
        cpu_per_million = (
            figures.cpu_s / figures.messages * 1e6 if figures.messages else float("nan")
        )
        result = {
            "influx_ceiling_pps": _round(ceiling, 0),
            "broker_drain_mps": _round(drain_mps, 0),
            "hub_mps": _round(figures.mps, 0),
            "p50_ms": _round(p50),
            "p99_ms": _round(p99),
            "cpu_s_per_million": _round(cpu_per_million),
            "rss_mb": _round(rss_mb),
            "ratio_influx": _round(figures.mps / ceiling, 3),
            "ratio_broker": _round(figures.mps / drain_mps, 3),
            "influx_sorted_pps": _round(sorted_ceiling, 0),
            "ratio_influx_sorted": _round(figures.mps / sorted_ceiling, 3),
            "intake_busy_drain": _round(statistics.median(figures.drain_busy or [math.nan]), 2),
        }
        table = Table(title="Kotahub hub ingest benchmark")
        table.add_column("figure")
        table.add_column("value", justify="right")
        table.add_column("how")
        table.add_row("devices", f"{opts.devices:,}", f"+{opts.probes} latency probes")
        table.add_row(
            "connections",
            f"{opts.processes * opts.clients_per_process}",
            f"{opts.processes} processes, QoS 1 on plain sockets",
        )
        table.add_row(
            "influx_ceiling_pps",
            f"{ceiling:,.0f}",
            f"prebuilt gzip 5,000-line batches; median of {_runs(ceilings)}",
        )
        table.add_row(
            "influx_sorted_pps",
            f"{sorted_ceiling:,.0f}",
            f"the same points grouped by series in windows of {window:,} lines, as the "
            f"hub's writer posts a backlog; median of {_runs(sorted_ceilings)}",
        )
        table.add_row(
            "broker_drain_mps", f"{drain_mps:,.0f}", f"{drain_client}; median of {_runs(drains)}"
        )
        for item in compare:
            table.add_row("  drain (compare)", f"{item.mps:,.0f}", item.client)
        table.add_row("fleet publish rate", f"{publish_mps:,.0f}", "backlog, msg/s acked")
        table.add_row(
            "hub_mps",
            f"{figures.mps:,.0f}",
            f"backlog of {opts.backlog:,} msg, {opts.hub_workers} worker(s), "
            f"{'first start' if opts.first_start else 'restart with status history'}; "
            f"median of {_runs(figures.mps_runs)}",
        )
        table.add_row(
            "live offered / written",
            f"{figures.live_offered_mps:,.0f}",
            f"{figures.live_written:,} of {figures.live_sent:,} points",
        )
        if figures.live_sent and figures.live_offered_mps < 0.9 * opts.rate:
            table.add_row(
                "[yellow]warning[/yellow]",
                "",
                f"the fleet offered only {figures.live_offered_mps:,.0f} of {opts.rate:,.0f} "
                "msg/s: latency is not at the target rate",
            )
        table.add_row(
            "p50 / p99 ms",
            f"{p50:,.0f} / {p99:,.0f}",
            f"{len(figures.latencies_ms)} probes, {figures.probes_lost} never seen",
        )
        table.add_row("cpu_s_per_million", f"{cpu_per_million:,.1f}", "hub tree user+system")
        table.add_row("rss_mb", f"{rss_mb:,.1f}", "peak, largest hub process tree")
        table.add_row("ratio_influx", f"{figures.mps / ceiling:.3f}", "target >= 0.5")
        table.add_row("ratio_broker", f"{figures.mps / drain_mps:.3f}", "")
        table.add_row(
            "ratio_influx_sorted",
            f"{figures.mps / sorted_ceiling:.3f}",
            "hub / the sorted reference (no target)",
        )
        console.print(table)
        if hub_log is not None and figures.probes_lost:
            console.print(f"[yellow]{figures.probes_lost} probes never became queryable[/yellow]")
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the last line printed is the JSON object."""
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    try:
        result = run(opts)
    except BenchError as err:
        print(f"bench-ingest: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["JSON_KEYS", "Options", "main", "parse_options", "run"]
