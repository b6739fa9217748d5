"""The flood family's demo simulator: gauges, rain gauges and pump PLCs on real Modbus servers.

Each area (gateway) gets two ports, as a field cabinet has: an RS-485 line (Modbus RTU
framed over TCP, one unit id per device) for its level and rain gauges, and a Modbus TCP
gateway for its pump-station PLCs. ``assign_addresses(devices, first_port)`` gives every
device its ``host:port`` and ``driver_config`` (framing, unit id, word order) before
registration; ports go ``first_port`` upwards, two per area in sorted gateway order.

Values come from ``drivers.flood.simulated_water`` at the simulated time and are written
into the registers every second; the agent's real flood driver reads them. Per-device
``params``: ``coastal`` (tide), ``lag_h`` and ``base_m`` (rain response), ``catchment``
(``[{"area", "lag_h", "weight"}]``: upstream rain reaching the gauge), ``drift_m_per_day``
(a gauge that drifts), ``sticks_after_h`` (one that sticks), ``dies_after_h`` (one that
dies), ``battery_sag_v_per_day`` (rain loggers), ``pumps``/``start_m``/``stop_m`` (PLCs).
A dead device (fault board or ``dies_after_h``) stays silent on its line: its RS-485
gateway answers Modbus exception 11, "target device failed to respond".
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from drivers.flood.register_map import WordOrder, load_register_map, plan_requests
from drivers.flood.simulated_station import SimulatedStation
from drivers.flood.simulated_water import PumpBasin, Tributary, gauge_level_m, rain_total_mm
from drivers.simulation import SimulatedDevice, SimulatorContext, SimulatorStats

log = logging.getLogger(__name__)
LINE_TYPES = ("vegapuls_c21", "generic_4_20ma", "tipping_bucket_rain")
UPDATE_S = 1.0  # wall seconds between register updates
VEGA_ADDRESSES: dict[WordOrder, int] = {"ABCD": 2002, "CDAB": 106, "DCBA": 2102, "BADC": 2202}
FLOOD_EXTRA_M = 1.6  # how far a raised flood lifts an area's levels
FLOOD_RISE_M_H = 0.9


@dataclass(slots=True)
class _Unit:
    """One simulated device on a station: its state between register updates."""

    device: SimulatedDevice
    unit_id: int
    word_order: WordOrder
    last_span_start: int
    basin: PumpBasin | None = None
    stuck_m: float | None = None
    flood_extra_m: float = 0.0
    started_h: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _hours(ctx: SimulatorContext) -> float:
    return ctx.clock.now().timestamp() / 3600


class FloodSimulator:
    """Serves every flood device of the fleet until cancelled."""

    family = "flood"

    def __init__(self) -> None:
        self.stats = SimulatorStats()
        self.stations: dict[int, SimulatedStation] = {}

    # -- addresses ---------------------------------------------------------------------
    def assign_addresses(
        self, devices: Sequence[SimulatedDevice], first_port: int, host: str = "127.0.0.1"
    ) -> dict[str, SimulatedDevice]:
        """Two ports per gateway (RS-485 line, Modbus TCP for PLCs); unit ids 1 upwards."""
        gateways = sorted({d.gateway_id or "" for d in devices})
        out: dict[str, SimulatedDevice] = {}
        for index, gateway in enumerate(gateways):
            line_port, plc_port = first_port + 2 * index, first_port + 2 * index + 1
            mine = sorted(
                (d for d in devices if (d.gateway_id or "") == gateway), key=lambda d: d.device_id
            )
            line_unit = plc_unit = 0
            for device in mine:
                config = dict(device.driver_config)
                if device.device_type in LINE_TYPES:
                    line_unit += 1
                    port, unit = line_port, line_unit
                    config.update(framing="rtu", unit_id=unit)
                    if device.device_type == "vegapuls_c21":
                        # Half the radars are set up with the manual's CDAB float order.
                        config["word_order"] = "CDAB" if unit % 2 else "ABCD"
                else:
                    plc_unit += 1
                    port, unit = plc_port, plc_unit
                    config.update(framing="tcp", unit_id=unit)
                config.setdefault("timeout_s", 3)
                out[device.device_id] = replace(
                    device, address=f"{host}:{port}", driver_config=config
                )
        return out

    def ports_used(self, devices: Sequence[SimulatedDevice]) -> set[int]:
        """The ports the devices' addresses name."""
        return {int(d.address.rpartition(":")[2]) for d in devices if d.address}

    # -- serving -----------------------------------------------------------------------
    async def run(self, devices: Sequence[SimulatedDevice], ctx: SimulatorContext) -> None:
        """Start a server per port, update registers every second, until cancelled."""
        by_port: dict[tuple[str, int], list[_Unit]] = {}
        for device in devices:
            if not device.address:
                log.warning("flood device %s has no address: not simulated", device.device_id)
                continue
            host, _sep, port_text = device.address.rpartition(":")
            by_port.setdefault((host, int(port_text)), []).append(_unit(device))
        units: dict[tuple[int, int], _Unit] = {}
        try:
            for (host, port), members in sorted(by_port.items()):
                framing = str(members[0].device.driver_config.get("framing", "tcp"))
                station = SimulatedStation(
                    host=host, port=port, unit_ids=[u.unit_id for u in members], framing=framing
                )
                station.on_read = lambda unit, address, _n, port=port: self._counted(
                    units.get((port, unit)), address
                )
                for member in members:
                    units[(port, member.unit_id)] = member
                    self._update(station, member, ctx, first=True)
                try:
                    await station.start()
                except (OSError, RuntimeError) as err:
                    # A taken port silences its own devices only; the other lines serve on
                    # (pymodbus says "Could not start listen" as a RuntimeError).
                    log.error(
                        "flood simulator: cannot listen on %s:%d (%s); its %d devices stay silent",
                        host,
                        port,
                        getattr(err, "strerror", None) or err,
                        len(members),
                    )
                    for member in members:
                        self.stats.failed(member.device.device_id)
                    continue
                self.stations[port] = station
            log.info("flood: %d devices on %d Modbus ports", len(units), len(self.stations))
            members_of = {port: m for (_h, port), m in by_port.items()}
            while True:
                for port, station in self.stations.items():
                    for member in members_of[port]:
                        try:
                            self._update(station, member, ctx)
                        except Exception:  # one device's failure never stops the others
                            self.stats.failed(member.device.device_id)
                            log.exception("flood simulator: %s", member.device.device_id)
                await asyncio.sleep(UPDATE_S)
        finally:
            for station in self.stations.values():
                await station.stop()
            self.stations.clear()

    def _counted(self, unit: _Unit | None, address: int) -> None:
        # One poll reads several spans; the last one completes a reading.
        if unit is not None and address == unit.last_span_start:
            self.stats.produced(unit.device.device_id)

    def _update(
        self, station: SimulatedStation, unit: _Unit, ctx: SimulatorContext, *, first: bool = False
    ) -> None:
        device, params = unit.device, unit.device.params
        t_h = _hours(ctx)
        if unit.started_h is None:
            unit.started_h = t_h
        age_h = t_h - unit.started_h
        dies = params.get("dies_after_h")
        dead = ctx.faults.is_dead(device.device_id) or (
            isinstance(dies, int | float) and age_h >= dies
        )
        if dead:
            station.silent_units.add(unit.unit_id)
            return
        station.silent_units.discard(unit.unit_id)
        flooding = ctx.faults.is_flooding(device.kecamatan)
        step_h = 0.0 if first else UPDATE_S * ctx.clock.speed / 3600
        if flooding:
            unit.flood_extra_m = min(FLOOD_EXTRA_M, unit.flood_extra_m + FLOOD_RISE_M_H * step_h)
        else:
            unit.flood_extra_m = max(0.0, unit.flood_extra_m - 0.3 * step_h)
        kind = device.device_type
        if kind in ("vegapuls_c21", "generic_4_20ma"):
            level = self._level(unit, t_h, age_h)
            if kind == "vegapuls_c21":
                for order, address in VEGA_ADDRESSES.items():
                    station.set_float(unit.unit_id, address, level, order)
                station.set_registers(unit.unit_id, 100, [0])
                station.set_registers(unit.unit_id, 2307, [0])
                quality = 58.0 - 4.0 * abs(math.sin(t_h))
                station.set_float(unit.unit_id, 2314, round(quality, 1), "ABCD")
            else:
                station.set_registers(unit.unit_id, 3, [2])
                station.set_int16(unit.unit_id, 4, round(level * 100))
        elif kind == "tipping_bucket_rain":
            mm = rain_total_mm(device.kecamatan, unit.started_h, t_h)
            if flooding:
                unit.extra["flood_mm"] = unit.extra.get("flood_mm", 0.0) + 40 * step_h
            mm += unit.extra.get("flood_mm", 0.0)
            tips = int(mm / float(device.driver_config.get("mm_per_tip", 0.2)))
            sag = float(params.get("battery_sag_v_per_day", 0.02)) * age_h / 24
            solar = 0.35 * max(0.0, math.sin(2 * math.pi * ((t_h + 7 - 6) % 24) / 24))
            volts = max(10.5, 12.6 - sag + solar)
            station.set_registers(unit.unit_id, 0, [tips % 65536, round(volts * 1000)])
        elif kind == "pump_station_plc" and unit.basin is not None:
            basin = unit.basin
            basin.advance(t_h, extra_m_h=1.2 if flooding else 0.0)
            hours_tenths = round(basin.run_hours * 10) & 0xFFFFFFFF
            station.set_registers(
                unit.unit_id,
                10,
                [
                    basin.running_bits,
                    round(basin.level_m * 100) & 0xFFFF,
                    hours_tenths >> 16,
                    hours_tenths & 0xFFFF,
                    0,
                ],
            )

    def _level(self, unit: _Unit, t_h: float, age_h: float) -> float:
        params = unit.device.params
        sticks = params.get("sticks_after_h")
        if unit.stuck_m is not None:
            return unit.stuck_m
        level = gauge_level_m(
            unit.device.kecamatan,
            t_h,
            base_m=float(params.get("base_m", 0.3)),
            coastal=bool(params.get("coastal", False)),
            lag_h=float(params.get("lag_h", 1.0)),
            catchment=_catchment(params.get("catchment")),
        )
        level += float(params.get("drift_m_per_day", 0.0)) * age_h / 24 + unit.flood_extra_m
        level = round(level, 3)
        if isinstance(sticks, int | float) and age_h >= sticks:
            unit.stuck_m = level
        return level


def _catchment(raw: Any) -> tuple[Tributary, ...]:
    """``[{"area", "lag_h", "weight"}, ...]`` from a device's params; malformed entries skipped."""
    if not isinstance(raw, list | tuple):
        return ()
    out = []
    for entry in raw:
        try:
            out.append(Tributary(str(entry["area"]), float(entry["lag_h"]), float(entry["weight"])))
        except (KeyError, TypeError, ValueError):
            log.warning("flood simulator: catchment entry %r ignored", entry)
    return tuple(out)


def _unit(device: SimulatedDevice) -> _Unit:
    config = device.driver_config
    register_map = load_register_map(device.device_type)
    unit_id = int(config.get("unit_id", register_map.default_unit_id))
    order: WordOrder = config.get("word_order") or register_map.default_word_order
    spans = plan_requests(register_map.fields, order)
    basin = None
    if device.device_type == "pump_station_plc":
        params = device.params
        basin = PumpBasin(
            area=device.kecamatan,
            pumps=int(params.get("pumps", 3)),
            start_m=float(params.get("start_m", 1.0)),
            stop_m=float(params.get("stop_m", 0.4)),
            coastal=bool(params.get("coastal", False)),
        )
    return _Unit(
        device=device,
        unit_id=unit_id,
        word_order=order,
        last_span_start=spans[-1].start,
        basin=basin,
    )


SIMULATOR = FloodSimulator()
