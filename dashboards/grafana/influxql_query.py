"""An InfluxQL target for grafana-foundation-sdk panels (the SDK ships no InfluxDB query type).

The JSON is what Grafana's InfluxDB data source saves for a raw InfluxQL query in the
query editor's raw mode: ``query``, ``rawQuery``, ``resultFormat``, ``alias``.
"""

from __future__ import annotations

from typing import Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

DATASOURCE_UID = "kotahub-influxdb"
DATASOURCE = dashboard.DataSourceRef(type_val="influxdb", uid=DATASOURCE_UID)

ResultFormat = Literal["time_series", "table"]


class InfluxQLTarget(cogvariants.Dataquery):
    """One raw InfluxQL query of a panel."""

    def __init__(
        self,
        *,
        ref_id: str = "A",
        query: str = "",
        result_format: ResultFormat = "time_series",
        alias: str | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias

    def to_json(self) -> dict[str, object]:
        """The target as Grafana stores it."""
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "datasource": DATASOURCE,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        return payload


class InfluxQL(cogbuilder.Builder[InfluxQLTarget]):
    """Builder of an ``InfluxQLTarget``, in the SDK's fluent style."""

    def __init__(self, query: str) -> None:
        self._internal = InfluxQLTarget(query=query)

    def build(self) -> InfluxQLTarget:
        """The target."""
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        """Query letter (A, B, ...)."""
        self._internal.ref_id = ref_id
        return self

    def table(self) -> Self:
        """Return rows as a table (maps, tables, stats over tags)."""
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        """Series name pattern: ``$tag_device_id``, ``$col``..."""
        self._internal.alias = alias
        return self
