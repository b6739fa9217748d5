"""Last readings of a device from InfluxDB, for the registry's status endpoint and page.

``kotahub run`` plugs an ``InfluxLastReadings`` into the registry's web app as its
readings source (``device_registry.web_api.ReadingsSource``): the registry itself never
imports the hub, and without the source the page shows only what the hub pushed, which
under ``kotahub run`` is nothing.

The hub writes a device's telemetry to the measurement named after its family, one field
per metric (docs/ingest.md). Each metric is asked for on its own (``last("m")``) because
InfluxQL's ``last(*)`` returns one time for the whole row, and a metric reported less
often than the others would show the time of another.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from device_registry.registry_service import RegistryService
from hub.influxql import InfluxQL

# Every statement asks for one field of one device, so a device type with many metrics
# costs one HTTP request, not one per metric.
_STATEMENT = 'SELECT last("{field}") AS "{field}" FROM "{measurement}" WHERE "device_id" = \'{id}\''


@dataclass(frozen=True, slots=True, kw_only=True)
class LastReading:
    """One metric's newest value, its time and its unit (from the device type)."""

    value: float | int | bool | str
    time: dt.datetime
    unit: str


def _quote_ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _quote_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


class InfluxLastReadings:
    """The newest value of each of a device's metrics, read from InfluxDB (v1 /query)."""

    def __init__(self, service: RegistryService, influx: InfluxQL, *, database: str) -> None:
        self.service = service
        self.influx = influx
        self.database = database

    def readings(self, device_id: str) -> dict[str, LastReading]:
        """Each metric of the device's type that InfluxDB holds: value, time, unit.

        Metrics come from the device type's schema, so a field another device type wrote
        to the same measurement is not asked for. Raises ``NotFoundError`` for an unknown
        device and ``InfluxQueryError`` when InfluxDB does not answer.
        """
        device = self.service.get_device(device_id)
        metrics = self.service.get_type(device.device_type).metrics
        if not metrics:
            return {}
        statements = ";".join(
            _STATEMENT.format(
                field=_quote_ident(m.name),
                measurement=_quote_ident(device.family),
                id=_quote_string(device_id),
            )
            for m in metrics
        )
        # Each metric's series is named by its column (the alias); a metric never
        # written has no series at all.
        rows: dict[str, tuple[int, object]] = {}
        for series in self.influx.query(statements, database=self.database):
            for row in series.records():
                for name, value in row.items():
                    if name != "time" and value is not None:
                        rows[name] = (int(row["time"]), value)
        found: dict[str, LastReading] = {}
        for metric in metrics:
            if metric.name in rows:
                time_ms, value = rows[metric.name]
                found[metric.name] = LastReading(
                    value=value,  # type: ignore[arg-type]  # InfluxDB's JSON scalars
                    time=dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC),
                    unit=metric.unit,
                )
        return found

    def __call__(self, device_id: str) -> dict[str, float | int | bool | str] | None:
        """The readings source the web app calls: metric name to value, None when none.

        The page and ``kotahub devices status`` print these values with the unit of the
        device type's schema; ``readings`` also has each metric's time.
        """
        found = self.readings(device_id)
        return {name: reading.value for name, reading in found.items()} or None
