"""The demo's signal controllers: simulated NTCIP 1202 agents read by the real atcs driver."""

from __future__ import annotations

from typing import Any

from drivers.atcs.simulated_controller import SimulatedController
from drivers.simulation import SimulatedDevice, SimulatorContext
from drivers.snmp.simulated_agent import SimulatedTarget
from drivers.snmp.simulated_fleet import SnmpFleetSimulator


def _target(device: SimulatedDevice, ctx: SimulatorContext) -> SimulatedTarget:
    # Simulated time: the cycle and the detector periods run at the demo's speed.
    return SimulatedController(clock=ctx.clock.elapsed_s, pattern=1 + len(device.device_id) % 6)


def _config(_device: SimulatedDevice) -> dict[str, Any]:
    # Detectors stay unmapped here: the demo fleet registers them as MQTT stand-ins under
    # another gateway (see docs/drivers/atcs.md for the protocol-level set-up).
    return {"timeout_s": 5, "request_timeout_s": 1.5, "retries": 1}


SIMULATOR = SnmpFleetSimulator("atcs", _target, _config)
