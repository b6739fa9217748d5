"""The NTCIP 1202 driver of the atcs family: one signal controller and its detectors.

One poll is one or a few GETs of exact instances (the controller's scalars, its phase
status groups and its detectors' volume, occupancy and alarms): the objects are known, so
GET beats a walk. A detector's reading goes to its own registry device (family
``atcs_detector``, tag ``detector``), named in the controller's ``detectors`` config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from pydantic import Field, field_validator

from drivers.atcs import ntcip_objects as ntcip
from drivers.framework import DeviceSpec, DriverConfig, MetricValue, Reading, utc_now
from drivers.snmp import SnmpTargetConfig, SnmpValue, Unsupported, client_for_family
from drivers.snmp.values import WrongTypeError, integer

log = logging.getLogger(__name__)
FAMILY_NAME: Final = "atcs"
OIDS_PER_GET: Final = 40  # keeps a v1/v2c response well under 1,472 bytes of UDP payload


class NtcipControllerConfig(SnmpTargetConfig):
    """An NTCIP 1202 controller: SNMP target, phase groups, detectors and their devices."""

    phase_groups: int = Field(default=2, ge=1, le=4, description="8 phases per group")
    detectors: dict[int, str] = Field(
        default_factory=dict,
        description="detector number -> the registry device id of that detector",
    )

    @field_validator("detectors")
    @classmethod
    def _detector_numbers(cls, value: dict[int, str]) -> dict[int, str]:
        for number, device_id in value.items():
            if not 1 <= number <= 255:
                raise ValueError(f"detector {number}: numbers are 1-255")
            if not device_id:
                raise ValueError(f"detector {number}: empty device id")
        if len(set(value.values())) != len(value):
            raise ValueError("a device id is given to two detectors")
        return value


class NtcipController:
    """Polls one controller: a controller Reading plus one Reading per detector period."""

    def __init__(self, spec: DeviceSpec, config: NtcipControllerConfig) -> None:
        self.device_id = spec.device_id
        self.config = config
        self.groups = tuple(range(1, config.phase_groups + 1))
        self.oids: list[str] = list(ntcip.SCALARS)
        for column in ntcip.PHASE_COLUMNS:
            self.oids += [ntcip.phase_status_group(column, g) for g in self.groups]
        for number in sorted(config.detectors):
            self.oids += [
                ntcip.detector_volume(number),
                ntcip.detector_occupancy(number),
                ntcip.detector_alarms(number),
            ]
        self._sequence: int | None = None
        self._seq = 0
        self._wrong_logged: set[str] = set()

    async def poll(self) -> list[Reading]:
        """GET everything, decode; raises SnmpError (a DriverError) when the agent fails."""
        client = client_for_family(FAMILY_NAME)
        values: dict[str, SnmpValue | Unsupported] = {}
        for start in range(0, len(self.oids), OIDS_PER_GET):
            chunk = self.oids[start : start + OIDS_PER_GET]
            values.update(await client.get(self.device_id, self.config, chunk))
        return self.decode(values)

    def decode(self, values: Mapping[str, SnmpValue | Unsupported]) -> list[Reading]:
        """Values to the controller's Reading and its detectors' Readings."""
        now = utc_now()
        self._seq += 1
        metrics: dict[str, MetricValue] = {}
        mode = self._int(values, ntcip.UNIT_CONTROL_STATUS, "unitControlStatus")
        if mode is not None:
            metrics["control_mode"] = ntcip.control_mode(mode)
        flash = self._int(values, ntcip.UNIT_FLASH_STATUS, "unitFlashStatus")
        if flash is not None:
            metrics["flash_state"] = ntcip.flash_state(flash)
            metrics["flash"] = flash not in (1, 2)
        for oid, name, names in (
            (ntcip.UNIT_ALARM_STATUS_1, "unitAlarmStatus1", ntcip.ALARM_1_BITS),
            (ntcip.UNIT_ALARM_STATUS_2, "unitAlarmStatus2", ntcip.ALARM_2_BITS),
            (ntcip.SHORT_ALARM_STATUS, "shortAlarmStatus", ntcip.SHORT_ALARM_BITS),
        ):
            word = self._int(values, oid, name)
            if word is not None:
                metrics.update(ntcip.bits(word, names))
        pattern = self._int(values, ntcip.COORD_PATTERN_STATUS, "coordPatternStatus")
        if pattern is not None:
            metrics["pattern"] = pattern
            metrics["pattern_mode"] = ntcip.pattern_mode(pattern)
        cycle = self._int(values, ntcip.COORD_CYCLE_STATUS, "coordCycleStatus")
        if cycle is not None:
            metrics["cycle_s"] = cycle
        for column, metric in ntcip.PHASE_COLUMNS.items():
            masks = []
            for group in self.groups:
                mask = self._int(values, ntcip.phase_status_group(column, group), metric)
                if mask is None:
                    break
                masks.append((group, mask))
            else:
                metrics[metric] = ntcip.phase_list(ntcip.phases_in(masks))
        readings = [Reading(device_id=self.device_id, ts=now, metrics=metrics, seq=self._seq)]
        sequence = self._int(values, ntcip.VOLUME_OCCUPANCY_SEQUENCE, "volumeOccupancySequence")
        if sequence is None:
            return readings
        new_period, missed = ntcip.missed_periods(self._sequence, sequence)
        self._sequence = sequence
        metrics["detector_periods_missed"] = missed
        if not new_period:
            return readings  # the same period again: its counts were already reported
        period = self._int(values, ntcip.VOLUME_OCCUPANCY_PERIOD, "volumeOccupancyPeriod")
        for number, device_id in sorted(self.config.detectors.items()):
            detector = self._detector(values, number, period)
            if detector:
                readings.append(
                    Reading(device_id=device_id, ts=now, metrics=detector, seq=self._seq)
                )
        return readings

    def _detector(
        self, values: Mapping[str, SnmpValue | Unsupported], number: int, period: int | None
    ) -> dict[str, MetricValue]:
        out: dict[str, MetricValue] = {}
        volume = self._int(values, ntcip.detector_volume(number), f"detectorVolume.{number}")
        if volume is not None:
            out["volume_overflow"] = volume == ntcip.VOLUME_OVERFLOW
            if volume != ntcip.VOLUME_OVERFLOW:
                out["volume"] = volume
        faults = []
        code = self._int(values, ntcip.detector_occupancy(number), f"detectorOccupancy.{number}")
        if code is not None:
            decoded = ntcip.occupancy(code)
            if decoded.pct is not None:
                out["occupancy_pct"] = decoded.pct
            else:
                faults.append(decoded.fault)
        alarms = self._int(values, ntcip.detector_alarms(number), f"vehicleDetectorAlarms.{number}")
        if alarms is not None:
            out["alarms"] = alarms
            faults += [n for n, on in ntcip.bits(alarms, ntcip.DETECTOR_ALARM_BITS).items() if on]
        if code is not None or alarms is not None:
            out["fault"] = ",".join(dict.fromkeys(faults)) or "ok"
        if out and period is not None:
            out["period_s"] = period
        return out

    def _int(
        self, values: Mapping[str, SnmpValue | Unsupported], oid: str, name: str
    ) -> int | None:
        """An integer object, or None when unsupported or of the wrong type (logged once)."""
        try:
            value = integer(values.get(oid, ntcip_unsupported()), name)
        except WrongTypeError as err:
            if oid not in self._wrong_logged:
                self._wrong_logged.add(oid)
                log.warning("device %s: %s; that metric is left out", self.device_id, err)
            return None
        return None if isinstance(value, Unsupported) else value

    async def close(self) -> None:
        """Nothing per device: the family's engine is shared."""


def ntcip_unsupported() -> Unsupported:
    """The value of an object the reply lacks."""
    return Unsupported()


def create_controller(spec: DeviceSpec, config: DriverConfig) -> NtcipController:
    """The family's factory: a poller for one controller."""
    assert isinstance(config, NtcipControllerConfig)
    return NtcipController(spec, config)
