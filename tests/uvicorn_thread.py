"""A real uvicorn server in a thread for tests: started, waited for, stopped and joined."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


@contextmanager
def serve_in_thread(config: uvicorn.Config, name: str, start_s: float = 15.0) -> Iterator[None]:
    """Run ``config``'s app until the block ends; fail clearly if it does not start."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_s
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, f"uvicorn did not start within {start_s:g} s"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=15)
