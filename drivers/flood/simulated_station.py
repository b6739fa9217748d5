"""A simulated Modbus field station: a real pymodbus server for tests, the bench and the demo.

One server is one TCP endpoint (a device, or an RS-485 gateway with several units).
Behaviours a real line shows can be switched on: a slow answer, a sleeping sensor whose
first answer is stale, and disappearing (stop) and coming back (start).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from functools import partial

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.flood.register_map import WordOrder, float_to_registers

REGISTER_COUNT = 2400  # covers the VEGAPULS map (up to register 2315)


class SimulatedStation:
    """Units with 2,400 holding registers each behind one Modbus TCP (or RTU-over-TCP) port."""

    def __init__(
        self,
        *,
        port: int,
        unit_ids: Iterable[int] = (1,),
        framing: str = "tcp",
        host: str = "127.0.0.1",
        register_count: int = REGISTER_COUNT,
    ) -> None:
        self.host, self.port = host, port
        self.framer = FramerType.RTU if framing == "rtu" else FramerType.SOCKET
        self.unit_ids = tuple(unit_ids)
        self.register_count = register_count
        self.response_delay_s = 0.0
        self.reads = 0
        # Sleeping sensor: after sleep_after_s without a request the unit sleeps; the
        # request that wakes it gets the old values, fresh ones come wake_time_s later.
        self.sleep_after_s: float | None = None
        self.wake_time_s = 0.5
        self._pending: dict[int, dict[int, int]] = {u: {} for u in self.unit_ids}
        self._memory: dict[int, list[int]] = {}
        self._last_access: dict[int, float] = {}
        self._woke_at: dict[int, float] = {}
        # Units that stay silent: an RS-485 gateway answers "target device failed to respond".
        self.silent_units: set[int] = set()
        # Called with (unit, request address, count) for every read answered.
        self.on_read: Callable[[int, int, int], None] | None = None
        self._server: ModbusTcpServer | None = None
        self._slow_answers: set[asyncio.Task[object]] = set()

    def _devices(self) -> list[SimDevice]:
        return [
            SimDevice(
                id=unit,
                simdata=[
                    SimData(address=0, count=self.register_count, datatype=DataType.REGISTERS)
                ],
                action=partial(self._on_request, unit),
            )
            for unit in self.unit_ids
        ]

    async def _on_request(
        self,
        unit: int,
        _function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        self._memory[unit] = registers
        if unit in self.silent_units:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if set_values is None:
            self.reads += 1
            if self.on_read is not None:
                self.on_read(unit, address, count)
        now = time.monotonic()
        if self.sleep_after_s is not None:
            if now - self._last_access.get(unit, float("-inf")) > self.sleep_after_s:
                self._woke_at[unit] = now
            elif now - self._woke_at.get(unit, now) >= self.wake_time_s:
                self._apply_pending(unit, start_address, registers)
        else:
            self._apply_pending(unit, start_address, registers)
        self._last_access[unit] = now
        if self.response_delay_s:
            task = asyncio.current_task()
            if task is not None:
                self._slow_answers.add(task)
            try:
                await asyncio.sleep(self.response_delay_s)
            finally:
                if task is not None:
                    self._slow_answers.discard(task)
        return None

    def _apply_pending(self, unit: int, start: int, registers: list[int]) -> None:
        pending = self._pending[unit]
        for address, value in pending.items():
            registers[address - start] = value
        pending.clear()

    def set_registers(self, unit: int, address: int, values: Iterable[int]) -> None:
        """Values the unit answers from its next request on (a sleeping unit: once awake)."""
        for offset, value in enumerate(values):
            self._pending[unit][address + offset] = value & 0xFFFF

    def set_float(self, unit: int, address: int, value: float, word_order: WordOrder) -> None:
        """A float32 in the given word order."""
        self.set_registers(unit, address, float_to_registers(value, word_order))

    def set_int16(self, unit: int, address: int, value: int) -> None:
        """A signed 16-bit value."""
        self.set_registers(unit, address, [value & 0xFFFF])

    async def start(self) -> None:
        """Listen (again, after ``stop``) with the units' registers as they were."""
        if self._server is not None:
            return
        server = ModbusTcpServer(
            self._devices(), address=(self.host, self.port), framer=self.framer
        )
        await server.serve_forever(background=True)
        # A restart keeps what the units held, as a real device's registers do.
        for unit, registers in self._memory.items():
            self._pending[unit] = {
                i: v for i, v in enumerate(registers[: self.register_count])
            } | self._pending[unit]
        self._server = server

    async def stop(self) -> None:
        """Stop answering and drop connections: the device has disappeared."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
        # Answers still being delayed die with the device.
        pending = list(self._slow_answers)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
