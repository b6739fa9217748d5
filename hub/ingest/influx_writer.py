"""Post line protocol to InfluxDB (v1 ``/write`` or v2 ``/api/v2/write``), gzipped.

``InfluxLineWriter.write`` returns only when InfluxDB has taken every line it will ever
take: transient failures (connection refused, timeouts, 5xx, 429, and 401/403/404,
which an operator fixes without losing data) are retried with capped exponential
backoff until they pass or the hub stops. A 400/422 means some lines are bad: InfluxDB
1.x has already written the others, so the batch is bisected (idempotent re-posts of
the good lines are harmless) until each bad line stands alone; those are returned as
refused, to go to the dead-letter, and are never retried.
"""

from __future__ import annotations

import gzip
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from hub.settings import InfluxSettings

log = logging.getLogger(__name__)

TRANSIENT_STATUS = frozenset({401, 403, 404, 408, 429})
PING_INTERVAL_S = 0.5  # how often an unreachable InfluxDB is asked whether it is back
BAD_LINES_STATUS = frozenset({400, 422})


class WriterStoppedError(Exception):
    """The hub is stopping while a batch was still being retried; it stays in the WAL."""


@dataclass(frozen=True, slots=True)
class RefusedLine:
    """A line InfluxDB will never accept, with its error text."""

    line: bytes
    error: str


@dataclass(slots=True)
class WriteOutcome:
    """What became of one batch."""

    lines: int = 0
    refused: list[RefusedLine] = field(default_factory=list)
    requests: int = 0
    retries: int = 0


@dataclass(frozen=True, slots=True)
class WriteEndpoint:
    """URL, query and headers for one InfluxDB write API."""

    url: str
    params: dict[str, str]
    headers: dict[str, str]
    auth: tuple[str, str] | None
    ping_url: str

    @classmethod
    def from_settings(cls, settings: InfluxSettings) -> WriteEndpoint:
        """v1: db, rp and basic auth; v2: org, bucket and a token header."""
        base = settings.url.rstrip("/")
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        if settings.api == "v2":
            params = {"precision": "ms", "bucket": settings.bucket or settings.database}
            if settings.org:
                params["org"] = settings.org
            if settings.token is not None:
                headers["Authorization"] = f"Token {settings.token.get_secret_value()}"
            return cls(f"{base}/api/v2/write", params, headers, None, f"{base}/ping")
        params = {"db": settings.database, "precision": "ms"}
        if settings.retention_policy:
            params["rp"] = settings.retention_policy
        auth = None
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else ""
            auth = (settings.username, password)
        return cls(f"{base}/write", params, headers, auth, f"{base}/ping")


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:500]
    return str(body)[:500]


class InfluxLineWriter:
    """Writes batches of lines with retries; one instance per writer thread."""

    def __init__(
        self,
        settings: InfluxSettings,
        *,
        stop: threading.Event,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 15.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.endpoint = WriteEndpoint.from_settings(settings)
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 5.0)),
            auth=self.endpoint.auth,
        )
        self._stop = stop
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._on_retry = on_retry
        self._failing_since: float | None = None

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def write(self, chunks: Sequence[bytes]) -> WriteOutcome:
        """Post lines until all are written or refused; raise WriterStoppedError on stop.

        Each chunk is one line or several joined by newlines (a WAL record as it is):
        the body is posted as is, and split into lines only if InfluxDB refuses some.
        """
        outcome = WriteOutcome()
        if chunks:
            self._write_part(list(chunks), outcome)
        outcome.lines = sum(chunk.count(b"\n") + 1 for chunk in chunks) - len(outcome.refused)
        return outcome

    def _write_part(self, parts: list[bytes], outcome: WriteOutcome) -> None:
        """Post parts as one body; bisect by lines a refused (400/422) or too large (413) one."""
        body = b"\n".join(parts)
        status, error = self._post_until_answered(body, outcome)
        if status < 300:
            return
        lines = body.split(b"\n")  # parts may be WAL records of many lines each
        if len(lines) == 1:
            outcome.refused.append(RefusedLine(lines[0], error))
            return
        middle = len(lines) // 2
        self._write_part(lines[:middle], outcome)
        self._write_part(lines[middle:], outcome)

    def _post_until_answered(self, body: bytes, outcome: WriteOutcome) -> tuple[int, str]:
        """Post once per attempt; return (status, error) for a success or a bad-lines answer."""
        body = gzip.compress(body, compresslevel=1)
        delay = self._backoff_initial
        while True:
            outcome.requests += 1
            try:
                response = self._client.post(
                    self.endpoint.url,
                    params=self.endpoint.params,
                    headers=self.endpoint.headers,
                    content=body,
                )
            except httpx.HTTPError as err:
                problem = f"{type(err).__name__}: {err}"
                unreachable = isinstance(err, httpx.ConnectError | httpx.ConnectTimeout)
            else:
                status = response.status_code
                if status < 300 or status in BAD_LINES_STATUS or status == 413:
                    if self._failing_since is not None:
                        log.warning(
                            "InfluxDB writes work again after %.1f s",
                            time.monotonic() - self._failing_since,
                        )
                        self._failing_since = None
                    return status, _error_text(response) if status >= 300 else ""
                problem = f"HTTP {status}: {_error_text(response)}"
                unreachable = False
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning("InfluxDB write failed, retrying with backoff: %s", problem)
            outcome.retries += 1
            if self._on_retry is not None:
                self._on_retry(problem)
            # Jitter keeps N hubs from retrying in lock-step after an outage.
            if self._wait_before_retry(delay * random.uniform(0.8, 1.2), unreachable):
                raise WriterStoppedError("stopping while InfluxDB is failing")
            delay = min(delay * 2, self._backoff_max)

    def _wait_before_retry(self, seconds: float, unreachable: bool) -> bool:
        """Wait out a backoff; True if the hub is stopping.

        While InfluxDB does not even accept connections (down, restarting), its ``/ping``
        is asked every ``PING_INTERVAL_S`` and the wait ends when it answers: the backlog
        then starts draining within about a second of InfluxDB's return instead of up to
        ``backoff_max_s`` later. A server that answers with errors (overloaded, 5xx) gets
        the whole backoff: pinging says nothing about whether it can take writes again.
        """
        if not unreachable:
            return self._stop.wait(seconds)
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(PING_INTERVAL_S, remaining)):
                return True
            try:
                if self._client.get(self.endpoint.ping_url, timeout=PING_INTERVAL_S).is_success:
                    return False
            except httpx.HTTPError:
                continue
        return self._stop.is_set()
