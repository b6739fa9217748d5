"""patient_timeout: an answer that came while the loop was busy is taken; silence times out."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

from drivers.patient_timeout import patient_timeout


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)


async def _ask_while_the_loop_is_busy(
    deadline: Callable[[float], AbstractAsyncContextManager[object]],
) -> bytes:
    """A device answers over real UDP after 0.1 s; the loop is blocked from 0.05 s to 0.6 s."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Reply, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]

    def device() -> None:
        time.sleep(0.1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"answer", ("127.0.0.1", port))

    threading.Thread(target=device, daemon=True).start()
    loop.call_later(0.05, time.sleep, 0.55)  # another device's reply being parsed, say
    try:
        async with deadline(0.3):
            return await protocol.answer
    finally:
        transport.close()


def test_asyncio_timeout_blames_the_device_for_the_busy_loop() -> None:
    """The control: the answer is in the socket before the deadline, and still lost."""
    with pytest.raises(TimeoutError):
        asyncio.run(_ask_while_the_loop_is_busy(asyncio.timeout))


def test_patient_timeout_takes_the_answer_that_came_while_the_loop_was_busy() -> None:
    assert asyncio.run(_ask_while_the_loop_is_busy(patient_timeout)) == b"answer"


async def _silent(delay_s: float, **kwargs: float) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    forever: asyncio.Future[None] = loop.create_future()
    try:
        async with patient_timeout(delay_s, **kwargs) as patience:
            await forever
    except TimeoutError:
        return loop.time() - started, patience.extensions
    raise AssertionError("a silent device must time out")


def test_a_silent_device_times_out_on_time_on_an_idle_loop() -> None:
    took, extensions = asyncio.run(_silent(0.2))
    assert 0.2 <= took < 0.35
    assert extensions == 0


async def _saturated(delay_s: float, max_extra_s: float) -> tuple[float, int]:
    """The loop blocked in 0.1 s slices back to back: the deadline moves, but only so far."""
    loop = asyncio.get_running_loop()
    hogging = True

    def hog() -> None:
        time.sleep(0.1)
        if hogging:
            loop.call_soon(hog)

    loop.call_soon(hog)
    try:
        # The deadline falls mid-slice (0.25 s), so each check runs ~0.05 s late.
        return await _silent(delay_s, max_extra_s=max_extra_s, lag_tolerance_s=0.02)
    finally:
        hogging = False


def test_a_silent_device_on_a_saturated_loop_times_out_within_the_extra_time() -> None:
    took, extensions = asyncio.run(_saturated(0.25, 0.4))
    assert extensions >= 1
    # The limit, then three loop turns of a slice each: the last check, the cancel, the
    # task's step (a plain asyncio.timeout takes the last two as well).
    assert 0.25 <= took < 0.25 + 0.4 + 0.3 + 0.15


async def _cancelled_from_outside() -> bool:
    async def poll() -> None:
        async with patient_timeout(5):
            await asyncio.sleep(10)

    task = asyncio.create_task(poll())
    await asyncio.sleep(0.05)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False


def test_an_outside_cancel_is_a_cancel_not_a_timeout() -> None:
    assert asyncio.run(_cancelled_from_outside())


async def _iterate() -> AsyncIterator[int]:
    yield 1


def test_the_answer_in_time_passes_through() -> None:
    async def main() -> int:
        async with patient_timeout(1):
            async for value in _iterate():
                return value
        return 0

    assert asyncio.run(main()) == 1
