"""Faults inflicted on the running demo: on devices (through the simulators' FaultBoard),
on a gateway's link, and on the stack's own processes (the broker, InfluxDB).

Every fault names what it acts on; an id the fleet does not hold is refused with one line
(``ControlError``) and changes nothing. ``heal`` ends every fault at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import psutil

from drivers.simulation import FaultBoard
from hub.demo.control import ControlError, FaultRequest
from hub.demo.gateway_links import GatewayLink
from hub.local_stack import LocalStack, PartName

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0


def slug(text: str) -> str:
    """``Semarang Utara`` -> ``semarang-utara`` (how an area may be typed on the CLI)."""
    return re.sub(r"[^a-z0-9]+", "-", text.casefold()).strip("-")


class StackParts:
    """Stop one part of the local stack and start it again (through its PID record)."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack

    def process(self, name: PartName) -> psutil.Process | None:
        """The live process ``stack up`` started for the part, or None."""
        try:
            record = json.loads((self.stack.run_dir / f"{name}.json").read_text())
            proc = psutil.Process(int(record["pid"]))
            if abs(proc.create_time() - float(record["create_time"])) > 1.0:
                return None  # the PID now belongs to another process
        except (OSError, ValueError, KeyError, TypeError, psutil.Error):
            return None
        return proc

    def stop(self, name: PartName) -> None:
        """SIGTERM the part (a clean stop: Mosquitto saves its persistence) and wait."""
        proc = self.process(name)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def start_missing(self) -> None:
        """Start what is stopped and wait until both parts answer (``stack up``)."""
        self.stack.up()


@dataclass(slots=True)
class FaultInjector:
    """Applies and heals the demo's faults; ``active()`` says what is in force."""

    board: FaultBoard
    device_ids: frozenset[str]
    areas: Sequence[str]
    links: Mapping[str, GatewayLink]
    parts: StackParts | None
    clock: Callable[[], float] = time.monotonic
    _outage_task: asyncio.Task[None] | None = None
    _outage_ends: float = 0.0
    _broker_restarting: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def area_named(self, text: str) -> str:
        """The fleet's area that ``text`` names (its name or slug, any case)."""
        wanted = slug(text)
        for area in self.areas:
            if slug(area) == wanted:
                return area
        # "utara" for "Semarang Utara", when only one area ends so.
        endings = [a for a in self.areas if slug(a).endswith("-" + wanted)]
        if wanted and len(endings) == 1:
            return endings[0]
        shown = ", ".join(slug(a) for a in self.areas[:6])
        raise ControlError(f"unknown area {text!r}: the fleet's areas are {shown}, ...")

    async def apply(self, request: FaultRequest) -> str:
        """Inflict one fault; return what was done, in one line."""
        name, target = request.name, request.target or ""
        if name == "device-dies":
            if target not in self.device_ids:
                raise ControlError(f"unknown device {target!r}: not in the demo's fleet")
            self.board.device_dies(target)
            return f"device {target} dies: it stops answering until `kotahub demo heal`"
        if name == "gateway-cut":
            link = self.links.get(target)
            if link is None:
                shown = ", ".join(sorted(self.links)[:4])
                raise ControlError(f"unknown gateway {target!r}: the demo's are {shown}, ...")
            await link.set_cut(True)
            return f"gateway {target} cut from the broker: its agent buffers until healed"
        if name == "flood-rises":
            area = self.area_named(target)
            self.board.flood_rises(area)
            return f"flood rises in {area}"
        if name == "broker-restart":
            return await self._broker_restart()
        if name == "influx-outage":
            return await self._influx_outage(request.duration_s or 60.0)
        raise ControlError(f"unknown fault {name!r}")

    async def heal(self) -> str:
        """End every fault: devices revive, floods recede, links and InfluxDB come back."""
        self.board.heal()
        for link in self.links.values():
            await link.set_cut(False)
        healed = "devices, floods and gateway links healed"
        task, self._outage_task = self._outage_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self._start_influx()
            healed += "; InfluxDB started again"
        return healed

    def active(self) -> list[str]:
        """Each fault in force, in words."""
        snap = self.board.snapshot()
        out = [f"device {d} dead" for d in snap["dead_devices"]]
        out += [f"flood in {a}" for a in snap["flooding_areas"]]
        out += [f"gateway {gw} cut" for gw, link in sorted(self.links.items()) if link.cut]
        if self._outage_task is not None and not self._outage_task.done():
            left = max(0.0, self._outage_ends - self.clock())
            out.append(f"InfluxDB down, back in {left:.0f} s")
        if self._broker_restarting:
            out.append("broker restarting")
        return out

    async def _broker_restart(self) -> str:
        parts = self._parts("broker-restart")
        async with self._lock:
            self._broker_restarting = True
            started = self.clock()
            try:
                await asyncio.to_thread(parts.stop, "mosquitto")
                await asyncio.to_thread(parts.start_missing)
            finally:
                self._broker_restarting = False
        return f"broker restarted (down {self.clock() - started:.1f} s); clients reconnect"

    async def _influx_outage(self, duration_s: float) -> str:
        parts = self._parts("influx-outage")
        if self._outage_task is not None and not self._outage_task.done():
            left = self._outage_ends - self.clock()
            raise ControlError(f"InfluxDB is already down (back in {left:.0f} s); heal ends it")
        async with self._lock:
            await asyncio.to_thread(parts.stop, "influxdb")
        self._outage_ends = self.clock() + duration_s
        self._outage_task = asyncio.create_task(self._outage(duration_s), name="influx-outage")
        return f"InfluxDB stopped for {duration_s:g} s: the hub's WAL holds what arrives"

    async def _outage(self, duration_s: float) -> None:
        await asyncio.sleep(duration_s)
        await self._start_influx()

    async def _start_influx(self) -> None:
        parts = self._parts("influx-outage")
        async with self._lock:
            try:
                await asyncio.to_thread(parts.start_missing)
            except Exception:  # logged: the summary shows InfluxDB as not answering
                log.exception("InfluxDB did not start again after the outage")

    def _parts(self, fault: str) -> StackParts:
        if self.parts is None:
            raise ControlError(f"{fault}: this demo does not run the stack it would act on")
        return self.parts

    async def close(self) -> None:
        """At the demo's end: an outage in progress ends (InfluxDB starts again)."""
        task, self._outage_task = self._outage_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self._start_influx()
