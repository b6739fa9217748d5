"""The WAL on a real, small filesystem that fills up: consistent, a dedicated error, resumes.

Each test mounts its own tmpfs (size- or inode-limited) under its temp folder; that
needs root, which CI has. When the mount is refused the test fails and says why: a
disk-full path that was never exercised must not count as passing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hub.ingest.write_ahead_log import (
    WalDiskFullError,
    WalWriteError,
    WriteAheadLog,
    free_bytes,
)
from tests.ingest.test_wal_damage import read_all, segments

KIB = 1024
Mount = Callable[..., Path]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Mount]:
    """``small_fs(size="2m", nr_inodes=None)``: a fresh tmpfs folder, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str = "2m", nr_inodes: int | None = None) -> Path:
        where = tmp_path / f"fs{len(mounted)}"
        where.mkdir()
        options = f"size={size}" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(
                f"cannot mount a small tmpfs for the disk-full tests (needs root): "
                f"{proc.stderr.strip() or proc.returncode}"
            )
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def fill(directory: Path, leave_bytes: int) -> Path:
    """A filler file that leaves about ``leave_bytes`` free on the filesystem."""
    filler = directory / "filler"
    with filler.open("wb") as handle:
        chunk = b"\0" * (64 * KIB)
        with contextlib.suppress(OSError):
            while True:
                handle.write(chunk)
                handle.flush()
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave_bytes))
    return filler


def fill_inodes(directory: Path) -> list[Path]:
    """Empty files until the filesystem has no inode left; they are returned."""
    made: list[Path] = []
    while True:
        path = directory / f"inode-{len(made)}"
        try:
            path.touch()
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            return made
        made.append(path)


def test_append_on_full_disk_rolls_back_and_resumes(
    small_fs: Mount, caplog: pytest.LogCaptureFixture
) -> None:
    directory = small_fs("2m") / "wal"
    wal = WriteAheadLog(directory)
    first = b"flood,device_id=g1 level_m=1 1\n" * 1000
    wal.append(first)
    wal.sync()
    assert wal.check_writable() is None
    filler = fill(directory.parent, leave_bytes=100 * KIB)
    # Bigger than what is free: part of it is written before ENOSPC.
    big = bytes(range(256)) * 1024
    with caplog.at_level(logging.WARNING, logger="hub.ingest.write_ahead_log"):
        with pytest.raises(WalDiskFullError) as caught:
            wal.append(big)
        with pytest.raises(WalDiskFullError):
            wal.append(big)  # still full: the same error, logged once
    err = caught.value
    assert isinstance(err, OSError)
    assert err.errno == errno.ENOSPC
    assert str(directory) in str(err)
    assert "bytes free" in str(err)
    assert len([r for r in caplog.records if "disk full" in r.getMessage()]) == 1
    (segment,) = segments(directory)
    assert segment.stat().st_size == 8 + len(first)  # the partial record was cut off
    assert wal.disk_full
    assert wal.disk_full_errors == 2
    assert wal.check_writable() is not None
    filler.unlink()
    wal.append(big)
    wal.sync()
    assert wal.check_writable() is None
    assert not wal.disk_full
    assert read_all(wal) == [first, big]
    wal.close()
    reopened = WriteAheadLog(directory)
    assert reopened.corrupt_records == 0
    assert read_all(reopened) == [first, big]
    reopened.close()


def test_disk_full_across_many_groups_loses_and_doubles_nothing(small_fs: Mount) -> None:
    """The hub's loop: append + sync per group; a refused group is retried until it fits."""
    directory = small_fs("2m") / "wal"
    wal = WriteAheadLog(directory, segment_bytes=64 * KIB)
    filler = fill(directory.parent, leave_bytes=300 * KIB)
    groups = [f"flood,device_id=g{i} level_m={i} {i}\n".encode() * 300 for i in range(60)]
    refused = 0
    read_back: list[bytes] = []
    position = wal.first_position()
    for group in groups:
        while True:
            try:
                wal.append(group)
                wal.sync()
                break
            except WalDiskFullError:
                refused += 1
                # The writer catches up and releases what InfluxDB holds, as the hub's does.
                records, position = wal.read(position, 1 << 20)
                read_back.extend(records)
                wal.release(position)
                if refused > 100:
                    filler.unlink()
    read_back.extend(read_all(wal, position))
    assert refused > 0
    assert read_back == groups  # every group, in order, once
    wal.close()


def test_segment_that_cannot_be_created(small_fs: Mount, caplog: pytest.LogCaptureFixture) -> None:
    """No inode for the next segment: the full one keeps growing until there is one."""
    directory = small_fs("8m", nr_inodes=64) / "wal"
    wal = WriteAheadLog(directory, segment_bytes=4 * KIB)
    blockers = fill_inodes(directory.parent)
    assert blockers
    records = [f"atcs,device_id=x{i} count={i} {i}".encode() * 40 for i in range(12)]
    with caplog.at_level(logging.WARNING, logger="hub.ingest.write_ahead_log"):
        for payload in records[:6]:
            wal.append(payload)
            wal.sync()  # durable though the rotation after it fails: no error
    assert wal.segment_count == 1
    assert len([r for r in caplog.records if "cannot start segment" in r.getMessage()]) == 1
    for path in blockers:
        path.unlink()
    for payload in records[6:]:
        wal.append(payload)
        wal.sync()
    assert wal.segment_count > 1
    assert read_all(wal) == records
    wal.close()
    reopened = WriteAheadLog(directory, segment_bytes=4 * KIB)
    assert reopened.recovered_records == len(records)
    assert read_all(reopened) == records
    reopened.close()


def test_open_on_full_disk_then_resume(small_fs: Mount) -> None:
    """Started with no room for its new segment, the log opens and refuses appends."""
    directory = small_fs("8m", nr_inodes=64) / "wal"
    wal = WriteAheadLog(directory)
    wal.append(b"before the restart")
    wal.close()
    blockers = fill_inodes(directory.parent)
    reopened = WriteAheadLog(directory)
    assert reopened.recovered_records == 1
    problem = reopened.check_writable()
    assert problem is not None
    assert "disk full" in problem
    with pytest.raises(WalDiskFullError):
        reopened.append(b"after the restart")
    with pytest.raises(WalDiskFullError):
        reopened.sync()
    assert read_all(reopened) == [b"before the restart"]
    for path in blockers:
        path.unlink()
    reopened.append(b"after the restart")
    reopened.sync()
    assert reopened.check_writable() is None
    assert read_all(reopened) == [b"before the restart", b"after the restart"]
    reopened.close()


def test_failed_fsync_cuts_the_unsynced_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake at the kernel boundary: tmpfs never fails fsync, some filesystems do."""
    wal = WriteAheadLog(tmp_path)
    wal.append(b"kept")
    wal.sync()
    wal.append(b"one")
    wal.append(b"two")
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(WalDiskFullError):
        wal.sync()
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert read_all(wal) == [b"kept"]
    wal.append(b"one")
    wal.append(b"two")
    wal.sync()
    assert read_all(wal) == [b"kept", b"one", b"two"]
    wal.close()


def test_other_write_errors_are_wal_write_errors(tmp_path: Path) -> None:
    """EIO and friends are not 'disk full': a WalWriteError, still an OSError."""
    assert not issubclass(WalWriteError, WalDiskFullError)
    assert issubclass(WalDiskFullError, WalWriteError)
    assert issubclass(WalWriteError, OSError)
    assert free_bytes(tmp_path) > 0
