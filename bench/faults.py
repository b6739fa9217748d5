"""Fault benchmark (``make bench-faults``): does the hub lose or double anything when parts fail?

A fleet streams telemetry at a fixed rate (default 2,000 msg/s over 1,000 devices); every
message carries its round number as ``seq`` (and as the field ``bench_seq``) and a
timestamp derived from it, so each (device, seq) is exactly one InfluxDB point. Faults:

a. ``hub_kill9``: kill -9 the hub, restart it (its WAL replays, its session resumes);
b. ``influx_outage``: stop InfluxDB (SIGTERM) for ``--outage-s`` and start it again;
c. ``broker_restart``: restart Mosquitto with SIGTERM (it saves its persistence on exit);
d. ``hub_kill9_during_influx_outage``: InfluxDB down, kill -9 the hub, restart the hub,
   then bring InfluxDB back.

After each fault, per device, what the publisher had acknowledged (PUBACK received) is
compared with what InfluxDB holds. ``recovery_s`` runs from the end of the fault until
InfluxDB holds everything acknowledged up to that moment. Missing and duplicates must be 0.
The last line is ``{"scenarios": [{"name", "published", "missing", "duplicates",
"recovery_s"}, ...]}``; the exit status is 2 when anything was lost or doubled.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.table import Table

from bench.bench_stack import (
    FAMILY,
    TELEMETRY_TOPIC,
    BenchError,
    BenchStack,
    HubProcess,
    count_points,
    device_id,
    fleet_records,
    hub_config_text,
    write_fleet,
)
from bench.fleet_publisher import FleetConnections, telemetry_payload

HUB_DB = "kotahub"
TS_STEP_MS = 100  # round r of every device is stamped ts0 + r * TS_STEP_MS


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """Sizes and durations of one run."""

    devices: int
    rate: float
    clients: int
    outage_s: float
    warmup_s: float
    hub_down_s: float
    recovery_timeout_s: float
    settle_s: float
    aftermath_s: float
    shared_group: str
    scenarios: tuple[str, ...]
    json_only: bool
    keep_state: bool


SCENARIOS = ("hub_kill9", "influx_outage", "broker_restart", "hub_kill9_during_influx_outage")


def parse_options(argv: list[str]) -> Options:
    """Command-line options; ``--quick`` shrinks everything for the smoke test."""
    parser = argparse.ArgumentParser(description="Kotahub hub fault benchmark")
    parser.add_argument("--devices", type=int, help="simulated devices (1000)")
    parser.add_argument("--rate", type=float, help="msg/s streamed throughout (2000)")
    parser.add_argument("--clients", type=int, help="publisher MQTT connections (8)")
    parser.add_argument("--outage-s", type=float, help="InfluxDB outage in scenario b (60)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, short faults")
    parser.add_argument(
        "--subscription",
        choices=("shared", "plain"),
        default="plain",
        help="hub subscribes plainly (default: one worker, as ingest.shared_group unset) "
        "or via $share/kotahub/... (a scale-out worker)",
    )
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)"
    )
    parser.add_argument(
        "--recovery-timeout-s", type=float, help="give up waiting for recovery after (180)"
    )
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--keep-state", action="store_true", help="keep the temp state folder")
    args = parser.parse_args(argv)
    quick = args.quick
    return Options(
        devices=args.devices or (100 if quick else 1000),
        rate=args.rate or (200.0 if quick else 2000.0),
        clients=args.clients or (2 if quick else 8),
        outage_s=args.outage_s or (4.0 if quick else 60.0),
        warmup_s=2.0 if quick else 10.0,
        hub_down_s=1.0 if quick else 5.0,
        recovery_timeout_s=args.recovery_timeout_s or (30.0 if quick else 180.0),
        settle_s=min(args.recovery_timeout_s or 30.0, 10.0 if quick else 30.0),
        aftermath_s=2.0 if quick else 5.0,
        shared_group="" if args.subscription == "plain" else "kotahub",
        scenarios=tuple(args.scenario or SCENARIOS),
        json_only=args.json_only,
        keep_state=args.keep_state,
    )


class SeqStream:
    """Publishes round after round over all devices at a fixed rate, recording every PUBACK.

    Round ``r`` of device ``d`` is token ``r * devices + d``; ``acked[r][d]`` is 1 once
    the broker acknowledged it. ``next_round`` is the round being published now: every
    round below it was handed to the MQTT client before that moment.
    """

    def __init__(self, stack: BenchStack, opts: Options, ts0_ms: int) -> None:
        self.devices = opts.devices
        self.rate = opts.rate
        self.ts0_ms = ts0_ms
        self.topics = [TELEMETRY_TOPIC.format(device_id=device_id(d)) for d in range(self.devices)]
        self.acked: list[bytearray] = []
        self.next_round = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.conns = FleetConnections(
            host=stack.mqtt_host,
            port=stack.mqtt_port,
            username=stack.username,
            password=stack.password,
            client_ids=[f"bench-faults-pub-{c}" for c in range(opts.clients)],
            on_ack=self._acked,
        )
        self._thread = threading.Thread(target=self._run, name="seq-stream", daemon=True)

    def ts(self, round_no: int) -> int:
        """The timestamp (ms) of round ``round_no``."""
        return self.ts0_ms + round_no * TS_STEP_MS

    def _acked(self, token: int) -> None:
        round_no, dev = divmod(token, self.devices)
        self.acked[round_no][dev] = 1

    def start(self) -> None:
        """Connect and start streaming in a background thread."""
        self.conns.connect()
        self._thread.start()

    def _run(self) -> None:
        try:
            self._stream()
        except BaseException as err:  # reported by the main thread
            self.error = err

    def _stream(self) -> None:
        started = time.monotonic()
        sent = 0
        clients = len(self.conns.clients)
        round_no = 0
        while not self._stop.is_set():
            self.acked.append(bytearray(self.devices))
            ts = self.ts(round_no)
            for dev in range(self.devices):
                payload = telemetry_payload(dev, round_no, ts)
                self.conns.publish(
                    dev % clients, self.topics[dev], payload, round_no * self.devices + dev
                )
                sent += 1
                if sent % 20 == 0:
                    self.conns.pump()
                    ahead = started + sent / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            round_no += 1
            self.next_round = round_no
        self.conns.wait_acked(30.0)

    def stop(self) -> None:
        """Finish the round in progress, wait for its PUBACKs and disconnect."""
        self._stop.set()
        self._thread.join(180)
        self.conns.close()

    def acked_in(self, first: int, end: int) -> int:
        """Acknowledged messages in rounds [first, end)."""
        return sum(sum(self.acked[r]) for r in range(first, end))

    def check(self) -> None:
        """Raise the streaming thread's error, if it had one."""
        if self.error is not None:
            raise BenchError(f"publisher failed: {self.error!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Comparison:
    """Acknowledged vs stored for a range of rounds."""

    published: int
    stored: int
    missing: int
    duplicates: int


def compare(stack: BenchStack, stream: SeqStream, first: int, end: int) -> Comparison:
    """Per device: acknowledged (device, seq) pairs against the points InfluxDB holds.

    A duplicate is a point that should not exist: a second point for one (device, seq)
    at another time, a seq that disagrees with its timestamp, or one never published.
    """
    index = {device_id(d): d for d in range(stream.devices)}
    present = [bytearray(stream.devices) for _ in range(first, end)]
    duplicates = 0
    stored = 0
    series = stack.influx.query(
        f'SELECT "bench_seq" FROM "{FAMILY}" WHERE time >= {stream.ts(first)}ms '
        f'AND time < {stream.ts(end)}ms GROUP BY "device_id"',
        database=HUB_DB,
    )
    for item in series:
        dev = index.get(item.tags.get("device_id", ""))
        for ts, seq in item.values:
            stored += 1
            round_no, offset = divmod(int(ts) - stream.ts0_ms, TS_STEP_MS)
            if dev is None or offset or seq is None or int(seq) != round_no:
                duplicates += 1
                continue
            slot = present[round_no - first]
            if slot[dev]:
                duplicates += 1
            slot[dev] = 1
    published = 0
    missing = 0
    for round_no in range(first, end):
        acked = stream.acked[round_no]
        have = present[round_no - first]
        for dev in range(stream.devices):
            if acked[dev]:
                published += 1
                if not have[dev]:
                    missing += 1
    return Comparison(published=published, stored=stored, missing=missing, duplicates=duplicates)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioResult:
    """One line of the JSON report."""

    name: str
    published: int
    missing: int
    duplicates: int
    recovery_s: float | None


class FaultBench:
    """The stack, the hub and the stream of one run, and the faults to inflict on them."""

    def __init__(self, stack: BenchStack, hub: HubProcess, stream: SeqStream, opts: Options):
        self.stack, self.hub, self.stream, self.opts = stack, hub, stream, opts

    # -- faults: each returns when the fault is over ---------------------------------
    def hub_kill9(self) -> None:
        """kill -9 the hub, leave it down a moment, start it again."""
        self.hub.kill9()
        time.sleep(self.opts.hub_down_s)
        self.hub.start()

    def influx_outage(self) -> None:
        """Stop InfluxDB for the outage, then start it again."""
        self.stack.stop_part("influxdb")
        time.sleep(self.opts.outage_s)
        self.stack.start_missing()

    def broker_restart(self) -> None:
        """Restart Mosquitto with SIGTERM (clean exit: it saves its persistence)."""
        self.stack.stop_part("mosquitto")
        self.stack.start_missing()

    def hub_kill9_during_influx_outage(self) -> None:
        """InfluxDB down; kill -9 the hub and restart it; then InfluxDB back."""
        self.stack.stop_part("influxdb")
        time.sleep(self.opts.outage_s / 2)
        self.hub.kill9()
        time.sleep(self.opts.hub_down_s)
        self.hub.start()
        time.sleep(self.opts.outage_s / 2)
        self.stack.start_missing()

    # -- measuring -------------------------------------------------------------------
    def run_scenario(
        self, name: str, first: int, log: Callable[[str], None]
    ) -> tuple[ScenarioResult, int]:
        """Warm up, inflict the fault, wait for recovery, compare; return the next range start."""
        time.sleep(self.opts.warmup_s)
        self.stream.check()
        log(f"{name}: fault starts (round {self.stream.next_round})")
        getattr(self, name)()
        fault_end = time.monotonic()
        end = self.stream.next_round
        log(f"{name}: fault over (round {end}); waiting for rounds {first}..{end - 1}")
        recovery_s = self._wait_recovered(first, end, fault_end)
        # The scenario owns its aftermath too: rounds published until it recovered (or
        # gave up) are compared here, once they had a moment to arrive, not in the next.
        # A loss can start just after the fault ends (a broker back up before the hub's
        # subscription is): give the aftermath a few seconds before closing the range.
        time.sleep(self.opts.aftermath_s)
        after = self.stream.next_round
        self._wait_recovered(first, after, time.monotonic(), timeout_s=self.opts.settle_s)
        result = compare(self.stack, self.stream, first, after)
        log(
            f"{name}: rounds {first}..{after - 1}: published {result.published}, stored "
            f"{result.stored}, missing {result.missing}, duplicates {result.duplicates}, "
            f"recovery {'timeout' if recovery_s is None else f'{recovery_s:.1f} s'}"
        )
        return (
            ScenarioResult(
                name=name,
                published=result.published,
                missing=result.missing,
                duplicates=result.duplicates,
                recovery_s=None if recovery_s is None else round(recovery_s, 2),
            ),
            after,
        )

    def _wait_recovered(
        self, first: int, end: int, fault_end: float, timeout_s: float | None = None
    ) -> float | None:
        """Seconds from ``fault_end`` until rounds [first, end) are all stored; None on timeout."""
        deadline = fault_end + (self.opts.recovery_timeout_s if timeout_s is None else timeout_s)
        while time.monotonic() < deadline:
            self.stream.check()
            result = None
            try:
                stored = count_points(
                    self.stack.influx,
                    HUB_DB,
                    "bench_seq",
                    self.stream.ts(first),
                    self.stream.ts(end),
                )
                # The exact per-device comparison is costly: only once the count is there.
                if stored >= self.stream.acked_in(first, end):
                    result = compare(self.stack, self.stream, first, end)
            except Exception:  # InfluxDB may still be starting: ask again shortly
                result = None
            # Nothing missing among what was acknowledged; also wait for messages still
            # unacknowledged at the fault's end (the publisher sends them again).
            if (
                result is not None
                and result.missing == 0
                and all(all(self.stream.acked[r]) for r in range(first, end))
            ):
                return time.monotonic() - fault_end
            time.sleep(0.5)
        return None


def run(opts: Options) -> list[ScenarioResult]:
    """Start everything, run the scenarios, return their results."""
    console = Console(stderr=opts.json_only, quiet=opts.json_only)

    def log(message: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}", highlight=False)

    if not HubProcess.available():
        raise BenchError("the hub's ingest runtime (`python -m hub hub run`) is not available")
    results: list[ScenarioResult] = []
    with BenchStack(keep_state=opts.keep_state) as stack:
        write_fleet(stack, fleet_records(opts.devices))
        config = stack.root / "hub.toml"
        config.write_text(
            hub_config_text(
                stack,
                devices_file=stack.root / "devices.json",
                client_id="kotahub-faults-hub",
                wal_dir=stack.root / "hub-wal",
                database=HUB_DB,
                shared_group=opts.shared_group,
            )
        )
        hub = HubProcess(config, stack.root / "hub.log")
        hub.start()
        ts0 = (int(time.time()) - 7200) * 1000
        stream = SeqStream(stack, opts, ts0)
        stream.start()
        log(f"streaming {opts.rate:.0f} msg/s over {opts.devices} devices; state {stack.root}")
        bench = FaultBench(stack, hub, stream, opts)
        first = 0
        try:
            for name in opts.scenarios:
                result, first = bench.run_scenario(name, first, log)
                results.append(result)
            stream.stop()
            final_end = stream.next_round
            time.sleep(2.0)
            bench._wait_recovered(0, final_end, time.monotonic(), timeout_s=opts.settle_s)
            final = compare(stack, stream, 0, final_end)
            log(
                f"whole run: published {final.published}, stored {final.stored}, missing "
                f"{final.missing}, duplicates {final.duplicates}"
            )
        finally:
            stream.stop()
            if hub.running:
                hub.stop()
            if any(r.missing or r.duplicates for r in results):
                log(f"hub log tail:\n{hub.log_tail()}")
        table = Table(title="Kotahub hub fault benchmark")
        for column in ("scenario", "published", "missing", "duplicates", "recovery_s"):
            table.add_column(column, justify="left" if column == "scenario" else "right")
        for item in results:
            table.add_row(
                item.name,
                f"{item.published:,}",
                str(item.missing),
                str(item.duplicates),
                "timeout" if item.recovery_s is None else f"{item.recovery_s:.1f}",
            )
        table.add_row(
            "whole run", f"{final.published:,}", str(final.missing), str(final.duplicates), ""
        )
        console.print(table)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the fault benchmark; the last line printed is the JSON object."""
    opts = parse_options(sys.argv[1:] if argv is None else argv)
    try:
        results = run(opts)
    except BenchError as err:
        print(f"bench-faults: {err}", file=sys.stderr)
        return 1
    print(json.dumps({"scenarios": [asdict(r) for r in results]}))
    lost = any(r.missing or r.duplicates or r.recovery_s is None for r in results)
    return 2 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
