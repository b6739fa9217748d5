"""The registry API served by a real uvicorn on a free port, in a thread, for agent tests.

It can be stopped and started again on the same port, the way a registry restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from device_registry.registry_service import RegistryService
from device_registry.web_api import create_app
from tests.conftest import free_port


class ServedRegistry:
    """One registry API on 127.0.0.1:port; ``stop`` and ``start`` like a service manager."""

    def __init__(
        self,
        service: RegistryService,
        port: int | None = None,
        *,
        tls: tuple[Path, Path] | None = None,  # certificate and key: serve https
    ) -> None:
        self.service = service
        self.port = port or free_port()
        self.tls = tls
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API's base address."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve until ``stop``; returns once uvicorn listens."""
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(self.service),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                ssl_certfile=str(self.tls[0]) if self.tls else None,
                ssl_keyfile=str(self.tls[1]) if self.tls else None,
            )
        )
        thread = threading.Thread(target=server.run, name="registry-uvicorn", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during start-up (port taken?)"
            assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
            time.sleep(0.02)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(20)
            assert not self._thread.is_alive(), "uvicorn did not stop within 20 s"
        self._server = self._thread = None


@contextmanager
def served_registry(
    service: RegistryService, *, tls: tuple[Path, Path] | None = None
) -> Iterator[ServedRegistry]:
    """A started registry API (https with ``tls``), stopped afterwards."""
    served = ServedRegistry(service, tls=tls)
    served.start()
    try:
        yield served
    finally:
        served.stop()
