"""A TCP proxy that can cut the link: stop forwarding both ways without closing anything.

A network cut (a router gone, a cable pulled) closes nothing: both ends keep their
sockets and just stop hearing each other. While cut, this proxy reads nothing from
either side, so what each side sends waits in the kernel's buffers, as packets in a cut
network would wait to be retransmitted; a connection made during the cut is held until
the link comes back (then forwarded, unless its client gave up meanwhile).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class CuttingProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream``; ``cut()`` and ``restore()`` the link."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.bytes_up = 0  # forwarded from the client to the broker (PUBACKs among them)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def cut(self) -> None:
        """Stop forwarding in both directions (nothing is closed)."""
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again."""
        self._flowing.set()

    def close(self) -> None:
        """Stop the proxy and close every socket."""
        self._stop.set()
        self._flowing.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
            self._spawn(self._connect, client)

    def _connect(self, client: socket.socket) -> None:
        early = b""
        if not self._flowing.is_set():
            while not self._flowing.wait(0.2):
                if self._stop.is_set():
                    return
            # Held during the cut: forward it only if its client is still there.
            client.setblocking(False)
            try:
                while chunk := client.recv(65536):
                    early += chunk
                client.close()  # the client gave up and closed meanwhile
                return
            except BlockingIOError:
                pass
            except OSError:
                client.close()
                return
            client.setblocking(True)
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.append(upstream)
        if early:
            upstream.sendall(early)
        self._spawn(self._pump, client, upstream, True)
        self._spawn(self._pump, upstream, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while not self._stop.is_set():
                if not self._flowing.wait(0.2):
                    continue  # cut: read nothing, so it waits in the buffers
                readable, _, _ = select.select([src], [], [], 0.2)
                if not readable:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.2):  # cut after the read: hold it
                    if self._stop.is_set():
                        return
                dst.sendall(data)
                if upward:
                    self.bytes_up += len(data)
        except (OSError, ValueError):
            pass  # ValueError: select() on a socket the other direction closed (fd -1)
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()
