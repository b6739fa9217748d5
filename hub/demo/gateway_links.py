"""Each demo gateway reaches the broker through a link of its own that a fault can cut.

A link is a loopback TCP relay in front of the broker's port. ``cut`` drops the gateway's
connection and refuses new ones, as a field gateway whose uplink failed; the agent keeps
polling into its outbox and sends it all once ``restore`` lets it reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib

CHUNK = 65536


class GatewayLink:
    """A cuttable TCP relay from a free loopback port to the broker."""

    def __init__(self, gateway_id: str, broker_host: str, broker_port: int) -> None:
        self.gateway_id = gateway_id
        self.broker_host, self.broker_port = broker_host, broker_port
        self.port = 0
        self.cut = False
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on a free loopback port (``port``)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def set_cut(self, cut: bool) -> None:
        """Cut (drop every connection, refuse new ones) or restore the link."""
        self.cut = cut
        if cut:
            for writer in list(self._writers):
                writer.transport.abort()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        await self.set_cut(True)
        for task in list(self._pipes):
            task.cancel()
        if self._pipes:
            await asyncio.wait(list(self._pipes), timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.broker_host, self.broker_port), 10
            )
        except (OSError, TimeoutError):
            writer.transport.abort()  # the broker is down: the agent retries, as on a real line
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer), name=f"link-{self.gateway_id}-up"),
            asyncio.create_task(self._pipe(up_reader, writer), name=f"link-{self.gateway_id}-dn"),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.wait(pipes, timeout=5)
            self._pipes.difference_update(pipes)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
