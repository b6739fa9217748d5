"""The flood family's device types: one per shipped register map, plus ``user_defined``.

A model's metrics are the ones its map publishes (an ``invalid_flag`` field publishes
``sensor_status = "invalid"`` instead of a value of its own); a user-defined map may read
any metric of the family's table, so that type declares the whole table.
"""

from __future__ import annotations

from drivers.flood.metrics import FLOOD_METRICS
from drivers.flood.register_map import USER_DEFINED, load_register_map, shipped_models
from drivers.framework import DeviceTypeSpec

PROTOCOL = "modbus_tcp"  # RTU framed over TCP is the device config's ``framing``
EXPECTED_INTERVAL_S = 300.0


def published_metrics(model: str) -> tuple[str, ...]:
    """The metrics a shipped model's register map publishes, in map order."""
    out: list[str] = []
    for field in load_register_map(model).fields:
        name = "sensor_status" if field.type == "invalid_flag" else field.metric
        if name not in out:
            out.append(name)
    return tuple(out)


def flood_device_types() -> tuple[DeviceTypeSpec, ...]:
    """A device type per shipped model (its map's metrics) and ``user_defined`` (all)."""
    types = []
    for model in shipped_models():
        if model == USER_DEFINED:
            metrics = tuple(m.key for m in FLOOD_METRICS)
            description = "Flood device with a register map in its driver config"
        else:
            metrics = published_metrics(model)
            description = load_register_map(model).description
        types.append(
            DeviceTypeSpec(
                name=model,
                protocol=PROTOCOL,
                expected_interval_s=EXPECTED_INTERVAL_S,
                metrics=metrics,
                description=description,
            )
        )
    return tuple(types)
