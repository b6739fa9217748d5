"""WAL open benchmark: time ``WriteAheadLog(...)`` on a 2 GiB log, against a full read of it.

The log is built with the hub's own ``WriteAheadLog`` (64 KiB records of flood-gauge line
protocol, 64 MiB segments, one fsync per 4 MiB: test setup, not timed) in a temporary
folder, removed at the end. Then, each repeated and reported as the median, with the
log's pages dropped from the page cache before every run (``posix_fadvise DONTNEED`` on
its files only, so that no other process is disturbed) so that the disk is read:

- ``open_s``: open after a clean close (every segment sealed with its sidecar);
- ``open_after_crash_s``: open with the newest (full) segment never sealed, as after
  kill -9: it is scanned, the rest is not;
- references: ``listdir_stat_s`` (list the folder and stat every segment, the least an
  open can do) and ``full_read_s`` (read and check every record once, which is what the
  open did before the sidecars: ``scan_valid_end`` over every segment).

Last line: {"wal_bytes": N, "open_s_median": X, "full_read_s": Y, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.ingest.wal_segments import scan_valid_end
from hub.ingest.write_ahead_log import DEFAULT_SEGMENT_BYTES, WriteAheadLog

MIB = 1024 * 1024
GIB = 1024 * MIB


def line_protocol_records(record_bytes: int, variants: int = 16) -> list[bytes]:
    """A few distinct records of about ``record_bytes`` of flood-gauge lines each."""
    records = []
    for variant in range(variants):
        lines = []
        size = 0
        n = 0
        while size < record_bytes - 200:
            device = (variant * 997 + n) % 15000
            line = (
                f"flood,device_id=bench-flood-{device:07d},family=flood,site=pompa-{device % 49},"
                f"kecamatan=semarang-utara,kelurahan=tanjung-mas,team=river-{device % 7},"
                f"model=ultrasonic-v2 level_m={1 + (n % 300) / 100:.3f},rain_mm=0.2,"
                f"battery_v=3.71,bench_seq={n}i {1_800_000_000_000 + n * 1000 + variant}"
            )
            lines.append(line)
            size += len(line) + 1
            n += 1
        records.append("\n".join(lines).encode())
    return records


def build(directory: Path, total_bytes: int, record_bytes: int, segment_bytes: int) -> int:
    """Fill a WAL with about ``total_bytes``; return the bytes on disk."""
    records = line_protocol_records(record_bytes)
    wal = WriteAheadLog(directory, segment_bytes=segment_bytes, max_bytes=2 * total_bytes)
    since_sync = 0
    i = 0
    while wal.total_bytes + since_sync < total_bytes:
        body = records[i % len(records)]
        wal.append(body)
        since_sync += len(body) + 8
        i += 1
        if since_sync >= 4 * MIB:
            wal.sync()
            since_sync = 0
    wal.close()
    return sum(p.stat().st_size for p in directory.glob("*.wal"))


def drop_cache(directory: Path) -> None:
    """Evict this folder's files from the page cache (they are clean: fsynced)."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(action: Callable[[], object], repeats: int, before: Callable[[], None]) -> list[float]:
    """Seconds per run of ``action``, ``before`` called (untimed) ahead of each."""
    runs = []
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        action()
        runs.append(time.perf_counter() - started)
    return runs


def time_opens(
    directory: Path, segment_bytes: int, repeats: int, before: Callable[[], None]
) -> list[float]:
    """Seconds per ``WriteAheadLog(directory)``; the close after each is not timed."""
    runs = []
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        wal = WriteAheadLog(directory, segment_bytes=segment_bytes, max_bytes=1 << 62)
        runs.append(time.perf_counter() - started)
        wal.close()
    return runs


def measure(directory: Path, repeats: int, segment_bytes: int) -> dict[str, Any]:
    """Every figure of the JSON line, on the log in ``directory``."""
    segments = sorted(directory.glob("*.wal"))
    newest_index = segments[-1].with_suffix(".idx")

    def cold() -> None:
        drop_cache(directory)

    def crashed() -> None:
        newest_index.unlink(missing_ok=True)  # kill -9 before the newest was sealed
        drop_cache(directory)

    def list_and_stat() -> None:
        for name in os.listdir(directory):
            os.stat(directory / name)

    def full_read() -> None:
        for path in segments:
            scan_valid_end(path)

    clean = time_opens(directory, segment_bytes, repeats, cold)
    crash = time_opens(directory, segment_bytes, repeats, crashed)
    listing = timed(list_and_stat, repeats, cold)
    # The full read is slow by design: fewer repeats of it keep the bench short.
    full = timed(full_read, max(1, min(repeats, 3)), cold)
    wal = WriteAheadLog(directory, segment_bytes=segment_bytes, max_bytes=1 << 62)
    recovered = wal.recovered_records
    wal.close()
    open_s = statistics.median(clean)
    crash_s = statistics.median(crash)
    full_s = statistics.median(full)
    return {
        "wal_bytes": sum(p.stat().st_size for p in segments),
        "segments": len(segments),
        "records": recovered,
        "open_s_median": round(open_s, 4),
        "open_after_crash_s_median": round(crash_s, 4),
        "listdir_stat_s": round(statistics.median(listing), 5),
        "full_read_s": round(full_s, 3),
        "full_read_mb_s": round(sum(p.stat().st_size for p in segments) / MIB / full_s, 1),
        "speedup_vs_full_read": round(full_s / max(crash_s, 1e-9), 1),
        "repeats": repeats,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--gib", type=float, default=2.0, help="size of the log (2 GiB)")
    parser.add_argument("--record-kib", type=int, default=64, help="record size (64 KiB)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each timing (5)")
    parser.add_argument("--quick", action="store_true", help="a 48 MiB log, for the smoke test")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line")
    parser.add_argument("--dir", type=Path, help="parent of the temp folder (default: /tmp)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the log, time the opens and references, print them and the JSON line."""
    args = parse_args(argv)
    total = int(48 * MIB if args.quick else args.gib * GIB)
    segment_bytes = 8 * MIB if args.quick else DEFAULT_SEGMENT_BYTES
    repeats = 3 if args.quick else args.repeats
    folder = Path(tempfile.mkdtemp(prefix="kotahub-bench-wal-", dir=args.dir))
    try:
        started = time.perf_counter()
        build(folder / "wal", total, args.record_kib * 1024, segment_bytes)
        build_s = time.perf_counter() - started
        result = measure(folder / "wal", repeats, segment_bytes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not args.json_only:
        mib = result["wal_bytes"] / MIB
        print(f"WAL of {mib:.0f} MiB in {result['segments']} segments, built in {build_s:.1f} s")
        print(f"  open, clean close        {result['open_s_median'] * 1000:9.1f} ms (median)")
        print(f"  open after kill -9       {result['open_after_crash_s_median'] * 1000:9.1f} ms")
        print(f"  reference: listdir+stat  {result['listdir_stat_s'] * 1000:9.2f} ms")
        print(
            f"  reference: full read     {result['full_read_s'] * 1000:9.1f} ms "
            f"({result['full_read_mb_s']} MiB/s; the open before sidecars)"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
