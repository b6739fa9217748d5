"""The atcs family's metric tables: ``atcs`` (controllers) and ``atcs_detector`` (detectors)."""

from __future__ import annotations

from drivers.atcs.ntcip_objects import (
    ALARM_1_BITS,
    ALARM_2_BITS,
    PHASE_COLUMNS,
    SHORT_ALARM_BITS,
)
from drivers.framework import Metric

ALARM_WORDS = {
    "alarm_cycle_fault": "Cycle fault (unitAlarmStatus1 bit 0).",
    "alarm_coord_fault": "Coordination fault (unitAlarmStatus1 bit 1).",
    "alarm_coord_fail": "Coordination failed (unitAlarmStatus1 bit 2).",
    "alarm_cycle_fail": "Cycle failed (unitAlarmStatus1 bit 3).",
    "alarm_mmu_flash": "MMU put the intersection in flash (unitAlarmStatus1 bit 4).",
    "alarm_local_flash": "Local flash switch on (unitAlarmStatus1 bit 5).",
    "alarm_local_free": "Running free locally (unitAlarmStatus1 bit 6).",
    "alarm_coord_active": "Coordination active (unitAlarmStatus1 bit 7).",
    "alarm_power_restart": "Power restarted since the last read (unitAlarmStatus2 bit 0).",
    "alarm_low_battery": "Low battery (unitAlarmStatus2 bit 1).",
    "alarm_response_fault": "Response fault (unitAlarmStatus2 bit 2).",
    "alarm_external_start": "External start (unitAlarmStatus2 bit 3).",
    "alarm_stop_time": "Stop time active (unitAlarmStatus2 bit 4).",
    "alarm_offset_transitioning": "Offset transitioning (unitAlarmStatus2 bit 5).",
    "alarm_preempt": "Preemption active (shortAlarmStatus bit 0).",
    "alarm_tf_flash": "Terminal and facilities flash (shortAlarmStatus bit 1).",
    "alarm_local_cycle_zero": "Local cycle zero (shortAlarmStatus bit 2).",
    "alarm_local_override": "Local override (shortAlarmStatus bit 3).",
    "alarm_coord_alarm": "Coordination alarm (shortAlarmStatus bit 4).",
    "alarm_detector_fault": "A detector is faulty (shortAlarmStatus bit 5).",
    "alarm_non_critical": "Non-critical alarm (shortAlarmStatus bit 6).",
    "alarm_critical": "Critical alarm (shortAlarmStatus bit 7).",
}
assert set(ALARM_WORDS) == {*ALARM_1_BITS, *ALARM_2_BITS, *SHORT_ALARM_BITS}

ATCS_METRICS: tuple[Metric, ...] = (
    Metric(key="control_mode", unit="", type="str", description="unitControlStatus by name."),
    Metric(key="flash", unit="", type="bool", description="The intersection is flashing."),
    Metric(key="flash_state", unit="", type="str", description="unitFlashStatus by name."),
    *(Metric(key=k, unit="", type="bool", description=d) for k, d in ALARM_WORDS.items()),
    Metric(key="pattern", unit="", type="int", description="coordPatternStatus (254, 255 too)."),
    Metric(key="pattern_mode", unit="", type="str", description="free, flash or pattern."),
    Metric(key="cycle_s", unit="s", type="int", description="coordCycleStatus: cycle time."),
    *(
        Metric(key=k, unit="", type="str", description=f"Phases in {k.replace('_', ' ')}.")
        for k in PHASE_COLUMNS.values()
    ),
    Metric(
        key="detector_periods_missed",
        unit="",
        type="int",
        description="Volume/occupancy periods that ended unread since the previous reading.",
    ),
    Metric(key="trap", unit="", type="str", description="Event: the trap's name."),
    Metric(key="trap_oid", unit="", type="str", description="Event: the trap's OID."),
)

ATCS_DETECTOR_METRICS: tuple[Metric, ...] = (
    Metric(key="volume", unit="veh", type="int", description="Vehicles in the last period."),
    Metric(key="volume_overflow", unit="", type="bool", description="Volume was 255 (overflow)."),
    Metric(
        key="occupancy_pct",
        unit="%",
        type="float",
        description="Occupancy, 0-100 in 0.5 % steps; absent when the code is a fault.",
    ),
    Metric(
        key="fault",
        unit="",
        type="str",
        description="ok, or the occupancy fault (open_loop, shorted_loop, ...) or alarm name.",
    ),
    Metric(key="alarms", unit="", type="int", description="vehicleDetectorAlarms, raw bits."),
    Metric(key="period_s", unit="s", type="int", description="volumeOccupancyPeriod."),
)
