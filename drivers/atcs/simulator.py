"""The demo's signal controllers: simulated NTCIP 1202 agents read by the real atcs driver."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from drivers.atcs.simulated_controller import SimulatedController
from drivers.simulation import SimulatedDevice, SimulatorContext
from drivers.snmp.simulated_agent import SimulatedTarget
from drivers.snmp.simulated_fleet import SnmpFleetSimulator


def _target(device: SimulatedDevice, ctx: SimulatorContext) -> SimulatedTarget:
    # Simulated time: the cycle and the detector periods run at the demo's speed.
    return SimulatedController(clock=ctx.clock.elapsed_s, pattern=1 + len(device.device_id) % 6)


def _config(_device: SimulatedDevice) -> dict[str, Any]:
    # A controller's own ``detectors`` map (number -> detector device id) is kept as the
    # fleet file gives it: its detectors are read through it, not served themselves.
    return {"timeout_s": 5, "request_timeout_s": 1.5, "retries": 1}


DETECTOR_TYPE = "ntcip_1202_detector"  # the family's detector type (read by its parent)


def _served(devices: Sequence[SimulatedDevice]) -> list[SimulatedDevice]:
    """The controllers: a detector has no address of its own (its controller answers)."""
    return [d for d in devices if d.device_type != DETECTOR_TYPE]


class AtcsSimulator(SnmpFleetSimulator):
    """Simulated NTCIP controllers; the fleet's detector devices are left to them."""

    child_device_type = DETECTOR_TYPE

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
        """Serve the controllers until cancelled."""
        await super().run(_served(devices), ctx)


SIMULATOR = AtcsSimulator("atcs", _target, _config)
