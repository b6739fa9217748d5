"""A small InfluxQL client over HTTP ``/query``, for administration, tests and benchmarks.

The hub's write path lives elsewhere; this answers "what does InfluxDB hold?".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx


class InfluxQueryError(Exception):
    """InfluxDB could not be reached, or refused a statement."""


@dataclass(frozen=True, slots=True)
class Series:
    """One series of a query answer."""

    name: str
    columns: list[str]
    values: list[list[Any]]
    tags: dict[str, str] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column, with the series tags merged in."""
        return [{**self.tags, **dict(zip(self.columns, row, strict=True))} for row in self.values]


class InfluxQL:
    """Run InfluxQL statements against one InfluxDB 1.x (or a v1-compatible endpoint).

    One HTTP client is kept for the object's life (``close`` or ``with`` ends it): a new
    client per request builds a TLS context each time, about 40 ms of CPU, which a poll
    loop (the benchmarks', the tests') would pay several times a second.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._auth = (username, password or "") if username else None
        self._timeout = timeout_s
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout, auth=self._auth)
            return self._client

    def close(self) -> None:
        """Close the HTTP client (a later query opens a new one)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> InfluxQL:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def query(self, statement: str, *, database: str | None = None) -> list[Series]:
        """Run one statement; return its series, or raise InfluxQueryError with the reason."""
        params = {"q": statement, "epoch": "ms"}
        if database:
            params["db"] = database
        try:
            resp = self._http().post(f"{self.url}/query", data=params)
        except httpx.HTTPError as err:
            raise InfluxQueryError(f"{self.url}: {err}") from err
        try:
            body = resp.json()
        except ValueError as err:
            raise InfluxQueryError(f"{self.url} answered {resp.status_code}: {resp.text}") from err
        if resp.status_code != 200:
            raise InfluxQueryError(f"{statement!r}: {body.get('error', body)}")
        series: list[Series] = []
        for result in body.get("results", []):
            if "error" in result:
                raise InfluxQueryError(f"{statement!r}: {result['error']}")
            for item in result.get("series", []):
                series.append(
                    Series(
                        name=item.get("name", ""),
                        columns=list(item.get("columns", [])),
                        values=list(item.get("values", [])),
                        tags=dict(item.get("tags", {})),
                    )
                )
        return series

    def rows(self, statement: str, *, database: str | None = None) -> list[dict[str, Any]]:
        """All rows of all series as dicts."""
        return [row for s in self.query(statement, database=database) for row in s.records()]

    def first_column(self, statement: str, *, database: str | None = None) -> list[Any]:
        """The first column of every row (SHOW DATABASES, SHOW MEASUREMENTS...)."""
        return [row[0] for s in self.query(statement, database=database) for row in s.values]

    def ping(self) -> str | None:
        """Server version if ``/ping`` answers 204, else None."""
        try:
            resp = self._http().get(f"{self.url}/ping")
        except httpx.HTTPError:
            return None
        if resp.status_code != 204:
            return None
        return str(resp.headers.get("X-Influxdb-Version", "unknown"))
