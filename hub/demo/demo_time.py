"""Demo time and in-process agents: what lets one process run every gateway of a fleet.

``DemoTimeDirectory`` shows the hub and the agents each device's registered interval
divided by the demo's speed, so that silence is judged in demo time. ``AGENT_GATEWAY`` and
``route_ble_by_gateway`` let each in-process agent's BLE scanner hear the FAKE radio of its
own gateway (``drivers.ble.simulator`` routes a whole process to one gateway).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Any

from device_registry.database import RegistryDatabase
from device_registry.database_directory import DatabaseDeviceDirectory
from device_registry.directory import DeviceRecord

# A polled device is never asked more often than this, whatever the speed.
MIN_INTERVAL_S = 1.0


def scaled_record(record: DeviceRecord, speed: float) -> DeviceRecord:
    """The record as the demo's hub and agents see it: intervals divided by ``speed``."""
    if speed == 1:
        return record
    interval = max(MIN_INTERVAL_S, record.expected_interval_s / speed)
    config: Mapping[str, Any] = record.driver_config
    poll = config.get("poll_interval_s")
    if isinstance(poll, int | float) and not isinstance(poll, bool) and poll > 0:
        config = MappingProxyType({**config, "poll_interval_s": max(MIN_INTERVAL_S, poll / speed)})
    return dataclasses.replace(record, expected_interval_s=interval, driver_config=config)


class DemoTimeDirectory(DatabaseDeviceDirectory):
    """The registry's devices with their intervals in demo time (see the module's note)."""

    def __init__(self, database: RegistryDatabase, speed: float) -> None:
        self.speed = speed
        super().__init__(database)

    def replace(self, records: Iterable[DeviceRecord]) -> None:
        """Swap in a new snapshot, each record scaled to the demo's speed."""
        super().replace(scaled_record(r, self.speed) for r in records)


# The gateway whose agent runs in the current task: each agent's BLE scanner hears the
# FAKE radio of its own gateway, though all agents share this process (and bleak).
AGENT_GATEWAY: ContextVar[str | None] = ContextVar("demo_agent_gateway", default=None)


def route_ble_by_gateway(radio_dir: Path) -> Callable[[], None]:
    """Make bleak's scanner use the FAKE radio of the gateway whose agent creates it.

    ``drivers.ble.simulator`` routes one process to one gateway's radio; the demo runs an
    agent per gateway in one process, so the radio is chosen per agent task instead.
    Returns what undoes it.
    """
    import bleak

    from drivers.ble.simulator import simulated_radio_backend

    original = bleak.BleakScanner
    backends: dict[str, type[Any]] = {}

    class PerGatewayScanner(original):  # type: ignore[misc,valid-type]
        """bleak's scanner on the FAKE radio of the current agent's gateway."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            gateway = AGENT_GATEWAY.get()
            if gateway is not None and "backend" not in kwargs:
                if gateway not in backends:
                    backends[gateway] = simulated_radio_backend(radio_dir, gateway)
                kwargs["backend"] = backends[gateway]
            super().__init__(*args, **kwargs)

    bleak.BleakScanner = PerGatewayScanner  # type: ignore[misc]

    def undo() -> None:
        bleak.BleakScanner = original  # type: ignore[misc]

    return undo
