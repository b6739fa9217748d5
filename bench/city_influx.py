"""The city bench's InfluxDB side: points per measurement, and the disk a point costs.

Disk per 30 days is ``bytes per point x points per second in the window x 30 days``, where
bytes per point is measured on the TSM files InfluxDB wrote for the run, after it had time
to snapshot its cache and fully compact its shards (``INFLUX_ENV``: the bench's influxd
does both a few seconds after writes stop; nothing else of its configuration changes, so
the run itself is measured as configured). A short run's raw growth (uncompacted level-1
TSM files, the WAL, the series index created once) is reported beside it, over the
second half of the window only, as the upper bound it is.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hub.influxql import InfluxQL

PROBE_PREFIX = "bench-probe"
NON_FAMILY = frozenset({"device_status", "deadletter", "hub", "alert"})
# influxd 1.x reads INFLUXDB_<SECTION>_<KEY> over its config file; these act only once the
# writes stop: snapshot the cache to TSM after 5 s, compact a shard fully after 10 s.
INFLUX_ENV = {
    "INFLUXDB_DATA_CACHE_SNAPSHOT_WRITE_COLD_DURATION": "5s",
    "INFLUXDB_DATA_COMPACT_FULL_WRITE_COLD_DURATION": "10s",
}
COMPACT_TIMEOUT_S = 120.0
COMPACT_STABLE_S = 10.0


@dataclass(frozen=True, slots=True)
class DiskUse:
    """One database's bytes on disk, by kind."""

    tsm: int  # the data files
    wal: int  # not yet snapshotted into TSM
    index: int  # the series file and the shards' TSI index (once per series, not per point)

    @property
    def data(self) -> int:
        """TSM + WAL: what grows with every point."""
        return self.tsm + self.wal


def disk_use(influx_dir: Path, database: str) -> DiskUse:
    """The database's TSM, WAL and index bytes under the stack's InfluxDB folder."""
    tsm = wal = index = 0
    for dirpath, _dirs, files in os.walk(influx_dir / "data" / database):
        indexed = "_series" in dirpath or f"{os.sep}index" in dirpath
        for name in files:
            with contextlib.suppress(OSError):
                size = os.stat(os.path.join(dirpath, name)).st_size
                if name.endswith(".tsm") and not indexed:
                    tsm += size
                elif indexed or name == "fields.idx":
                    index += size
    for dirpath, _dirs, files in os.walk(influx_dir / "wal" / database):
        for name in files:
            with contextlib.suppress(OSError):
                wal += os.stat(os.path.join(dirpath, name)).st_size
    return DiskUse(tsm=tsm, wal=wal, index=index)


def wait_compacted(influx_dir: Path, database: str) -> tuple[DiskUse, float]:
    """Wait (writes stopped) until the WAL is snapshotted and the TSM bytes hold still."""
    started = time.monotonic()
    last = disk_use(influx_dir, database)
    still_since = time.monotonic()
    while time.monotonic() - started < COMPACT_TIMEOUT_S:
        time.sleep(1.0)
        now = disk_use(influx_dir, database)
        if now.tsm != last.tsm or now.wal != last.wal:
            last, still_since = now, time.monotonic()
        elif now.wal == 0 and time.monotonic() - still_since >= COMPACT_STABLE_S:
            break
    return last, time.monotonic() - started


def points_by_measurement(
    influx: InfluxQL,
    database: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    families_only: bool = True,
) -> dict[str, int]:
    """Points per measurement (optionally only those stamped in a time range).

    ``families_only``: the device families' measurements, probes excluded; else every point.

    InfluxQL counts each field apart: a device's points are the largest of its fields'
    counts (each point of a device carries that field).
    """
    where = []
    if since_ms is not None:
        where.append(f"time >= {since_ms}ms")
    if until_ms is not None:
        where.append(f"time < {until_ms}ms")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    out: dict[str, int] = {}
    for item in influx.query("SHOW MEASUREMENTS", database=database):
        for (name,) in item.values:
            if families_only and name in NON_FAMILY:
                continue
            for series in influx.query(
                f'SELECT count(*) FROM "{name}"{clause} GROUP BY "device_id"',
                database=database,
            ):
                device_id = (series.tags or {}).get("device_id", "")
                if families_only and device_id.startswith(PROBE_PREFIX):
                    continue
                counts = [int(v) for row in series.values for v in row[1:] if v is not None]
                out[name] = out.get(name, 0) + (max(counts) if counts else 0)
    return out


def per_day_bytes(bytes_per_point: float, points: int, window_s: float) -> float:
    """Bytes a day at the window's point rate."""
    return bytes_per_point * points / max(window_s, 1e-9) * 86400
