"""The demo's signal controllers: simulated NTCIP 1202 agents read by the real atcs driver.

Detectors are read through their controller: the driver reports them once per detector
period it sees (a new ``volumeOccupancySequence``), so the simulator counts, per
controller, the periods it has served and credits each of the controller's mapped
detectors with one ``atcs_detector`` point per period (``measurement_stats``), for the
bench's produced-vs-written check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.atcs import DETECTOR_MEASUREMENT
from drivers.atcs import ntcip_objects as ntcip
from drivers.atcs.simulated_controller import SimulatedController
from drivers.simulation import SimulatedDevice, SimulatorContext, SimulatorStats
from drivers.snmp.simulated_agent import SimulatedTarget, SimValue
from drivers.snmp.simulated_fleet import SYNC_S, SnmpFleetSimulator

DETECTOR_TYPE = "ntcip_1202_detector"  # the family's detector type (read by its parent)


@dataclass(slots=True)
class CountingController(SimulatedController):
    """A simulated controller that counts the detector periods it has served."""

    periods_served: int = 0
    last_sequence: int | None = None

    def objects(self) -> Mapping[str, SimValue]:
        """The controller's objects; a new period's first answer counts that period."""
        out = SimulatedController.objects(self)  # slots dataclass: no zero-argument super()
        sequence = out[ntcip.VOLUME_OCCUPANCY_SEQUENCE][1]
        if sequence != self.last_sequence:
            self.last_sequence = int(sequence)
            self.periods_served += 1
        return out


def _config(_device: SimulatedDevice) -> dict[str, Any]:
    # A controller's own ``detectors`` map (number -> detector device id) is kept as the
    # fleet file gives it: its detectors are read through it, not served themselves.
    return {"timeout_s": 5, "request_timeout_s": 1.5, "retries": 1}


def _served(devices: Sequence[SimulatedDevice]) -> list[SimulatedDevice]:
    """The controllers: a detector has no address of its own (its controller answers)."""
    return [d for d in devices if d.device_type != DETECTOR_TYPE]


def _detector_ids(device: SimulatedDevice) -> list[str]:
    detectors = device.driver_config.get("detectors")
    return [str(v) for v in detectors.values()] if isinstance(detectors, Mapping) else []


class AtcsSimulator(SnmpFleetSimulator):
    """Simulated NTCIP controllers; the fleet's detector devices are left to them."""

    child_device_type = DETECTOR_TYPE

    def __init__(self) -> None:
        super().__init__("atcs", self._target, _config)
        self.detector_stats = SimulatorStats()
        # Points made readable for measurements other than the family's own.
        self.measurement_stats: Mapping[str, SimulatorStats] = {
            DETECTOR_MEASUREMENT: self.detector_stats
        }
        self._controllers: dict[str, tuple[CountingController, list[str]]] = {}

    def _target(self, device: SimulatedDevice, ctx: SimulatorContext) -> SimulatedTarget:
        # Simulated time: the cycle and the detector periods run at the demo's speed.
        controller = CountingController(
            clock=ctx.clock.elapsed_s, pattern=1 + len(device.device_id) % 6
        )
        self._controllers[device.device_id] = (controller, _detector_ids(device))
        return controller

    def map_children(
        self, driver_config: Mapping[str, Any], child_ids: Sequence[str]
    ) -> dict[str, Any]:
        """The controller's config with its detectors numbered 1.. in ``child_ids`` order."""
        detectors = {str(n): device_id for n, device_id in enumerate(child_ids, start=1)}
        return {**driver_config, "detectors": detectors}

    def assign_addresses(
        self, devices: Sequence[SimulatedDevice], first_port: int, host: str = "127.0.0.1"
    ) -> dict[str, SimulatedDevice]:
        """One UDP port per controller (detectors keep none)."""
        return super().assign_addresses(_served(devices), first_port, host)

    async def run(self, devices: Sequence[SimulatedDevice], ctx: SimulatorContext) -> None:
        """Serve the controllers until cancelled, crediting their detectors' periods."""
        self.detector_stats.reset()  # a new run, as the runner resets ``stats``
        counted: dict[str, int] = {}
        counter = asyncio.create_task(self._count_detectors(counted))
        try:
            await super().run(_served(devices), ctx)
        finally:
            counter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await counter
            self._credit_detectors(counted)  # the periods served since the last sync
            self._controllers.clear()

    async def _count_detectors(self, counted: dict[str, int]) -> None:
        while True:
            await asyncio.sleep(SYNC_S)
            self._credit_detectors(counted)

    def _credit_detectors(self, counted: dict[str, int]) -> None:
        for device_id, (controller, detector_ids) in self._controllers.items():
            new = controller.periods_served - counted.get(device_id, 0)
            if new > 0:
                counted[device_id] = controller.periods_served
                for detector_id in detector_ids:
                    self.detector_stats.produced(detector_id, new)


SIMULATOR = AtcsSimulator()
