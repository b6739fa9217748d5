"""The demo's SNMP families: serve a fleet's devices as simulated agents, one UDP port each.

Shared by ``drivers/atcs/simulator.py`` and ``drivers/wifi/simulator.py``: ports are
assigned from ``first_port`` in device-id order (so a registered fleet keeps them), a
device killed on the fault board goes silent. Each device's requests are grouped into the
agent's polls (``drivers.simulation.PollCounter``, spanning the device's ``timeout_s``):
a poll whose last request was answered is one produced point, however many requests and
retries it took; one left unanswered is a failed poll (``stats.polls_failed``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

from drivers.patient_timeout import longest_s
from drivers.simulation import PollCounter, SimulatedDevice, SimulatorContext, SimulatorStats
from drivers.snmp.simulated_agent import SimulatedAgents, SimulatedTarget

log = logging.getLogger(__name__)
SYNC_S: Final = 2.0
DEFAULT_TIMEOUT_S: Final = 5.0  # SnmpTargetConfig's timeout_s, when the config sets none


class SnmpFleetSimulator:
    """Serves one family's devices on loopback UDP; ``make_target`` builds each device."""

    def __init__(
        self,
        family: str,
        make_target: Callable[[SimulatedDevice, SimulatorContext], SimulatedTarget],
        config: Callable[[SimulatedDevice], dict[str, Any]] | None = None,
    ) -> None:
        self.family = family
        self.stats = SimulatorStats()
        self.targets: dict[str, SimulatedTarget] = {}
        self._make_target = make_target
        self._config = config

    def assign_addresses(
        self, devices: Sequence[SimulatedDevice], first_port: int, host: str = "127.0.0.1"
    ) -> dict[str, SimulatedDevice]:
        """One UDP port per device, from ``first_port`` in device-id order."""
        out: dict[str, SimulatedDevice] = {}
        for offset, device in enumerate(sorted(devices, key=lambda d: d.device_id)):
            config = dict(device.driver_config)
            if self._config is not None:
                config.update(self._config(device))
            out[device.device_id] = replace(
                device, address=f"{host}:{first_port + offset}", driver_config=config
            )
        return out

    def ports_used(self, devices: Sequence[SimulatedDevice]) -> set[int]:
        """The (UDP) ports the devices' addresses name."""
        return {int(d.address.rpartition(":")[2]) for d in devices if d.address}

    async def run(self, devices: Sequence[SimulatedDevice], ctx: SimulatorContext) -> None:
        """Serve every device until cancelled; faults from the board make a device silent."""
        raise_open_files_limit(len(devices) + 256)  # one socket per simulated device
        agents = SimulatedAgents()
        try:
            for device in devices:
                if not device.address:
                    log.warning("%s device %s has no address", self.family, device.device_id)
                    continue
                host, _sep, port = device.address.rpartition(":")
                target = self._make_target(device, ctx)
                # The agent's poll lasts up to its timeout, stretched by its own lateness.
                span_s = longest_s(float(device.driver_config.get("timeout_s", DEFAULT_TIMEOUT_S)))
                target.polls = PollCounter(self.stats, device.device_id, span_s)
                try:
                    await agents.serve(target, int(port), host)
                except OSError as err:  # one taken port costs that device only
                    self.stats.failed(device.device_id)
                    log.error(
                        "%s %s: cannot serve %s: %s",
                        self.family,
                        device.device_id,
                        device.address,
                        err,
                    )
                    continue
                self.targets[device.device_id] = target
            log.info("%s: %d SNMP agents on loopback", self.family, len(self.targets))
            while True:
                for device_id, target in self.targets.items():
                    target.silent = ctx.faults.is_dead(device_id)
                    if target.polls is not None:
                        target.polls.flush()
                await asyncio.sleep(SYNC_S)
        finally:
            agents.close()
            for target in self.targets.values():
                if target.polls is not None:
                    target.polls.flush(force=True)  # the polls still open count as they stand
            self.targets.clear()


def raise_open_files_limit(wanted: int) -> None:
    """Lift the soft open-files limit towards ``wanted`` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log.info("open-files limit raised from %d to %d for the simulated agents", soft, target)
