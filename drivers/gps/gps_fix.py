"""The GPS metric schema: what a tracker on a BRT bus or garbage truck publishes.

Trackers publish the contract themselves (``drivers.contract.device_topic``); this schema is
what their metrics must satisfy, used by the simulated vehicle and available to the hub.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drivers.framework import Reading


class GpsFixError(ValueError):
    """A GPS fix is out of range or malformed; the message names the metric."""


class GpsMetrics(BaseModel):
    """Range-checked GPS metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    speed_kmh: float = Field(ge=0, le=250)
    heading: float = Field(ge=0, lt=360)
    satellites: int | None = Field(default=None, ge=0, le=64)
    hdop: float | None = Field(default=None, ge=0, le=100)
    off_route_m: float | None = Field(default=None, ge=0, le=20_000_000)


def validate_gps_metrics(metrics: dict[str, Any]) -> GpsMetrics:
    """Check a payload's metrics; GpsFixError names the metric and the reason."""
    try:
        return GpsMetrics.model_validate(metrics)
    except ValidationError as err:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise GpsFixError(reasons) from err


@dataclass(frozen=True, slots=True, kw_only=True)
class GpsFix:
    """One position of a vehicle."""

    lat: float
    lon: float
    speed_kmh: float
    heading: float
    # Metres from the vehicle's route, where it has one (drivers.gps.routes).
    off_route_m: float | None = None

    def reading(self, device_id: str, ts: datetime, seq: int) -> Reading:
        """The fix as a contract reading (validated first)."""
        metrics: dict[str, Any] = {
            "lat": self.lat,
            "lon": self.lon,
            "speed_kmh": self.speed_kmh,
            "heading": self.heading,
        }
        if self.off_route_m is not None:
            metrics["off_route_m"] = self.off_route_m
        checked = validate_gps_metrics(metrics)
        return Reading(
            device_id=device_id, ts=ts, seq=seq, metrics=checked.model_dump(exclude_none=True)
        )


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from one point to the next, 0-360 degrees clockwise from north."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dlon = math.radians(lon2 - lon1)
    x = math.sin(dlon) * math.cos(phi2)
    y = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlon)
    return (math.degrees(math.atan2(x, y)) + 360) % 360


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 6_371_000 * 2 * math.asin(math.sqrt(a))
