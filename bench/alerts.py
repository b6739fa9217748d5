"""Alert benchmark (``make bench-alerts``): rule evaluation, page latency, ingest with rules.

Phases:

1. **Evaluation throughput**: the rule engine with ``--rules`` rules (default 1,000) on
   the bench fleet's readings in-process, and the same readings through the alert
   consumer (engine plus one SQLite transaction per batch of 1,000), as the hub runs it.
   Reference in the same run: the same readings only parsed back from line protocol
   (what the seam costs without any rule).
2. **Page latency**: a hub (``python -m hub hub run``) with the rules plus one probe rule
   routed to a local webhook receiver, while the fleet publishes ``--rate`` msg/s of
   background telemetry; ``--trials`` times, a probe gauge publishes a reading over its
   threshold (then one under it) and the time to the webhook's POST is taken. The hub
   runs its engine as it does by default, in a process of its own (engine_process.py).
3. **Ingest with and without rules**: ``python -m bench.ingest`` (the ingest benchmark,
   phases as there) run three times: without, with ``KOTAHUB_ALERTS__RULES`` naming the
   rule file, without again (``--ingest-pairs N``: with, without N times after the first
   without); ``ingest_slowdown_pct`` compares each run's ``hub_mps`` with rules (the hub's
   sustained rate draining a backlog) with the mean of the two runs without around it
   (the engine in its own process, the default), the median over the pairs.
   Skipped with ``--skip-ingest``.

The machine is shared: figures are noisy; the lead reruns it alone. Last line: one JSON
object ``{"page_p50_ms", "page_p99_ms", "rules", "evals_per_s", "ingest_slowdown_pct"}``
(and the figures behind them).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.bench_stack import (
    KECAMATAN,
    PROJECT_ROOT,
    BenchStack,
    HubProcess,
    fleet_records,
    hub_config_text,
    percentile,
    write_fleet,
)
from bench.fleet_publisher import Fleet, telemetry_fields
from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.alert_consumer import AlertConsumer
from hub.alerts.alert_store import AlertStore
from hub.alerts.clock import SystemClock
from hub.alerts.rule_engine import RuleEngine
from hub.alerts.rule_model import Defaults, Rule, load_rule_files
from hub.ingest.wal_consumers import decode_records
from hub.ingest.write_ahead_log import WalPosition

PROBE_RULE_ID = "bench-probe-high"


def free_port() -> int:
    """A loopback port free now (the hub binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rule_set(count: int) -> dict[str, Any]:
    """``count`` rules over the bench fleet: 10 on every gauge, the rest per site.

    Each gauge is watched by the 10 fleet-wide rules (stages, rate, battery, absence...)
    and by the site rules of its site: about 12 evaluations per reading on 15,000 gauges.
    """
    rules: list[dict[str, Any]] = [
        {
            "id": "fleet-stage",
            "kind": "stages",
            "metric": "level_m",
            "hysteresis": 0.05,
            "for": "2m",
            "scope": {"families": ["flood"]},
            "stages": [
                {
                    "name": f"Siaga {4 - n}",
                    "severity": "warning",
                    "threshold": {"attribute": f"siaga{4 - n}_m", "default": 3.2 + n * 0.2},
                }
                for n in range(4)
            ],
        },
        {
            "id": "fleet-rising",
            "kind": "rate",
            "metric": "level_m",
            "rise": 0.5,
            "within": "15m",
            "scope": {"families": ["flood"]},
        },
        {
            "id": "fleet-battery",
            "kind": "threshold",
            "metric": "battery_v",
            "below": 3.3,
            "clear": 3.5,
            "for": "30m",
            "scope": {"families": ["flood"]},
        },
        {
            "id": "fleet-no-level",
            "kind": "absence",
            "metric": "level_m",
            "for": "30m",
            "scope": {"families": ["flood"]},
        },
        {
            "id": "fleet-offline",
            "kind": "absence",
            "offline": True,
            "for": "10m",
            "scope": {"families": ["flood"]},
        },
    ]
    for index, kecamatan in enumerate(KECAMATAN[:5]):
        rules.append(
            {
                "id": f"kecamatan-rain-{index}",
                "kind": "threshold",
                "metric": "rain_mm",
                "above": 50,
                "scope": {"families": ["flood"], "kecamatan": [kecamatan]},
            }
        )
    site = 0
    while len(rules) < count:
        number = len(rules)
        scope = {"families": ["flood"], "tags": {"site": f"gauge-{site % 500:03d}"}}
        if number % 2:
            rules.append(
                {
                    "id": f"site-high-{number}",
                    "kind": "threshold",
                    "metric": "level_m",
                    "above": 3.1 + (number % 7) * 0.1,
                    "clear": 2.9,
                    "for": "1m",
                    "scope": scope,
                }
            )
        else:
            rules.append(
                {
                    "id": f"site-rate-{number}",
                    "kind": "rate",
                    "metric": "level_m",
                    "rise": 0.4,
                    "within": "10m",
                    "scope": scope,
                }
            )
        site += 1
    return {"version": 1, "rules": rules[:count]}


def write_rules(path: Path, count: int) -> Path:
    """Write ``rule_set(count)`` as YAML; return the path."""
    path.write_text(yaml.safe_dump(rule_set(count), sort_keys=False), encoding="utf-8")
    return path


def _fleet_lines(
    records: list[DeviceRecord], rounds: int, ts_ms: int, step_ms: int = 60_000
) -> list[bytes]:
    """WAL records as the hub writes them: 1,000 lines each, one line per reading."""
    lines = []
    for seq in range(rounds):
        for index, record in enumerate(records):
            tags = ",".join(
                f"{k}={v.replace(' ', chr(92) + ' ')}"
                for k, v in sorted(record.influx_tags().items())
            )
            lines.append(
                f"flood,{tags} {telemetry_fields(index, seq)} {ts_ms + seq * step_ms}".encode()
            )
    return [b"\n".join(lines[i : i + 1000]) for i in range(0, len(lines), 1000)]


def evaluation_phase(rules_path: Path, devices: int, rounds: int) -> dict[str, float]:
    """Readings per second: parsed only (reference), through the engine, through the consumer."""
    records = fleet_records(devices)
    chunks = _fleet_lines(records, rounds, int(time.time() * 1000) - rounds * 60_000)
    readings = devices * rounds
    started = time.perf_counter()
    parsed = [decode_records([chunk], None, print) for chunk in chunks]
    parse_s = time.perf_counter() - started
    rules = load_rule_files([rules_path])
    engine = RuleEngine(rules, SnapshotDirectory(records), SystemClock())
    started = time.perf_counter()
    events = 0
    for batch in parsed:
        for item in batch:
            events += len(engine.on_reading(item))  # type: ignore[arg-type]
    engine_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        store = AlertStore(Path(folder) / "alerts.sqlite3")
        consumer = AlertConsumer(
            RuleEngine(rules, SnapshotDirectory(records), SystemClock()), store, SystemClock()
        )
        started = time.perf_counter()
        for number, batch in enumerate(parsed):
            consumer.consume(batch, WalPosition(1, number))
        consumer_s = time.perf_counter() - started
        store.close()
    steady = steady_phase(rules, max(devices // 10, 50), rounds=400)
    return {
        "rules": float(len(rules)),
        "readings": float(readings),
        "parse_readings_per_s": readings / parse_s,
        "engine_readings_per_s": readings / engine_s,
        "evals_per_s": engine.evaluations / engine_s,
        "evals_per_reading": engine.evaluations / readings,
        "consumer_readings_per_s": readings / consumer_s,
        "consumer_steady_readings_per_s": steady,
        "events": float(events),
    }


def steady_phase(rules: list[tuple[Defaults, Rule]], devices: int, rounds: int) -> float:
    """Readings/s through the consumer at the live stream's spacing, its windows full.

    A gauge every 1.5 s (10,000 msg/s over 15,000 gauges), 400 readings each: the rate
    rules' 10- and 15-minute windows fill, as in the page phase; the first quarter (the
    per-device compilation, the windows filling) is not counted.
    """
    records = fleet_records(devices)
    step_ms = 1500
    chunks = _fleet_lines(records, rounds, int(time.time() * 1000) - rounds * step_ms, step_ms)
    parsed = [decode_records([chunk], None, print) for chunk in chunks]
    warm = len(parsed) // 4
    with tempfile.TemporaryDirectory() as folder:
        store = AlertStore(Path(folder) / "alerts.sqlite3")
        clock = SystemClock()
        consumer = AlertConsumer(RuleEngine(rules, SnapshotDirectory(records), clock), store, clock)
        for number, batch in enumerate(parsed[:warm]):
            consumer.consume(batch, WalPosition(1, number))
        started = time.perf_counter()
        counted = 0
        for number, batch in enumerate(parsed[warm:], start=warm):
            consumer.consume(batch, WalPosition(1, number))
            counted += len(batch)
        elapsed = time.perf_counter() - started
        store.close()
    return counted / elapsed


# -- page latency ------------------------------------------------------------------------
def page_phase(rules_path: Path, *, devices: int, rate: float, trials: int) -> dict[str, Any]:
    """Publish -> webhook POST for a rule without for-duration, with background telemetry."""
    import math

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.alerts.receivers import webhook_receiver

    with BenchStack() as stack, webhook_receiver() as hook:
        base = stack.root
        records = fleet_records(devices)
        probe = DeviceRecord(
            device_id="bench-probe-gauge",
            family="flood",
            device_type=records[0].device_type,
            metrics=records[0].metrics,
            tags={"site": "probe", "kecamatan": "Genuk"},
        )
        devices_file = write_fleet(stack, [*records, probe])
        rules = yaml.safe_load(rules_path.read_text())
        rules["rules"].append(
            {
                "id": PROBE_RULE_ID,
                "kind": "threshold",
                "metric": "level_m",
                "above": 50.0,
                "clear": 40.0,
                "scope": {"devices": [probe.device_id]},
            }
        )
        rules_file = base / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(rules, sort_keys=False))
        routing = base / "routing.yaml"
        routing.write_text(
            yaml.safe_dump(
                {
                    "teams": [
                        {"id": "probe", "match": {"kecamatan": ["Genuk"]}, "notify": [hook.url]}
                    ]
                }
            )
        )
        config = base / "hub.toml"
        metrics_port = free_port()
        config.write_text(
            hub_config_text(
                stack,
                devices_file=devices_file,
                client_id="bench-alerts-hub",
                wal_dir=base / "wal",
                database="kotahub",
                metrics_port=metrics_port,
            )
            + f'\n[alerts]\nrules = ["{rules_file}"]\nrouting = "{routing}"\nretry_min_s = 0.2\n'
        )
        hub = HubProcess(config, base / "hub.log")
        hub.start()
        # Enough rounds to keep the background going while the trials run (~0.5 s each).
        rounds = max(2, math.ceil(rate * (trials * 0.6 + 10) / devices))
        fleet = Fleet(
            host=stack.mqtt_host,
            port=stack.mqtt_port,
            username=stack.username,
            password=stack.password,
            devices=devices,
            rounds=rounds,
            ts_base_ms=int(time.time() * 1000),
            processes=1 if devices < 1000 else 3,
            clients_per_process=4 if devices < 1000 else 12,
            rate_per_s=rate,
            client_prefix="bench-alerts-bg",
        )
        fleet.prepare()
        publisher = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="bench-alerts-probe"
        )
        publisher.username_pw_set(stack.username, stack.password)
        publisher.connect(stack.mqtt_host, stack.mqtt_port)
        publisher.loop_start()
        latencies: list[float] = []
        topic = f"kota/v1/dev/{probe.device_id}/telemetry"
        fleet.go()
        time.sleep(2.0)  # the background reaches its rate first
        lags = LagSampler(metrics_port)
        lags.start()
        failed = ""
        try:
            for trial in range(trials):
                seen = len(hook.posts)
                sent = time.perf_counter()
                publisher.publish(topic, json.dumps({"metrics": {"level_m": 60.0}}), qos=1)
                try:
                    hook.wait_for(seen + 1, timeout_s=60)
                    latencies.append((time.perf_counter() - sent) * 1000)
                    publisher.publish(topic, json.dumps({"metrics": {"level_m": 1.0}}), qos=1)
                    hook.wait_for(seen + 2, timeout_s=60)  # the clear notice
                except AssertionError as err:
                    # A page 60 s late: the run has failed; its figures still say why.
                    failed = f"trial {trial + 1}: {err}"
                    print(f"  page trials FAILED at {failed}", file=sys.stderr, flush=True)
                    break
                if trial % 20 == 19:
                    print(f"  page trials: {trial + 1}/{trials}", file=sys.stderr, flush=True)
            run = fleet.wait(timeout_s=rounds * devices / rate * 3 + 120)
        finally:
            lags.stop()
            publisher.loop_stop()
            publisher.disconnect()
            hub.stop()
    if not latencies:
        raise SystemExit(f"page phase failed: {failed}")
    print(
        f"  page latency ms: p90 {percentile(latencies, 90):.0f}, max {max(latencies):.0f} "
        f"(trial {latencies.index(max(latencies)) + 1}; over 1 s: trials "
        f"{[n + 1 for n, v in enumerate(latencies) if v > 1000]}); the engine's WAL lag "
        f"(hub /metrics, every 0.5 s): median {statistics.median(lags.samples or [0]):,.0f} B, "
        f"max {max(lags.samples or [0]):,.0f} B; the intake's busy share: median "
        f"{statistics.median(lags.busy or [0]):.2f}, p90 {percentile(lags.busy or [0], 90):.2f}, "
        f"max {max(lags.busy or [0]):.2f}",
        flush=True,
    )
    return {
        "page_p50_ms": statistics.median(latencies),
        "page_p99_ms": percentile(latencies, 99),
        "page_trials": float(len(latencies)),
        "page_over_1s": float(sum(v > 1000 for v in latencies)),
        "page_failed": failed,
        "engine_lag_max_bytes": float(max(lags.samples or [0])),
        "intake_busy_median": statistics.median(lags.busy or [0]),
        "background_offered_mps": run.offered_mps,
    }


class LagSampler(threading.Thread):
    """Samples the alert consumer's WAL lag and the intake's busy share from /metrics.

    Twice a second; the busy share is the rise of ``intake_busy_seconds_total`` between two
    samples over the time between them (the hub updates it once a second).
    """

    def __init__(self, port: int) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.samples: list[float] = []
        self.busy: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        """Sample until stopped (a failed scrape is skipped)."""
        pattern = re.compile(
            r'^kotahub_ingest_consumer_lag_bytes\{[^}]*consumer="alerts"\} (\S+)$', re.MULTILINE
        )
        busy = re.compile(r"^kotahub_ingest_intake_busy_seconds_total\{[^}]*\} (\S+)$", re.M)
        last: tuple[float, float] | None = None
        while not self._done.wait(0.5):
            try:
                text = httpx.get(self.url, timeout=2).text
            except httpx.HTTPError:
                continue
            found = pattern.search(text)
            if found:
                self.samples.append(float(found.group(1)))
            seconds = busy.search(text)
            if seconds:
                now, value = time.monotonic(), float(seconds.group(1))
                if last is not None and value > last[1]:  # the hub updated it since
                    self.busy.append((value - last[1]) / (now - last[0]))
                if last is None or value > last[1]:
                    last = (now, value)

    def stop(self) -> None:
        """Stop sampling."""
        self._done.set()
        self.join(5)


# -- ingest with and without rules ---------------------------------------------------------
def ingest_run(rules_path: Path | None, extra: list[str]) -> dict[str, Any]:
    """``python -m bench.ingest --json-only`` with the alert engine on (rules) or off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOTAHUB_")}
    if rules_path is not None:
        env["KOTAHUB_ALERTS__RULES"] = json.dumps([str(rules_path)])
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "--json-only", *extra],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if out.returncode != 0:
        which = "with" if rules_path else "without"
        raise SystemExit(f"bench.ingest failed ({which} rules):\n{out.stderr[-3000:]}")
    result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    # As it ends: a later run that fails must not take this one's figures with it.
    print(
        f"bench.ingest {'with' if rules_path else 'without'} rules: hub_mps "
        f"{result['hub_mps']:,.0f}, p99 {result.get('p99_ms')} ms, the intake's busy share "
        f"while draining {result.get('intake_busy_drain')}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the phases; print the figures and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rules", type=int, default=1000, help="rules loaded (1000)")
    parser.add_argument("--devices", type=int, default=15_000, help="gauges (15000)")
    parser.add_argument("--rounds", type=int, default=4, help="readings per gauge in phase 1 (4)")
    parser.add_argument("--rate", type=float, default=10_000.0, help="background msg/s in phase 2")
    parser.add_argument("--trials", type=int, default=100, help="page latency trials (100)")
    parser.add_argument("--ingest-args", default="", help="extra arguments for bench.ingest")
    parser.add_argument("--skip-ingest", action="store_true", help="skip phase 3")
    parser.add_argument(
        "--ingest-pairs",
        type=int,
        default=1,
        help="phase 3's runs with rules, each between two without (1); the median counts",
    )
    parser.add_argument("--skip-pages", action="store_true", help="skip phase 2")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    args = parser.parse_args(argv)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)  # one INFO line per request
    if args.quick:
        args.rules, args.devices, args.rounds, args.rate, args.trials = 100, 300, 2, 300.0, 3
        args.skip_ingest = True
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kotahub-rules-") as folder:
        rules_path = write_rules(Path(folder) / "bench-rules.yaml", args.rules)
        evaluation = evaluation_phase(rules_path, args.devices, args.rounds)
        print(
            f"evaluation, {evaluation['rules']:.0f} rules, {evaluation['readings']:.0f} readings: "
            f"{evaluation['evals_per_s']:,.0f} evals/s ({evaluation['evals_per_reading']:.1f} per "
            f"reading); readings/s parsed only {evaluation['parse_readings_per_s']:,.0f} "
            "(reference), "
            f"engine {evaluation['engine_readings_per_s']:,.0f}, consumer with SQLite "
            f"{evaluation['consumer_readings_per_s']:,.0f}; at the live spacing with full "
            f"windows (1.5 s a gauge) {evaluation['consumer_steady_readings_per_s']:,.0f}",
            flush=True,
        )
        result.update(evaluation)
        if not args.skip_pages:
            pages = page_phase(rules_path, devices=args.devices, rate=args.rate, trials=args.trials)
            print(
                f"page latency over {pages['page_trials']:.0f} trials at {args.rate:,.0f} msg/s "
                f"background: p50 {pages['page_p50_ms']:.0f} ms, p99 {pages['page_p99_ms']:.0f} ms",
                flush=True,
            )
            result.update(pages)
        if not args.skip_ingest:
            extra = args.ingest_args.split()
            # Without, with, without (and with, without again for each more pair): the
            # machine's load drifts; each run with rules is compared with the mean of the
            # two runs around it, and the figure is the median of those comparisons.
            runs = [ingest_run(None, extra)]
            for _pair in range(args.ingest_pairs):
                runs += [ingest_run(rules_path, extra), ingest_run(None, extra)]
            withouts = runs[0::2]
            withs = runs[1::2]
            print(
                "ingest hub_mps without rules, in order: "
                + ", ".join(f"{r['hub_mps']:,.0f}" for r in withouts),
                flush=True,
            )
            slowdowns = []
            for n, with_rules in enumerate(withs):
                around = (withouts[n]["hub_mps"] + withouts[n + 1]["hub_mps"]) / 2
                slowdowns.append((1 - with_rules["hub_mps"] / around) * 100)
                print(
                    f"ingest hub_mps without rules {around:,.0f} (reference, the runs around), "
                    f"with {args.rules} rules {with_rules['hub_mps']:,.0f}: slowdown "
                    f"{slowdowns[-1]:.1f} %; p99 publish->queryable "
                    f"{max(withouts[n]['p99_ms'] or 0, withouts[n + 1]['p99_ms'] or 0)} -> "
                    f"{with_rules['p99_ms']} ms",
                    flush=True,
                )
            slowdown = statistics.median(slowdowns)
            if len(slowdowns) > 1:
                print(
                    f"ingest slowdown over {len(slowdowns)} pairs: median {slowdown:.1f} % "
                    f"(each: {', '.join(f'{v:.1f}' for v in slowdowns)})",
                    flush=True,
                )
            result.update(
                hub_mps_without=statistics.mean(r["hub_mps"] for r in withouts),
                hub_mps_with=statistics.mean(r["hub_mps"] for r in withs),
                ingest_slowdowns_pct=[round(v, 1) for v in slowdowns],
                ingest_slowdown_pct=round(slowdown, 1),
            )
    summary = {
        "page_p50_ms": result.get("page_p50_ms"),
        "page_p99_ms": result.get("page_p99_ms"),
        "rules": args.rules,
        "evals_per_s": round(result["evals_per_s"]),
        "ingest_slowdown_pct": result.get("ingest_slowdown_pct"),
        **{
            k: round(v, 1) if isinstance(v, float) else v
            for k, v in result.items()
            if k
            not in ("page_p50_ms", "page_p99_ms", "evals_per_s", "ingest_slowdown_pct", "rules")
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
