"""The hub's own health: counters, the ``hub`` measurement and ``/metrics`` (Prometheus text).

Also ``fleet_online``, the devices online per family, kecamatan and team that the boards read
instead of every device's last ``device_status`` point.

Counters are plain integers bumped by the thread that owns the event (the GIL keeps a
single ``+=`` from one thread exact); readers take a consistent-enough snapshot.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hub.ingest.device_status import FleetCount
from hub.ingest.line_protocol import FieldValue, format_line, tag_prefix

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Per-device gap counters are kept for this many devices at most; the rest is summed.
MAX_GAP_DEVICES = 100_000
FLEET_MEASUREMENT = "fleet_online"


@dataclass(slots=True)
class IngestStats:
    """Everything the hub counts about itself."""

    messages_in: int = 0
    messages_accepted: int = 0
    messages_acked: int = 0
    lines_appended: int = 0
    lines_written: int = 0
    batches: int = 0
    write_retries: int = 0
    refused_lines: int = 0
    deadletters: Counter[str] = field(default_factory=Counter)
    seq_gaps_total: int = 0
    seq_gaps: dict[str, int] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_S))
    latency_count: int = 0
    latency_sum_s: float = 0.0
    last_batch_lines: int = 0
    mqtt_connects: int = 0
    mqtt_connect_failures: int = 0
    mqtt_connection_losses: int = 0
    wal_bytes: int = 0
    wal_depth_bytes: int = 0
    wal_segments: int = 0
    wal_full_waits: int = 0
    status_changes: int = 0
    backpressure_s: float = 0.0
    wal_write_errors: int = 0
    wal_corrupt_records: int = 0
    wal_corrupt_bytes: int = 0
    wal_corrupt_tail_bytes: int = 0
    wal_writable: bool = True
    # Seconds the intake's handler spent on messages (rate() of it: the busy share that
    # holds the alert engine back, hub/ingest/wal_consumers.py INTAKE_BUSY_SHARE).
    intake_busy_s: float = 0.0
    housekeeping_errors: Counter[str] = field(default_factory=Counter)
    # thread name -> restarts after an unexpected exception (set by the service)
    thread_restarts: dict[str, int] = field(default_factory=dict)
    # WAL consumer -> (bytes behind the durable end, skipped segments, parse errors)
    consumers: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def record_seq(self, device_id: str, seq: int) -> None:
        """Count the numbers ``seq`` skipped since the device's last one.

        A lower seq is a redelivery or reordering (ignored), unless it is far lower or
        zero: then the device restarted its counter.
        """
        last = self.last_seq.get(device_id)
        if last is None:
            if len(self.last_seq) < MAX_GAP_DEVICES:
                self.last_seq[device_id] = seq
            return
        if seq > last:
            if seq > last + 1:
                gap = seq - last - 1
                self.seq_gaps_total += gap
                if device_id in self.seq_gaps or len(self.seq_gaps) < MAX_GAP_DEVICES:
                    self.seq_gaps[device_id] = self.seq_gaps.get(device_id, 0) + gap
            self.last_seq[device_id] = seq
        elif seq == 0 or seq < last // 2:
            self.last_seq[device_id] = seq

    def record_batch(self, lines: int, seconds: float) -> None:
        """A batch went to InfluxDB in ``seconds``."""
        self.batches += 1
        self.last_batch_lines = lines
        self.lines_written += lines
        self.latency_count += 1
        self.latency_sum_s += seconds
        for index, bound in enumerate(LATENCY_BUCKETS_S):
            if seconds <= bound:
                self.latency_buckets[index] += 1
                break

    def prometheus(self, hub: str) -> str:
        """All counters in the Prometheus text exposition format."""
        label = f'hub="{_label(hub)}"'
        out: list[str] = []

        def metric(name: str, kind: str, help_text: str, value: float) -> None:
            out.append(f"# HELP kotahub_ingest_{name} {help_text}")
            out.append(f"# TYPE kotahub_ingest_{name} {kind}")
            out.append(f"kotahub_ingest_{name}{{{label}}} {value}")

        metric("messages_total", "counter", "MQTT messages received.", self.messages_in)
        metric(
            "accepted_total", "counter", "Messages that passed validation.", self.messages_accepted
        )
        metric(
            "acked_total", "counter", "Messages acknowledged to the broker.", self.messages_acked
        )
        metric("lines_appended_total", "counter", "Lines put in the WAL.", self.lines_appended)
        metric("lines_written_total", "counter", "Lines InfluxDB accepted.", self.lines_written)
        metric("batches_total", "counter", "Batches written to InfluxDB.", self.batches)
        metric("last_batch_lines", "gauge", "Lines in the last batch.", self.last_batch_lines)
        metric("write_retries_total", "counter", "Retried InfluxDB writes.", self.write_retries)
        metric("refused_lines_total", "counter", "Lines InfluxDB refused.", self.refused_lines)
        metric("seq_gaps_total", "counter", "Messages missing by seq.", self.seq_gaps_total)
        metric("wal_bytes", "gauge", "Bytes in the write-ahead log.", self.wal_bytes)
        metric("wal_depth_bytes", "gauge", "WAL bytes not yet in InfluxDB.", self.wal_depth_bytes)
        metric("wal_segments", "gauge", "WAL segment files.", self.wal_segments)
        metric(
            "wal_full_waits_total",
            "counter",
            "Times intake waited for WAL room.",
            self.wal_full_waits,
        )
        metric(
            "intake_busy_seconds_total",
            "counter",
            "Seconds the intake's handler spent on messages.",
            round(self.intake_busy_s, 6),
        )
        metric("mqtt_connects_total", "counter", "MQTT (re)connections.", self.mqtt_connects)
        metric(
            "mqtt_connect_failures_total",
            "counter",
            "MQTT connection attempts that failed or were refused.",
            self.mqtt_connect_failures,
        )
        metric(
            "mqtt_connection_losses_total",
            "counter",
            "MQTT connections lost after they were up.",
            self.mqtt_connection_losses,
        )
        metric(
            "status_changes_total", "counter", "Device online/offline changes.", self.status_changes
        )
        metric(
            "wal_writable",
            "gauge",
            "1 while the WAL takes writes, 0 while the disk refuses them.",
            int(self.wal_writable),
        )
        metric(
            "wal_write_errors_total",
            "counter",
            "Times the WAL stopped taking writes (disk full, I/O error).",
            self.wal_write_errors,
        )
        metric(
            "wal_corrupt_records_total",
            "counter",
            "WAL records that failed their checksum and were skipped.",
            self.wal_corrupt_records,
        )
        metric(
            "wal_corrupt_bytes_total",
            "counter",
            "WAL bytes dropped as damaged (corrupt records and torn tails).",
            self.wal_corrupt_bytes,
        )
        metric(
            "wal_corrupt_tail_bytes",
            "gauge",
            "Bytes of a torn WAL tail cut off at start (a crash mid-write).",
            self.wal_corrupt_tail_bytes,
        )
        out.append("# HELP kotahub_ingest_thread_restarts_total Loops restarted after a failure.")
        out.append("# TYPE kotahub_ingest_thread_restarts_total counter")
        for thread, count in sorted(self.thread_restarts.items()):
            out.append(
                f'kotahub_ingest_thread_restarts_total{{{label},thread="{_label(thread)}"}} {count}'
            )
        for name, kind, help_text, index in (
            ("consumer_lag_bytes", "gauge", "WAL bytes a consumer has not read yet.", 0),
            (
                "consumer_skipped_segments_total",
                "counter",
                "WAL segments released before a lagging consumer read them.",
                1,
            ),
            ("consumer_parse_errors_total", "counter", "WAL lines a consumer could not read.", 2),
        ):
            out.append(f"# HELP kotahub_ingest_{name} {help_text}")
            out.append(f"# TYPE kotahub_ingest_{name} {kind}")
            for consumer, figures in sorted(self.consumers.items()):
                out.append(
                    f'kotahub_ingest_{name}{{{label},consumer="{_label(consumer)}"}} '
                    f"{figures[index]}"
                )
        out.append("# HELP kotahub_ingest_housekeeping_errors_total Failed housekeeping duties.")
        out.append("# TYPE kotahub_ingest_housekeeping_errors_total counter")
        for duty, count in sorted(self.housekeeping_errors.items()):
            out.append(
                f'kotahub_ingest_housekeeping_errors_total{{{label},duty="{_label(duty)}"}} {count}'
            )
        out.append("# HELP kotahub_ingest_deadletters_total Rejected inputs by reason.")
        out.append("# TYPE kotahub_ingest_deadletters_total counter")
        for reason, count in sorted(self.deadletters.items()):
            out.append(
                f'kotahub_ingest_deadletters_total{{{label},reason="{_label(reason)}"}} {count}'
            )
        out.append("# HELP kotahub_ingest_write_seconds InfluxDB write latency per batch.")
        out.append("# TYPE kotahub_ingest_write_seconds histogram")
        running = 0
        for bound, count in zip(LATENCY_BUCKETS_S, self.latency_buckets, strict=True):
            running += count
            out.append(f'kotahub_ingest_write_seconds_bucket{{{label},le="{bound}"}} {running}')
        out.append(f'kotahub_ingest_write_seconds_bucket{{{label},le="+Inf"}} {self.latency_count}')
        out.append(f"kotahub_ingest_write_seconds_sum{{{label}}} {self.latency_sum_s}")
        out.append(f"kotahub_ingest_write_seconds_count{{{label}}} {self.latency_count}")
        out.append(
            "# HELP kotahub_ingest_device_seq_gaps_total Messages missing by seq, per device."
        )
        out.append("# TYPE kotahub_ingest_device_seq_gaps_total counter")
        for device_id, gaps in sorted(dict(self.seq_gaps).items()):
            out.append(
                f'kotahub_ingest_device_seq_gaps_total{{{label},device_id="{_label(device_id)}"}}'
                f" {gaps}"
            )
        return "\n".join(out) + "\n"


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class HubMeasurement:
    """Turns counter snapshots into ``hub`` points with per-second rates."""

    def __init__(self, hub: str) -> None:
        self.hub = hub
        self._last_time = time.monotonic()
        self._last: dict[str, float] = {}
        self._last_gaps: dict[str, int] = {}

    def lines(self, stats: IngestStats, now_ms: int) -> list[str]:
        """Points for this interval: rates, totals, gauges, and changed per-device gaps."""
        now = time.monotonic()
        elapsed = max(now - self._last_time, 1e-6)
        totals = {
            "messages_in": stats.messages_in,
            "lines_written": stats.lines_written,
            "batches": stats.batches,
            "latency_sum_s": stats.latency_sum_s,
            "latency_count": stats.latency_count,
        }
        delta = {key: value - self._last.get(key, 0) for key, value in totals.items()}
        fields: dict[str, FieldValue] = {
            "messages_in_per_s": delta["messages_in"] / elapsed,
            "written_per_s": delta["lines_written"] / elapsed,
            "batch_lines_mean": (
                delta["lines_written"] / delta["batches"] if delta["batches"] else 0.0
            ),
            "write_latency_mean_s": (
                delta["latency_sum_s"] / delta["latency_count"] if delta["latency_count"] else 0.0
            ),
            "messages_in": float(stats.messages_in),
            "lines_written": float(stats.lines_written),
            "write_retries": float(stats.write_retries),
            "refused_lines": float(stats.refused_lines),
            "wal_bytes": float(stats.wal_bytes),
            "wal_depth_bytes": float(stats.wal_depth_bytes),
            "wal_segments": float(stats.wal_segments),
            "seq_gaps": float(stats.seq_gaps_total),
            "deadletters": float(sum(stats.deadletters.values())),
        }
        for reason, count in stats.deadletters.items():
            fields[f"deadletter_{reason}"] = float(count)
        self._last_time, self._last = now, dict(totals)
        out = [format_line("hub", {"hub": self.hub}, fields, now_ms)]
        for device_id, gaps in list(stats.seq_gaps.items()):
            if self._last_gaps.get(device_id) != gaps:
                self._last_gaps[device_id] = gaps
                tags = {"hub": self.hub, "device_id": device_id}
                out.append(format_line("hub", tags, {"seq_gaps": float(gaps)}, now_ms))
        return out

    def fleet_lines(self, counts: Iterable[FleetCount], now_ms: int) -> list[str]:
        """One ``fleet_online`` point per family, kecamatan and team: devices online, known.

        Integer fields (``format_line`` writes numbers as floats): a count is whole, and
        the rollups keep ``mean``/``max`` of integers (hub/influx_rollups.py).
        """
        out = []
        for count in counts:
            tags = {
                "hub": self.hub,
                "family": count.family,
                "kecamatan": count.kecamatan,
                "team": count.team,
            }
            out.append(
                f"{tag_prefix(FLEET_MEASUREMENT, tags)} "
                f"online={count.online}i,devices={count.devices}i {now_ms}"
            )
        return out


Probe = Callable[[], tuple[bool, dict[str, object]]]
"""A health probe: (passing, details shown as JSON)."""


class MetricsServer:
    """Serves ``/metrics`` and the health probes (``/healthz``, ``/readyz``) on a thread."""

    def __init__(
        self,
        host: str,
        port: int,
        render: Callable[[], str],
        *,
        probes: Mapping[str, Probe] | None = None,
    ) -> None:
        routes = dict(probes or {})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                """Answer /metrics and the probes; 404 for anything else."""
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, render(), "text/plain; version=0.0.4; charset=utf-8")
                elif path in routes:
                    passing, details = routes[path]()
                    text = json.dumps({"status": "ok" if passing else "fail", **details})
                    self._send(200 if passing else 503, text + "\n", "application/json")
                else:
                    self.send_error(404)

            def _send(self, status: int, text: str, content_type: str) -> None:
                body = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Scrapes are not worth a log line."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ingest-metrics", daemon=True
        )

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
