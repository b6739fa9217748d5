"""The registry service's device status: what the hub pushes and what the API serves back."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from device_registry.errors import FieldError, NotFoundError
from device_registry.models import (
    Device,
    DeviceStatus,
    DeviceType,
    utc_now,
)
from device_registry.schemas import (
    DeviceStatusPublic,
    DeviceStatusUpdate,
)
from device_registry.service_core import ServiceCore


class StatusService(ServiceCore):
    """Device status: what the hub reports (online, reason, last readings) and reads back."""

    def set_status(self, reports: Sequence[DeviceStatusUpdate]) -> int:
        """Store status reports (from the hub); unknown devices are refused by name."""
        with self.database.session() as session:
            ids = [r.device_id for r in reports]
            known = set(session.scalars(select(Device.id).where(Device.id.in_(ids))))
            for index, report in enumerate(reports):
                if report.device_id not in known:
                    raise FieldError(f"[{index}].device_id", f"unknown device {report.device_id!r}")
            now = utc_now()
            for report in reports:
                session.merge(
                    DeviceStatus(
                        device_id=report.device_id,
                        online=report.online,
                        reason=report.reason,
                        last_seen=report.last_seen,
                        last_readings=report.last_readings,
                        updated_at=now,
                    )
                )
        return len(reports)

    def get_status(self, device_id: str) -> DeviceStatusPublic:
        """Last known status and readings of a device."""
        with self.database.session() as session:
            device = session.get(Device, device_id)
            if device is None:
                raise NotFoundError("device", device_id)
            device_type = session.get(DeviceType, device.device_type)
            status = session.get(DeviceStatus, device_id)
            return DeviceStatusPublic(
                device_id=device_id,
                online=status.online if status else None,
                reason=status.reason if status else "no status reported yet",
                last_seen=status.last_seen if status else None,
                last_readings=dict(status.last_readings) if status else {},
                expected_interval_s=device_type.expected_interval_s if device_type else 0.0,
            )
