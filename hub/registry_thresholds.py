"""Each flood gauge's stage thresholds from the registry, as points the Flood board reads.

Grafana with InfluxQL can only draw what InfluxDB holds, so the gauges' registry attributes
``siaga4_m..siaga1_m`` (the ones the ``flood-stage`` alert rule reads) are written to the
``flood_threshold`` measurement: tags as on the gauge's ``flood`` points (device_id,
kecamatan, ...), one field per stage. Points are written on start, when a gauge's stages
change in the registry, and again once a day, so the raw retention never drops them.
A gauge whose stages are removed keeps its last written ones (old points are not deleted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import httpx

from device_registry.directory import DeviceDirectory, DeviceRecord, SnapshotDirectory
from hub.alerts.rule_engine import attribute_of
from hub.ingest.line_protocol import format_line
from hub.settings import Settings

log = logging.getLogger(__name__)

MEASUREMENT = "flood_threshold"
STAGES: tuple[str, ...] = ("siaga4_m", "siaga3_m", "siaga2_m", "siaga1_m")
REWRITE_EVERY_S = 86_400.0

Writer = Callable[[list[str]], None]
Stages = tuple[tuple[str, float], ...]


class ThresholdWriteError(Exception):
    """InfluxDB refused or could not take the threshold points."""


def gauge_stages(record: DeviceRecord) -> Stages:
    """The stages a flood gauge has in the registry (tag, else ``driver_config['alert']``)."""
    if record.family != "flood" or not record.accepts_data:
        return ()
    found = ((name, attribute_of(record, name)) for name in STAGES)
    return tuple((name, value) for name, value in found if value is not None)


def threshold_lines(
    records: Iterable[DeviceRecord], time_ms: int, only: set[str] | None = None
) -> list[str]:
    """One ``flood_threshold`` point per gauge with stages (``only``: these device ids)."""
    out = []
    for record in sorted(records, key=lambda r: r.device_id):
        if only is not None and record.device_id not in only:
            continue
        stages = gauge_stages(record)
        if stages:
            out.append(format_line(MEASUREMENT, record.influx_tags(), dict(stages), time_ms))
    return out


class ThresholdWriter:
    """Writes the gauges' stages when they change; ``sync`` is cheap when nothing did."""

    def __init__(
        self,
        directory: SnapshotDirectory,
        write: Writer,
        *,
        clock: Callable[[], float] = time.time,
        rewrite_every_s: float = REWRITE_EVERY_S,
    ) -> None:
        self.directory = directory
        self.write = write
        self.clock = clock
        self.rewrite_every_s = rewrite_every_s
        self._generation: int | None = None
        self._written: dict[str, Stages] = {}
        self._rewritten_at = 0.0

    def sync(self, *, refresh: bool = False) -> int:
        """Write the points of gauges whose stages changed (all of them when due); a count."""
        if refresh:
            self.directory.refresh()
        now = self.clock()
        due = now - self._rewritten_at >= self.rewrite_every_s
        generation = self.directory.generation
        if generation == self._generation and not due:
            return 0
        records = self.directory.all()
        current = {r.device_id: s for r in records if (s := gauge_stages(r))}
        changed = {d for d, s in current.items() if due or self._written.get(d) != s}
        lines = threshold_lines(records, int(now * 1000), changed) if changed else []
        if lines:
            self.write(lines)  # raises: the next sync tries again, nothing marked written
        self._written = current
        self._generation = generation
        if due:
            self._rewritten_at = now
        return len(lines)


def influx_writer(settings: Settings) -> Writer:
    """Lines to the hub's database and raw retention policy over the v1 ``/write``."""
    ix = settings.influx
    password = ix.password.get_secret_value() if ix.password else None
    auth = (ix.username, password or "") if ix.username else None
    url = f"{ix.url.rstrip('/')}/write"
    params: Mapping[str, str] = {
        "db": ix.database,
        "rp": ix.retention_policy,
        "precision": "ms",
    }

    def write(lines: list[str]) -> None:
        try:
            resp = httpx.post(
                url,
                params=params,
                content="\n".join(lines).encode(),
                auth=auth,
                timeout=ix.timeout_s,
            )
        except httpx.HTTPError as err:
            raise ThresholdWriteError(f"{ix.url}: {err}") from err
        if resp.status_code != 204:
            raise ThresholdWriteError(f"writing {MEASUREMENT}: {resp.status_code} {resp.text}")

    return write


class ThresholdThread:
    """Runs a ``ThresholdWriter`` every second in a thread of its own until ``stop``."""

    def __init__(self, writer: ThresholdWriter, *, every_s: float = 1.0, refresh: bool = False):
        self.writer = writer
        self._every_s = every_s
        self._refresh = refresh
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood-thresholds", daemon=True)
        self._failing: str | None = None

    def start(self) -> ThresholdThread:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                written = self.writer.sync(refresh=self._refresh)
            except Exception as err:
                # Logged once per distinct failure: InfluxDB down must not flood the log.
                if self._failing != str(err):
                    log.error("flood thresholds not written, retrying every second: %s", err)
                    self._failing = str(err)
            else:
                if self._failing is not None:
                    log.warning("flood thresholds written again")
                    self._failing = None
                if written:
                    log.info("flood thresholds: %d gauge(s) written", written)
            self._stop.wait(self._every_s)

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def start_threshold_writer(
    settings: Settings, directory: DeviceDirectory
) -> ThresholdThread | None:
    """The hub's thresholds writer over its directory (which the hub refreshes itself).

    None where it cannot run: InfluxDB's v2 API (no v1 ``/write``), or a directory that
    cannot list its devices.
    """
    if settings.influx.api != "v1" or not isinstance(directory, SnapshotDirectory):
        log.info("flood thresholds not written to InfluxDB (needs influx.api = v1)")
        return None
    return ThresholdThread(ThresholdWriter(directory, influx_writer(settings))).start()
