"""What a gateway's devices say they are, written to their registry records on change.

A camera answers ONVIF ``GetDeviceInformation`` with its vendor, model, firmware and serial;
the agent of its gateway reports them here
(``PUT /api/v1/gateways/{gateway_id}/device-info``, a batch) when they differ from what it
last reported. The registry writes a device's ``vendor``/``model``/``firmware_version``/
``serial`` only when a value changed, with an audit entry (action ``device_info``) and a
bump of the change counter (``model`` is an InfluxDB tag the hub reads from the registry).

A gateway token writes only its own gateway's devices: any other device (unknown, on
another gateway, retired) is refused by id in the answer, so one wrong row never blocks the
others. Values are bounded by their columns and may not hold control characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from device_registry.api_auth import AuthFirstRoute, DeviceInfoWriter
from device_registry.models import Device, utc_now
from device_registry.service_core import ServiceCore

MAX_REPORTS = 500
# The device columns' own lengths (models.Device).
FIELD_LENGTHS = {"vendor": 100, "model": 100, "firmware_version": 64, "serial": 100}
# Control characters and lone surrogates: a record value is shown on pages and exports.
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class DeviceInfoReport(BaseModel):
    """One device's identity as it reports it; an unset (or null) field is not reported."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: DeviceId
    vendor: str | None = Field(default=None, max_length=FIELD_LENGTHS["vendor"])
    model: str | None = Field(default=None, max_length=FIELD_LENGTHS["model"])
    firmware_version: str | None = Field(default=None, max_length=FIELD_LENGTHS["firmware_version"])
    serial: str | None = Field(default=None, max_length=FIELD_LENGTHS["serial"])

    @field_validator("vendor", "model", "firmware_version", "serial")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _UNSTORABLE.search(value):
            raise ValueError("holds control characters")
        if value != value.strip() or not value:
            raise ValueError("empty, or spaces at either end (leave the field out instead)")
        return value

    def fields(self) -> dict[str, str]:
        """The reported values by device column."""
        return {k: v for k in FIELD_LENGTHS if (v := getattr(self, k)) is not None}


class DeviceInfoBatch(BaseModel):
    """A batch of reports from one gateway's agent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: list[DeviceInfoReport] = Field(min_length=1, max_length=MAX_REPORTS)

    @field_validator("devices")
    @classmethod
    def _once_each(cls, value: list[DeviceInfoReport]) -> list[DeviceInfoReport]:
        ids = [r.device_id for r in value]
        if len(set(ids)) != len(ids):
            raise ValueError("a device appears twice in one batch")
        return value


Outcome = Literal["changed", "unchanged", "refused"]


class DeviceInfoResult(BaseModel):
    """What became of one report."""

    device_id: str
    outcome: Outcome
    reason: str = ""


class DeviceInfoAnswer(BaseModel):
    """The answer to a batch: one result per report, in order."""

    gateway_id: str
    results: list[DeviceInfoResult]


def _refusal(device: Device | None, gateway_id: str) -> str | None:
    if device is None or device.gateway_id != gateway_id:
        # An unknown device and another gateway's read the same: no probing for ids.
        return f"not a device of gateway {gateway_id!r}"
    if device.state == "retired":
        return "retired"
    return None


def _changes(device: Device, report: DeviceInfoReport) -> dict[str, str]:
    return {k: v for k, v in report.fields().items() if getattr(device, k) != v}


def record_device_info(
    service: ServiceCore, gateway_id: str, reports: Sequence[DeviceInfoReport], *, actor: str
) -> list[DeviceInfoResult]:
    """Write what changed of each report to its device; refuse devices not of the gateway."""
    ids = [r.device_id for r in reports]
    with service.database.session() as session:
        devices = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(ids)))}
        # Most reports repeat what is stored (an agent's restart): answer them unwritten.
        if not any(
            _refusal(devices.get(r.device_id), gateway_id) is None
            and _changes(devices[r.device_id], r)
            for r in reports
        ):
            return [_unwritten(devices.get(r.device_id), gateway_id, r.device_id) for r in reports]
    results: list[DeviceInfoResult] = []
    with service.write_transaction() as (session, _pending, _issued):
        # Locks (and on SQLite takes the write lock) before reading the rows it changes.
        service.lock_row(session, Device, ids[0])
        rows = select(Device).where(Device.id.in_(ids)).with_for_update()
        devices = {d.id: d for d in session.scalars(rows)}
        changed = False
        now = utc_now()
        for report in reports:
            device = devices.get(report.device_id)
            refusal = _refusal(device, gateway_id)
            if refusal is not None or device is None:
                results.append(
                    DeviceInfoResult(
                        device_id=report.device_id, outcome="refused", reason=refusal or ""
                    )
                )
                continue
            changes = _changes(device, report)
            if not changes:
                results.append(DeviceInfoResult(device_id=device.id, outcome="unchanged"))
                continue
            before = {k: getattr(device, k) for k in changes}
            for key, value in changes.items():
                setattr(device, key, value)
            device.updated_at = now
            service._audit(
                session,
                actor=actor,
                action="device_info",
                kind="device",
                key=device.id,
                before=before,
                after=changes,
            )
            changed = True
            results.append(DeviceInfoResult(device_id=device.id, outcome="changed"))
        if changed:
            service.bump_revision(session)
    return results


def _unwritten(device: Device | None, gateway_id: str, device_id: str) -> DeviceInfoResult:
    refusal = _refusal(device, gateway_id)
    if refusal is not None:
        return DeviceInfoResult(device_id=device_id, outcome="refused", reason=refusal)
    return DeviceInfoResult(device_id=device_id, outcome="unchanged")


def device_info_router(service: ServiceCore, prefix: str = "/api/v1") -> APIRouter:
    """The route a gateway's agent reports its devices' identities to."""
    router = APIRouter(route_class=AuthFirstRoute)

    @router.put(f"{prefix}/gateways/{{gateway_id}}/device-info", tags=["gateways"])
    def report_device_info(
        who: DeviceInfoWriter, gateway_id: str, body: DeviceInfoBatch
    ) -> DeviceInfoAnswer:
        """Record what the gateway's devices say they are; only changes are written."""
        if who.gateway_id is not None and who.gateway_id != gateway_id:
            raise StarletteHTTPException(
                403,
                f"token {who.token_id} belongs to gateway {who.gateway_id!r}, not {gateway_id!r}",
            )
        results = record_device_info(service, gateway_id, body.devices, actor=who.actor)
        return DeviceInfoAnswer(gateway_id=gateway_id, results=results)

    return router
