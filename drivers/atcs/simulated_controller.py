"""A simulated NTCIP 1202 controller: a real cycle, counting detectors, injectable faults.

Served by ``drivers.snmp.simulated_agent`` (real SNMP on UDP). Time is a parameter
(``clock``), so tests step it instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from drivers.atcs import ntcip_objects as ntcip
from drivers.snmp.simulated_agent import SimulatedTarget, SimValue

# A two-ring, eight-phase cycle as four stages: (green phases, green s); 4 s yellow each.
STAGES: tuple[tuple[tuple[int, ...], int], ...] = (
    ((2, 6), 30),
    ((3, 7), 12),
    ((4, 8), 20),
    ((1, 5), 12),
)
YELLOW_S = 4
ALL_PHASES = tuple(range(1, 9))


def cycle_length() -> int:
    """The simulated cycle in seconds."""
    return sum(green + YELLOW_S for _, green in STAGES)


def phase_state(t: float) -> tuple[set[int], set[int]]:
    """(greens, yellows) at ``t`` seconds into the run."""
    offset = t % cycle_length()
    for phases, green in STAGES:
        if offset < green:
            return set(phases), set()
        offset -= green
        if offset < YELLOW_S:
            return set(), set(phases)
        offset -= YELLOW_S
    return set(), set()


def mask(phases: set[int], group: int) -> int:
    """The bitmask of ``phases`` in phase group ``group``."""
    return sum(1 << (p - 8 * (group - 1) - 1) for p in phases if 0 < p - 8 * (group - 1) <= 8)


@dataclass(slots=True)
class SimulatedController(SimulatedTarget):
    """Controller state; faults: ``open_loop`` detectors, ``mmu_flash``, ``power_restart``."""

    detectors: int = 8
    period_s: int = 60
    pattern: int = 3
    clock: Callable[[], float] = time.monotonic
    open_loop: set[int] = field(default_factory=set)
    mmu_flash: bool = False
    power_restart: bool = False
    started: float = 0.0
    sequence_offset: int = 0

    def __post_init__(self) -> None:
        self.started = self.clock()

    def restart(self) -> None:
        """A power restart: the cycle starts over and powerRestart is set until read."""
        self.started = self.clock()
        self.power_restart = True

    def objects(self) -> Mapping[str, SimValue]:
        """The controller's objects now (reading clears powerRestart, as on a real unit)."""
        t = self.clock() - self.started
        greens, yellows = phase_state(t)
        if self.mmu_flash:
            greens, yellows = set(), set()
        reds = set(ALL_PHASES) - greens - yellows
        out: dict[str, SimValue] = {
            ntcip.MAX_PHASES: ("integer", 8),
            ntcip.UNIT_CONTROL_STATUS: ("integer", 6),
            ntcip.UNIT_FLASH_STATUS: ("integer", 6 if self.mmu_flash else 2),
            ntcip.UNIT_ALARM_STATUS_2: ("integer", 1 if self.power_restart else 0),
            ntcip.UNIT_ALARM_STATUS_1: ("integer", (1 << 4) if self.mmu_flash else 1 << 7),
            ntcip.SHORT_ALARM_STATUS: (
                "integer",
                (1 << 5 if self.open_loop else 0) | (1 << 7 if self.mmu_flash else 0),
            ),
            ntcip.COORD_PATTERN_STATUS: ("integer", 255 if self.mmu_flash else self.pattern),
            ntcip.COORD_CYCLE_STATUS: ("integer", cycle_length()),
            ntcip.VOLUME_OCCUPANCY_SEQUENCE: ("integer", self.sequence(t)),
            ntcip.VOLUME_OCCUPANCY_PERIOD: ("integer", self.period_s),
        }
        self.power_restart = False
        for group in (1, 2):
            for column, phases in (
                (2, reds),
                (3, yellows),
                (4, greens),
                (5, reds | yellows),
                (6, set()),
                (7, greens & {2, 4, 6, 8}),
                (8, reds & {1, 3, 5, 7}),
                (9, set()),
            ):
                out[ntcip.phase_status_group(column, group)] = ("integer", mask(phases, group))
        period = int(t // self.period_s)
        for number in range(1, self.detectors + 1):
            if number in self.open_loop:
                volume, occupancy, alarms = 0, 212, 1  # open loop: no activity
            else:
                volume = (period * 7 + number * 3) % 40 + 5
                occupancy = min(200, volume * 3)
                alarms = 0
            out[ntcip.detector_volume(number)] = ("integer", volume)
            out[ntcip.detector_occupancy(number)] = ("integer", occupancy)
            out[ntcip.detector_alarms(number)] = ("integer", alarms)
        return out

    def sequence(self, t: float) -> int:
        """volumeOccupancySequence: completed periods modulo 256."""
        return (int(t // self.period_s) + self.sequence_offset) % ntcip.SEQUENCE_MODULO
