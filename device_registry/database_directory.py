"""The hub's read interface backed by the registry database.

``refresh`` reads one row (the change counter that every registry write bumps); only
when it moved does it reload all devices, which for 13,000 devices takes a fraction of
a second. The hub calls ``refresh`` about once a second, so a device registered while
the hub runs is accepted within a couple of seconds.
"""

from __future__ import annotations

from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from device_registry.database import RegistryDatabase
from device_registry.directory import DeviceRecord, DirectoryError, SnapshotDirectory
from device_registry.models import Device, DeviceType, RegistryRevision


class DatabaseDeviceDirectory(SnapshotDirectory):
    """A ``DeviceDirectory`` over the registry database, cached in memory."""

    def __init__(self, database: RegistryDatabase) -> None:
        self.database = database
        self._revision: int | None = None
        super().__init__()
        self.refresh()

    def refresh(self) -> bool:
        """Reload when the registry's change counter moved; keep the old snapshot on error."""
        try:
            with self.database.session() as session:
                revision = int(session.scalar(select(RegistryRevision.counter)) or 0)
                if revision == self._revision:
                    return False
                rows = session.execute(
                    select(Device, DeviceType.expected_interval_s, DeviceType.protocol).join(
                        DeviceType, DeviceType.name == Device.device_type
                    )
                ).all()
                records = [
                    _record(device, interval, protocol) for device, interval, protocol in rows
                ]
        except SQLAlchemyError as err:
            raise DirectoryError(f"registry database unreadable: {err}") from err
        self.replace(records)
        self._revision = revision
        return True


def _record(device: Device, interval: float, protocol: str) -> DeviceRecord:
    tags = {str(k): str(v) for k, v in (device.tags or {}).items()}
    enrichment = {
        "site": device.site_id,
        "kecamatan": device.kecamatan,
        "kelurahan": device.kelurahan,
        "team": device.team_id,
        "model": device.model,
    }
    tags.update({k: v for k, v in enrichment.items() if v})
    return DeviceRecord(
        device_id=device.id,
        family=device.family,
        device_type=device.device_type,
        state=device.state,  # type: ignore[arg-type]
        gateway_id=device.gateway_id,
        expected_interval_s=interval,
        tags=MappingProxyType(tags),
        protocol=protocol,
        address=device.protocol_address,
        driver_config=MappingProxyType(dict(device.driver_config or {})),
    )
