"""Device types from the driver families' metric tables: seeding and the drift check.

A family (``drivers/<family>/``) declares its device types and, in its metric table, the
name, unit and type of every metric. ``kotahub registry types seed`` creates or updates
the registry's types from those declarations, and every type of a family the drivers know
may declare only metrics of that family's table, with the table's kind: the registry's
schema (what the hub enforces) and what the drivers send cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

from device_registry.errors import FieldError
from device_registry.schemas import DeviceTypeCreate, MetricSpec
from drivers.contract import MetricKind
from drivers.framework import DeviceTypeSpec, DriverFamily, discover_families


@cache
def driver_families() -> Mapping[str, DriverFamily]:
    """Every driver family, by name (discovered once: it imports the driver packages)."""
    return discover_families()


def family_metric_specs(family: DriverFamily, keys: Sequence[str]) -> list[MetricSpec]:
    """The registry's metric list for ``keys`` of a family's table, in the given order."""
    return [
        MetricSpec(name=m.key, unit=m.unit, kind=m.kind)
        for key in keys
        for m in (family.metric(key),)
    ]


def declared_type(family: DriverFamily, spec: DeviceTypeSpec) -> DeviceTypeCreate:
    """The registry type a family declares (in its own measurement when it names one)."""
    table = {m.key: m for m in family.type_table(spec)}
    return DeviceTypeCreate(
        name=spec.name,
        family=family.measurement(spec),
        protocol=spec.protocol,
        expected_interval_s=spec.expected_interval_s,
        metrics=[
            MetricSpec(name=key, unit=table[key].unit, kind=table[key].kind) for key in spec.metrics
        ],
        description=spec.description,
        influx_tag_keys=list(spec.influx_tag_keys),
    )


def measurement_schema(
    name: str, families: Mapping[str, DriverFamily]
) -> Mapping[str, MetricKind] | None:
    """Metric name -> kind of a measurement the drivers write, or None when none writes it.

    A family's own measurement has its table; a type that writes a measurement of its own
    (``atcs_detector``) has that type's table.
    """
    family = families.get(name)
    if family is not None:
        return family.metric_schema()
    for family in families.values():
        for spec in family.device_types:
            if spec.measurement == name:
                return {m.key: m.kind for m in family.type_table(spec)}
    return None


def check_family_metrics(
    family_name: str,
    metrics: Sequence[MetricSpec],
    families: Mapping[str, DriverFamily] | None = None,
) -> None:
    """Refuse a metric the family's table lacks, or declares with another kind.

    Types of a family no driver knows (cameras before their driver arrives) are not
    checked: nothing could drift from a table that does not exist.
    """
    table = measurement_schema(family_name, driver_families() if families is None else families)
    if table is None:
        return
    for index, metric in enumerate(metrics):
        kind = table.get(metric.name)
        if kind is None:
            raise FieldError(
                f"metrics.{index}.name",
                f"{metric.name!r} is not in the {family_name} family's metric table "
                f"(drivers/{family_name}/); it has {', '.join(sorted(table))}",
            )
        if metric.kind != kind:
            raise FieldError(
                f"metrics.{index}.kind",
                f"{metric.name} is {kind} in the {family_name} family's metric table, "
                f"not {metric.kind}",
            )
