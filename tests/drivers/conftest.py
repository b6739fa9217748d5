"""Fixtures for driver tests: real pymodbus servers on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest_asyncio

from drivers.flood.simulated_station import SimulatedStation
from tests.conftest import free_port

StationFactory = Callable[..., Coroutine[Any, Any, SimulatedStation]]


@pytest_asyncio.fixture
async def modbus_station() -> AsyncIterator[StationFactory]:
    """Factory of started SimulatedStations (real pymodbus TCP servers); all stopped afterwards."""
    started: list[SimulatedStation] = []

    async def factory(**kwargs: Any) -> SimulatedStation:
        station = SimulatedStation(port=free_port(), **kwargs)
        await station.start()
        started.append(station)
        return station

    yield factory
    for station in started:
        await station.stop()
