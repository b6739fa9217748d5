"""The registry API served by a real uvicorn on a free port, in a thread, for agent tests.

It can be stopped and started again on the same port, the way a registry restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import uvicorn

from device_registry.registry_service import RegistryService
from device_registry.web_api import create_app
from tests.conftest import free_port
from tests.uvicorn_thread import serve_in_thread


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
        # The running serve_in_thread block: start enters it, stop leaves it.
        self._serving: ExitStack | None = None

    @property
    def url(self) -> str:
        """The API's base address."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve until ``stop``; returns once uvicorn listens."""
        config = uvicorn.Config(
            create_app(self.service),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(self.tls[0]) if self.tls else None,
            ssl_keyfile=str(self.tls[1]) if self.tls else None,
        )
        serving = ExitStack()
        serving.enter_context(serve_in_thread(config, "registry-uvicorn", start_s=20))
        self._serving = serving

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.close()


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
