"""The last device list a field agent fetched from the registry, kept on disk.

A gateway keeps polling its devices through a registry outage (or a restart during one)
from this file. It is written atomically (a temporary file, fsync, rename) with mode 0600,
since device addresses and driver settings (SNMP communities) are not for other users. A
damaged file is a ``DeviceListCacheError`` that names the file and the fault, never a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device_registry.directory import DeviceRecord, DirectoryError, record_from_mapping

CACHE_FORMAT = 1
# A gateway serves hundreds of devices, not millions: a bigger file is not one of ours.
MAX_CACHE_BYTES = 64 * 1024 * 1024


class DeviceListCacheError(DirectoryError):
    """The cached device list cannot be used; the message names the file and why."""


@dataclass(frozen=True, slots=True)
class CachedDeviceList:
    """One gateway's device list as fetched: the devices, the registry's ETag, when."""

    gateway_id: str | None  # None: the whole registry (a hub worker's list)
    devices: tuple[DeviceRecord, ...]
    rows: tuple[dict[str, Any], ...]
    etag: str | None
    revision: int | None
    fetched_at: str


def parse_device_rows(
    rows: object, gateway_id: str | None, *, where: str
) -> tuple[tuple[DeviceRecord, ...], tuple[dict[str, Any], ...]]:
    """Check a list of device objects (of one gateway, unless None); DirectoryError names the entry.

    A device assigned to another gateway is refused too: the agent must never poll, nor
    publish for, a device that is not its own.
    """
    if not isinstance(rows, list):
        raise DirectoryError(f"{where}: 'devices' must be a list")
    records: list[DeviceRecord] = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DirectoryError(f"{where}: device {index}: expected an object")
        record = record_from_mapping(row, where=f"{where}: device {index}")
        if gateway_id is not None and record.gateway_id != gateway_id:
            raise DirectoryError(
                f"{where}: device {record.device_id} belongs to gateway "
                f"{record.gateway_id!r}, not {gateway_id!r}"
            )
        records.append(record)
    return tuple(records), tuple(dict(row) for row in rows)


class DeviceListCache:
    """Reads and writes one gateway's (or, with None, the hub's) cached device list."""

    def __init__(self, path: Path, gateway_id: str | None) -> None:
        self.path = path
        self.gateway_id = gateway_id

    def load(self) -> CachedDeviceList | None:
        """The cached list, None when there is no file; DeviceListCacheError when damaged."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as err:
            raise DeviceListCacheError(f"{self.path}: cannot read: {err.strerror}") from err
        if size > MAX_CACHE_BYTES:
            raise DeviceListCacheError(
                f"{self.path}: {size} bytes, more than a device list cache holds: damaged"
            )
        try:
            data = json.loads(self.path.read_bytes())
        except OSError as err:
            raise DeviceListCacheError(f"{self.path}: cannot read: {err.strerror}") from err
        except (ValueError, RecursionError) as err:
            raise DeviceListCacheError(f"{self.path}: damaged, not JSON ({err})") from err
        return self._parse(data)

    def _parse(self, data: object) -> CachedDeviceList:
        where = str(self.path)
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise DeviceListCacheError(f"{where}: damaged, not a device list cache (format 1)")
        if data.get("gateway_id") != self.gateway_id:
            raise DeviceListCacheError(
                f"{where}: the cached list is gateway {data.get('gateway_id')!r}'s, "
                f"not {self.gateway_id!r}"
            )
        etag, revision, fetched_at = data.get("etag"), data.get("revision"), data.get("fetched_at")
        if not (etag is None or isinstance(etag, str)):
            raise DeviceListCacheError(f"{where}: damaged: 'etag' must be a string")
        if not (revision is None or (isinstance(revision, int) and not isinstance(revision, bool))):
            raise DeviceListCacheError(f"{where}: damaged: 'revision' must be an integer")
        if not isinstance(fetched_at, str):
            raise DeviceListCacheError(f"{where}: damaged: 'fetched_at' must be a string")
        try:
            devices, rows = parse_device_rows(data.get("devices"), self.gateway_id, where=where)
        except DeviceListCacheError:
            raise
        except DirectoryError as err:
            raise DeviceListCacheError(f"damaged: {err}") from err
        return CachedDeviceList(self.gateway_id, devices, rows, etag, revision, fetched_at)

    def save(self, rows: tuple[dict[str, Any], ...], etag: str | None, revision: int | None) -> str:
        """Write the list atomically with mode 0600; return its ``fetched_at`` stamp."""
        fetched_at = datetime.now(UTC).isoformat(timespec="seconds")
        document = {
            "format": CACHE_FORMAT,
            "gateway_id": self.gateway_id,
            "etag": etag,
            "revision": revision,
            "fetched_at": fetched_at,
            "devices": list(rows),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # a leftover temporary file keeps no wider mode
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        # The rename is durable only once the folder is on disk too.
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return fetched_at
