"""NTCIP 1202 objects the ATCS driver reads, and their decoding into named values.

Pure functions on plain integers, so hypothesis can test them without an agent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

BASE: Final = "1.3.6.1.4.1.1206.4.2.1"
MAX_PHASES: Final = f"{BASE}.1.1.0"
UNIT_CONTROL_STATUS: Final = f"{BASE}.3.5.0"
UNIT_FLASH_STATUS: Final = f"{BASE}.3.6.0"
UNIT_ALARM_STATUS_2: Final = f"{BASE}.3.7.0"
UNIT_ALARM_STATUS_1: Final = f"{BASE}.3.8.0"
SHORT_ALARM_STATUS: Final = f"{BASE}.3.9.0"
COORD_PATTERN_STATUS: Final = f"{BASE}.4.10.0"
COORD_CYCLE_STATUS: Final = f"{BASE}.4.12.0"
VOLUME_OCCUPANCY_SEQUENCE: Final = f"{BASE}.2.5.1.0"
VOLUME_OCCUPANCY_PERIOD: Final = f"{BASE}.2.5.2.0"
SCALARS: Final = (
    UNIT_CONTROL_STATUS,
    UNIT_FLASH_STATUS,
    UNIT_ALARM_STATUS_2,
    UNIT_ALARM_STATUS_1,
    SHORT_ALARM_STATUS,
    COORD_PATTERN_STATUS,
    COORD_CYCLE_STATUS,
    VOLUME_OCCUPANCY_SEQUENCE,
    VOLUME_OCCUPANCY_PERIOD,
)


def phase_status_group(column: int, group: int) -> str:
    """phaseStatusGroupTable column (2 reds ... 9 ped calls) of phase group ``group``."""
    return f"{BASE}.1.4.1.{column}.{group}"


def detector_alarms(detector: int) -> str:
    """vehicleDetectorAlarms of one detector."""
    return f"{BASE}.2.2.1.13.{detector}"


def detector_volume(detector: int) -> str:
    """detectorVolume of one detector (vehicles in the last period; 255 = overflow)."""
    return f"{BASE}.2.5.4.1.1.{detector}"


def detector_occupancy(detector: int) -> str:
    """detectorOccupancy of one detector (0-200 half percent; 210-217 fault codes)."""
    return f"{BASE}.2.5.4.1.2.{detector}"


# phaseStatusGroupTable column -> metric (the groups' bitmasks as phase lists).
PHASE_COLUMNS: Final = {
    2: "phases_red",
    3: "phases_yellow",
    4: "phases_green",
    5: "phases_dont_walk",
    6: "phases_ped_clear",
    7: "phases_walk",
    8: "vehicle_calls",
    9: "ped_calls",
}
CONTROL_MODES: Final = {
    1: "other",
    2: "system_control",
    3: "system_standby",
    4: "backup_mode",
    5: "manual",
    6: "timebase",
    7: "interconnect",
    8: "interconnect_backup",
}
FLASH_STATES: Final = {
    1: "other",
    2: "not_flash",
    3: "automatic",
    4: "local_manual",
    5: "fault_monitor",
    6: "mmu",
    7: "startup",
    8: "preempt",
}
ALARM_1_BITS: Final = (
    "alarm_cycle_fault",
    "alarm_coord_fault",
    "alarm_coord_fail",
    "alarm_cycle_fail",
    "alarm_mmu_flash",
    "alarm_local_flash",
    "alarm_local_free",
    "alarm_coord_active",
)
ALARM_2_BITS: Final = (
    "alarm_power_restart",
    "alarm_low_battery",
    "alarm_response_fault",
    "alarm_external_start",
    "alarm_stop_time",
    "alarm_offset_transitioning",
)
SHORT_ALARM_BITS: Final = (
    "alarm_preempt",
    "alarm_tf_flash",
    "alarm_local_cycle_zero",
    "alarm_local_override",
    "alarm_coord_alarm",
    "alarm_detector_fault",
    "alarm_non_critical",
    "alarm_critical",
)
# vehicleDetectorAlarms (NTCIP 1202 v02 5.3.2.13): bit -> fault name.
DETECTOR_ALARM_BITS: Final = (
    "no_activity",
    "max_presence",
    "erratic_output",
    "communications",
    "configuration",
    "reserved_5",
    "reserved_6",
    "other",
)
OCCUPANCY_FAULTS: Final = {
    210: "max_presence",
    211: "no_activity",
    212: "open_loop",
    213: "shorted_loop",
    214: "excessive_change",
    215: "reserved_215",
    216: "watchdog",
    217: "erratic_output",
}
PATTERN_FREE: Final = 254
PATTERN_FLASH: Final = 255
VOLUME_OVERFLOW: Final = 255
SEQUENCE_MODULO: Final = 256


def phases_in(groups: Iterable[tuple[int, int]]) -> list[int]:
    """Phase numbers set in (group, bitmask) pairs: bit b of group g is phase 8(g-1)+b+1."""
    phases = []
    for group, mask in groups:
        for bit in range(8):
            if mask >> bit & 1:
                phases.append(8 * (group - 1) + bit + 1)
    return sorted(phases)


def phase_list(phases: Iterable[int]) -> str:
    """Phases as the metric's string: ``"2,6"``, empty for none."""
    return ",".join(str(p) for p in phases)


def bits(value: int, names: tuple[str, ...]) -> dict[str, bool]:
    """A bitfield as named booleans (bit 0 first)."""
    return {name: bool(value >> bit & 1) for bit, name in enumerate(names)}


def control_mode(code: int) -> str:
    """unitControlStatus as a name (unknown codes as ``code_N``)."""
    return CONTROL_MODES.get(code, f"code_{code}")


def flash_state(code: int) -> str:
    """unitFlashStatus as a name (unknown codes as ``code_N``)."""
    return FLASH_STATES.get(code, f"code_{code}")


def pattern_mode(pattern: int) -> str:
    """coordPatternStatus: ``free`` (254), ``flash`` (255) or ``pattern``."""
    if pattern == PATTERN_FREE:
        return "free"
    if pattern == PATTERN_FLASH:
        return "flash"
    return "pattern"


@dataclass(frozen=True, slots=True)
class Occupancy:
    """A detectorOccupancy code decoded: a percentage or a named fault, never both."""

    pct: float | None
    fault: str


def occupancy(code: int) -> Occupancy:
    """0-200 -> 0-100 % in 0.5 % steps; 210-217 -> named fault; other codes -> ``code_N``."""
    if 0 <= code <= 200:
        return Occupancy(code / 2, "ok")
    name = OCCUPANCY_FAULTS.get(code)
    return Occupancy(None, name if name is not None else f"code_{code}")


def missed_periods(previous: int | None, current: int) -> tuple[bool, int]:
    """From two volumeOccupancySequence values: (a new period?, periods missed between).

    The sequence counts completed periods modulo 256: a step of k > 1 means k - 1
    periods were never read; no step means the period has not ended since.
    """
    if previous is None:
        return True, 0
    step = (current - previous) % SEQUENCE_MODULO
    if step == 0:
        return False, 0
    return True, step - 1
