"""The hub's read interface backed by the registry database.

``refresh`` reads one row (the change counter that every registry write bumps); only
when it moved does it reload all devices, which for 13,000 devices takes a fraction of
a second. The hub calls ``refresh`` about once a second, so a device registered while
the hub runs is accepted within a couple of seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from device_registry.database import RegistryDatabase
from device_registry.directory import DeviceRecord, DirectoryError, SnapshotDirectory
from device_registry.models import Device, DeviceType, RegistryRevision
from drivers.contract import METRIC_KINDS, MetricKind


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
                    select(
                        Device,
                        DeviceType.expected_interval_s,
                        DeviceType.protocol,
                        DeviceType.metrics,
                        DeviceType.influx_tag_keys,
                    ).join(DeviceType, DeviceType.name == Device.device_type)
                ).all()
                schemas: dict[tuple[tuple[str, str], ...], Mapping[str, MetricKind]] = {}
                records = [
                    _record(
                        device,
                        interval,
                        protocol,
                        _schema(metrics, schemas),
                        tuple(str(k) for k in tag_keys or ()),
                    )
                    for device, interval, protocol, metrics, tag_keys in rows
                ]
        except SQLAlchemyError as err:
            raise DirectoryError(f"registry database unreadable: {err}") from err
        self.replace(records)
        self._revision = revision
        return True


def _schema(
    metrics: list[Any] | None, seen: dict[tuple[tuple[str, str], ...], Mapping[str, MetricKind]]
) -> Mapping[str, MetricKind]:
    """A type's metric list as name -> kind; one mapping per distinct list, shared."""
    items = tuple((str(m["name"]), str(m.get("kind", "number"))) for m in metrics or ())
    schema = seen.get(items)
    if schema is None:
        schema = seen[items] = MappingProxyType(
            {name: kind for name, kind in items if kind in METRIC_KINDS}
        )
    return schema


def _record(
    device: Device,
    interval: float,
    protocol: str,
    metrics: Mapping[str, MetricKind],
    influx_tag_keys: tuple[str, ...],
) -> DeviceRecord:
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
        metrics=metrics,
        influx_tag_keys=influx_tag_keys,
        parent_id=device.parent_id,
    )
