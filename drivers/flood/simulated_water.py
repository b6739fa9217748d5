"""Simulated water for the demo: tide, afternoon storms, river response and pump basins.

Pure functions of simulated time (hours since the Unix epoch) and an area's name, so
every gauge and rain gauge of an area sees the same storm, and tests can check the
physics as properties without a server:

* the tide at coastal gauges: M2 (12.42 h) plus a smaller S2 (12.00 h) constituent;
* storms: most afternoons of the rainy season bring one convective storm to an area
  (14:00-19:00 WIB, 5-45 mm/h for 0.5-2 h), drawn from the area and the day;
* a gauge rises with its area's rain through a linear reservoir (time constant 1.5 h),
  ``lag_h`` later than the rain gauges tip, and a lowland gauge also with a share of the
  rain on the hills upstream of it (its ``catchment``), later still;
* a pump station's basin fills with that runoff (and with the tide, at the coast, when
  the gravity outlet is closed) and its pumps start and stop on level, with hysteresis.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

M2_PERIOD_H = 12.42
S2_PERIOD_H = 12.00
RESPONSE_TAU_H = 1.5
WIB_OFFSET_H = 7.0
METRES_PER_MM_H = 0.035  # a 30 mm/h storm raises a canal about 1 m at its peak


@dataclass(frozen=True, slots=True)
class Storm:
    """One rain event: start (hours since epoch), duration (h), intensity (mm/h)."""

    start_h: float
    duration_h: float
    mm_per_h: float


@dataclass(frozen=True, slots=True)
class Tributary:
    """An upstream area whose rain reaches a gauge: ``lag_h`` later, ``weight`` of it."""

    area: str
    lag_h: float
    weight: float


def tide_m(t_h: float, *, amplitude_m: float = 0.45, phase_h: float = 0.0) -> float:
    """Tide height about mean sea level at ``t_h``: M2 plus a quarter-size S2."""
    m2 = math.cos(2 * math.pi * (t_h - phase_h) / M2_PERIOD_H)
    s2 = math.cos(2 * math.pi * (t_h - phase_h) / S2_PERIOD_H)
    return amplitude_m * m2 + 0.25 * amplitude_m * s2


@lru_cache(maxsize=4096)
def storms_on_day(area: str, day: int) -> tuple[Storm, ...]:
    """The storms of an area on a day (days since epoch, WIB): deterministic."""
    rng = random.Random(f"{area.casefold()}:{day}")
    if rng.random() > 0.6:
        return ()
    local_start = rng.uniform(14.0, 19.0)
    start_h = day * 24 + local_start - WIB_OFFSET_H
    return (Storm(start_h, rng.uniform(0.5, 2.0), rng.uniform(5.0, 45.0)),)


def _storms_around(area: str, t_h: float, back_days: int = 2) -> list[Storm]:
    day = math.floor((t_h + WIB_OFFSET_H) / 24)
    return [s for d in range(day - back_days, day + 1) for s in storms_on_day(area, d)]


def rain_rate_mm_h(area: str, t_h: float) -> float:
    """Rain intensity in the area at ``t_h``."""
    return sum(
        s.mm_per_h
        for s in _storms_around(area, t_h, 0)
        if s.start_h <= t_h < s.start_h + s.duration_h
    )


def rain_total_mm(area: str, start_h: float, end_h: float) -> float:
    """Rain that fell in the area between two times (what the tipping bucket counts)."""
    if end_h <= start_h:
        return 0.0
    total = 0.0
    first = math.floor((start_h + WIB_OFFSET_H) / 24)
    last = math.floor((end_h + WIB_OFFSET_H) / 24)
    for day in range(first, last + 1):
        for s in storms_on_day(area, day):
            overlap = min(end_h, s.start_h + s.duration_h) - max(start_h, s.start_h)
            if overlap > 0:
                total += overlap * s.mm_per_h
    return total


def _pulse_response(t_h: float, duration_h: float, tau_h: float) -> float:
    """A linear reservoir's response (0..1) to a unit rectangular pulse that began t_h ago."""
    if t_h <= 0:
        return 0.0
    if t_h <= duration_h:
        return 1 - math.exp(-t_h / tau_h)
    return (1 - math.exp(-duration_h / tau_h)) * math.exp(-(t_h - duration_h) / tau_h)


def runoff_mm_h(
    area: str, t_h: float, *, lag_h: float = 1.0, tau_h: float = RESPONSE_TAU_H
) -> float:
    """The area's rain as the river feels it: smoothed and ``lag_h`` later."""
    at = t_h - lag_h
    return sum(
        s.mm_per_h * _pulse_response(at - s.start_h, s.duration_h, tau_h)
        for s in _storms_around(area, at)
    )


def gauge_level_m(
    area: str,
    t_h: float,
    *,
    base_m: float = 0.3,
    coastal: bool = False,
    lag_h: float = 1.0,
    tide_phase_h: float = 0.0,
    catchment: Sequence[Tributary] = (),
) -> float:
    """A canal or river level: base, the tide at the coast, the area's and upstream runoff."""
    level = base_m + METRES_PER_MM_H * runoff_mm_h(area, t_h, lag_h=lag_h)
    for upstream in catchment:
        # Rain on the hills reaches a lowland gauge later, and only a share of it.
        level += (
            upstream.weight
            * METRES_PER_MM_H
            * runoff_mm_h(upstream.area, t_h, lag_h=upstream.lag_h)
        )
    if coastal:
        level += tide_m(t_h, phase_h=tide_phase_h)
    return level


@dataclass(slots=True, kw_only=True)
class PumpBasin:
    """A pump station's basin and pumps; ``advance`` integrates level and control."""

    area: str
    pumps: int = 3
    start_m: float = 1.0
    stop_m: float = 0.4
    coastal: bool = False
    level_m: float = 0.5
    pump_rate_m_h: float = 0.35  # what one pump lowers the basin per hour
    running: list[bool] = field(default_factory=list)
    run_hours: float = 0.0
    t_h: float | None = None

    def __post_init__(self) -> None:
        if not self.running:
            self.running = [False] * self.pumps

    def inflow_m_h(self, t_h: float, extra_m_h: float = 0.0) -> float:
        """Runoff into the basin, plus the sea when the tide closes the gravity outlet."""
        inflow = 0.08 + 0.045 * runoff_mm_h(self.area, t_h, lag_h=0.3)
        if self.coastal:
            inflow += max(0.0, tide_m(t_h)) * 0.25
        return inflow + extra_m_h

    def _control(self) -> None:
        # Pump i starts 0.25 m above the one before it and stops 0.1 m above: staging.
        for i in range(self.pumps):
            if self.level_m >= self.start_m + 0.25 * i:
                self.running[i] = True
            elif self.level_m <= self.stop_m + 0.1 * i:
                self.running[i] = False

    def advance(self, t_h: float, extra_m_h: float = 0.0) -> None:
        """Step to ``t_h`` in small steps: inflow fills, running pumps empty, control acts."""
        if self.t_h is None:
            self.t_h = t_h
            self._control()
            return
        while self.t_h < t_h:
            dt = min(0.05, t_h - self.t_h)
            on = sum(self.running)
            self.level_m += (self.inflow_m_h(self.t_h, extra_m_h) - on * self.pump_rate_m_h) * dt
            self.level_m = max(-0.5, min(4.0, self.level_m))
            self.run_hours += on * dt
            self.t_h += dt
            self._control()

    @property
    def running_bits(self) -> int:
        """Register 10 of the PLC: bit n = pump n+1 runs."""
        return sum(1 << i for i, on in enumerate(self.running) if on)
