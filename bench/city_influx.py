"""The city bench's InfluxDB side: points per measurement, and the disk a point costs.

Disk per 30 days is ``bytes per point x points per second in the window x 30 days``. The
bytes per point are measured on TSM files InfluxDB wrote and fully compacted: the window's
rows replayed as a long history (``steady_bytes_per_point``: full 1000-point blocks per
field, consecutive points taking different devices' values, a conservative stand-in for
how one device's values move), since a short run's own files hold one or two points a
series. ``INFLUX_ENV`` makes the bench's influxd snapshot its cache and compact a few
seconds after writes stop; nothing else of its configuration changes, so the run itself
is measured as configured. A short run's raw growth (uncompacted level-1 TSM files, the
WAL) is reported beside it, over the second half of the window only, as an upper bound.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def points_by_device(influx: InfluxQL, database: str, measurement: str) -> dict[str, int]:
    """Points per device of one measurement (the largest of its fields' counts)."""
    out: dict[str, int] = {}
    for series in influx.query(
        f'SELECT count(*) FROM "{measurement}" GROUP BY "device_id"', database=database
    ):
        counts = [int(v) for row in series.values for v in row[1:] if v is not None]
        out[(series.tags or {}).get("device_id", "")] = max(counts) if counts else 0
    return out


def per_day_bytes(bytes_per_point: float, points: int, window_s: float) -> float:
    """Bytes a day at the window's point rate."""
    return bytes_per_point * points / max(window_s, 1e-9) * 86400


# -- the steady state: a replayed history --------------------------------------------------
PROBE_DATABASE = "kotahub_bench_disk"
HISTORY_POINTS = 1000  # a full TSM block per field: what a long-lived series settles to
HISTORY_SERIES_TOTAL = 200  # over every measurement, in proportion to its points


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _field(value: Any, kind: str) -> str | None:
    if value is None:
        return None
    if kind == "integer":
        return f"{int(value)}i"
    if kind == "float":
        return repr(float(value))
    if kind == "boolean":
        return "true" if value else "false"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def history_lines(
    measurement: str,
    rows: list[dict[str, Any]],
    tag_keys: set[str],
    field_kinds: dict[str, str],
    interval_ms: int,
    end_ms: int,
    series_count: int,
) -> list[str]:
    """``series_count`` series of ``HISTORY_POINTS`` points each, back from ``end_ms``.

    Each series keeps one real device's tags; its point k takes the fields of real row
    ``series + k`` (of all devices), so consecutive values differ as much as the city's
    devices do among themselves: a conservative stand-in for how one device's values move.
    """
    lines: list[str] = []
    if not rows:
        return lines
    for series in range(min(series_count, len(rows))):
        tags = "".join(
            f",{key}={_escape_tag(str(rows[series][key]))}"
            for key in sorted(tag_keys)
            if rows[series].get(key) not in (None, "")
        )
        for k in range(HISTORY_POINTS):
            source = rows[(series + k) % len(rows)]
            fields = [
                f"{_escape_tag(name)}={text}"
                for name, kind in field_kinds.items()
                if (text := _field(source.get(name), kind)) is not None
            ]
            if fields:
                # A poll's clock wanders a little: not a perfectly regular grid.
                jitter = (series * 7919 + k * 104729) % 997 - 498
                ts = end_ms - (HISTORY_POINTS - k) * interval_ms + jitter
                lines.append(f"{measurement}{tags} {','.join(fields)} {ts}")
    return lines


def steady_bytes_per_point(
    influx: InfluxQL,
    influx_dir: Path,
    database: str,
    window_points: dict[str, int],
    window_s: float,
    end_ms: int,
) -> tuple[float, int, float]:
    """Bytes a point takes in a compacted long history: (bytes/point, points, seconds).

    The window's rows of each measurement are replayed as a history of full blocks into a
    scratch database, at the interval its devices reported at, with series in proportion
    to the measurement's share of the window's points (so the average weighs them as the
    city does); then the writes stop, InfluxDB compacts, and its TSM bytes are divided by
    the points replayed. The scratch database is dropped after.
    """
    import httpx

    started = time.monotonic()
    total = max(1, sum(window_points.values()))
    lines: list[str] = []
    for measurement, points in sorted(window_points.items()):
        if points <= 0:
            continue
        rows = influx.rows(f'SELECT * FROM "{measurement}" LIMIT 5000', database=database)
        tag_keys = {
            str(v[0])
            for s in influx.query(f'SHOW TAG KEYS FROM "{measurement}"', database=database)
            for v in s.values
        }
        kinds = {
            str(v[0]): str(v[1])
            for s in influx.query(f'SHOW FIELD KEYS FROM "{measurement}"', database=database)
            for v in s.values
        }
        devices = max(1, device_count(influx, database, measurement, rows))
        interval_ms = max(1000, int(window_s * 1000 * devices / points))
        series = max(2, round(HISTORY_SERIES_TOTAL * points / total))
        lines += history_lines(measurement, rows, tag_keys, kinds, interval_ms, end_ms, series)
    influx.query(f'DROP DATABASE "{PROBE_DATABASE}"')
    influx.query(f'CREATE DATABASE "{PROBE_DATABASE}"')
    with httpx.Client(timeout=120.0) as http:
        for start in range(0, len(lines), 5000):
            reply = http.post(
                f"{influx.url}/write",
                params={"db": PROBE_DATABASE, "precision": "ms"},
                content="\n".join(lines[start : start + 5000]).encode(),
            )
            if reply.status_code >= 300:
                raise RuntimeError(f"history write: {reply.text[:200]}")
    compacted, _ = wait_compacted(influx_dir, PROBE_DATABASE)
    influx.query(f'DROP DATABASE "{PROBE_DATABASE}"')
    return compacted.tsm / max(len(lines), 1), len(lines), time.monotonic() - started


def device_count(
    influx: InfluxQL, database: str, measurement: str, rows: list[dict[str, Any]]
) -> int:
    """The measurement's devices (its ``device_id`` values; the rows' when it has none)."""
    with contextlib.suppress(Exception):
        for series in influx.query(
            f'SHOW TAG VALUES EXACT CARDINALITY FROM "{measurement}" WITH KEY = "device_id"',
            database=database,
        ):
            for row in series.values:
                return int(row[0])
    return len({r.get("device_id") for r in rows})
