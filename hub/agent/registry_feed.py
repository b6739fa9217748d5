"""A field agent's device list from the registry API, kept on disk for outages.

The agent of a gateway on another machine asks the registry for the devices assigned to
its gateway (``GET /api/v1/gateways/{gateway_id}/devices``) with a token of the
``gateway`` role scoped to that gateway, so it can never read another gateway's devices.
It asks again every ``agent.registry_refresh_s`` with the last ETag (the registry's change
counter): while nothing changed the answer is an empty 304.

Every good list is written to the cache (``device_list_cache``). When the registry cannot
be reached at start, the agent polls the cached list; during a run it keeps the list it
has. A failure is logged once when it starts and once when it ends, not on every try.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from device_registry.directory import DirectoryError, SnapshotDirectory
from hub.agent.device_list_cache import DeviceListCache, DeviceListCacheError, parse_device_rows
from hub.settings import ConfigError, RegistryClientSettings, Settings

log = logging.getLogger(__name__)
# A gateway's list is small; an answer larger than this is not the registry's.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
DIRECTORY_PATH = "/api/v1/directory"


class RegistryUnavailableError(DirectoryError):
    """The registry did not answer (down, unreachable, timeout, 5xx): a cached list may do."""


class RegistryRefusedError(DirectoryError):
    """The registry answered no (401, 403, 404) or with something that is not a device list."""


@dataclass(frozen=True, slots=True)
class FeedAnswer:
    """One answer: ``rows`` None means not modified since ``etag``."""

    rows: tuple[dict[str, Any], ...] | None
    etag: str | None
    revision: int | None


@dataclass(frozen=True, slots=True)
class RegistryFeedConfig:
    """Where and how the agent reads its gateway's list (from ``[agent]`` settings)."""

    url: str
    token: str
    gateway_id: str | None  # None: every device (a hub worker's list, GET /api/v1/directory)
    cache_file: Path
    refresh_s: float = 60.0
    timeout_s: float = 10.0
    ca_file: Path | None = None

    def __repr__(self) -> str:
        """Never the token."""
        return f"RegistryFeedConfig(url={self.url!r}, gateway_id={self.gateway_id!r})"


def feed_config(settings: Settings, gateway_id: str) -> RegistryFeedConfig:
    """The agent's feed (``[agent]``), checked without the network; ConfigError names the key."""
    agent = settings.agent
    buffer_dir = Path(agent.buffer_dir or settings.state_dir / "agent")
    return _config(
        agent,
        "agent",
        gateway_id,
        agent.device_cache_file or buffer_dir / f"devices-{gateway_id}.json",
        hint=(
            f"`kotahub registry token create {gateway_id}-agent --role gateway "
            f"--gateway {gateway_id}`"
        ),
    )


def hub_feed_config(settings: Settings) -> RegistryFeedConfig:
    """A hub worker's feed of every device (``[ingest]``); ConfigError names the key."""
    ingest = settings.ingest
    cache = ingest.device_cache_file or settings.state_dir / f"devices-{ingest.client_id}.json"
    return _config(
        ingest,
        "ingest",
        None,
        cache,
        hint="`kotahub registry token create hub-worker --role viewer`",
    )


def _config(
    section: RegistryClientSettings,
    name: str,
    gateway_id: str | None,
    cache_file: Path,
    *,
    hint: str,
) -> RegistryFeedConfig:
    if section.registry_url is None:
        raise ConfigError(f"{name}.registry_url: not set")
    parts = urlsplit(section.registry_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{name}.registry_url: {section.registry_url!r} is not an http(s) address "
            "(https://registry.kota.example:8080)"
        )
    if section.registry_token is not None:
        token = section.registry_token.get_secret_value().strip()
    elif section.registry_token_file is not None:
        try:
            token = section.registry_token_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(
                f"{name}.registry_token_file: {section.registry_token_file}: {err.strerror}"
            ) from err
    else:
        raise ConfigError(
            f"{name}.registry_token: not set (nor {name}.registry_token_file): make one with "
            + hint
        )
    if not token:
        raise ConfigError(f"{name}.registry_token: empty")
    if section.registry_ca_file is not None and not section.registry_ca_file.is_file():
        raise ConfigError(f"{name}.registry_ca_file: {section.registry_ca_file} does not exist")
    return RegistryFeedConfig(
        url=section.registry_url.rstrip("/"),
        token=token,
        gateway_id=gateway_id,
        cache_file=cache_file,
        refresh_s=section.registry_refresh_s,
        timeout_s=section.registry_timeout_s,
        ca_file=section.registry_ca_file,
    )


class RegistryFeed:
    """Fetches one gateway's device list from the registry API (blocking, with timeouts)."""

    def __init__(self, config: RegistryFeedConfig) -> None:
        self.config = config
        verify: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(config.ca_file))
        self._client = httpx.Client(
            base_url=config.url,
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=config.timeout_s,
            verify=verify,
            follow_redirects=False,
        )
        # httpx logs every request at INFO: one line a minute per agent (every 5 s on a hub
        # worker) says nothing; failures are logged here, once each way.
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        gateway = config.gateway_id
        self.path = (
            f"/api/v1/gateways/{quote(gateway, safe='')}/devices" if gateway else DIRECTORY_PATH
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def fetch(self, etag: str | None) -> FeedAnswer:
        """The list, or not modified since ``etag``; raises Registry{Unavailable,Refused}Error."""
        where = f"registry {self.config.url}"
        headers = {"If-None-Match": etag} if etag else {}
        try:
            with self._client.stream("GET", self.path, headers=headers) as response:
                body = _read_bounded(response, where)
        except httpx.TransportError as err:
            raise RegistryUnavailableError(f"{where}: {_transport_reason(err)}") from err
        status = response.status_code
        if status == 304:
            return FeedAnswer(None, etag, None)
        if status >= 500 or status in (408, 429):
            raise RegistryUnavailableError(f"{where}: answered {status}")
        if status != 200:
            raise RegistryRefusedError(f"{where}: answered {status}: {_detail(body)}")
        return self._parse(body, response.headers.get("etag"), where)

    def _parse(self, body: bytes, etag: str | None, where: str) -> FeedAnswer:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as err:
            raise RegistryRefusedError(f"{where}: not a JSON device list ({err})") from err
        gateway = self.config.gateway_id
        if not isinstance(data, dict) or (gateway and data.get("gateway_id") != gateway):
            raise RegistryRefusedError(f"{where}: not gateway {gateway}'s device list")
        revision = data.get("revision")
        if not isinstance(revision, int) or isinstance(revision, bool):
            revision = None
        try:
            _records, rows = parse_device_rows(
                data.get("devices"), self.config.gateway_id, where=where
            )
        except DirectoryError as err:
            raise RegistryRefusedError(str(err)) from err
        return FeedAnswer(rows, etag, revision)


def _read_bounded(response: httpx.Response, where: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise RegistryRefusedError(f"{where}: answer larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _transport_reason(err: httpx.TransportError) -> str:
    if isinstance(err, httpx.TimeoutException):
        return "no answer in time"
    text = str(err) or type(err).__name__
    if isinstance(err, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in text:
        return f"TLS certificate not trusted ({text}): set agent.registry_ca_file"
    return text


def _detail(body: bytes) -> str:
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError, RecursionError):
        detail = None
    if isinstance(detail, str):
        return detail[:300]
    return body[:300].decode("utf-8", "replace")


class RegistryFeedDirectory(SnapshotDirectory):
    """A ``DeviceDirectory`` of one gateway's devices, from the registry API and its cache.

    At construction it fetches the list (or, when the registry is unreachable, loads the
    cache); a refused token, an unknown gateway, or no list at all raises DirectoryError.
    ``refresh`` asks the registry again once ``refresh_s`` has passed and keeps the last
    list on any failure, so the agent's polling never stops for the registry.
    """

    def __init__(
        self,
        config: RegistryFeedConfig,
        *,
        feed: RegistryFeed | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.who = f"agent {config.gateway_id}" if config.gateway_id else "hub"
        self.feed = feed or RegistryFeed(config)
        self.cache = DeviceListCache(config.cache_file, config.gateway_id)
        self._clock = clock
        self._fetch_lock = threading.Lock()
        self._etag: str | None = None
        self.revision: int | None = None
        self.source = "registry"  # or "cache": where the current list came from
        self.failing: str | None = None  # the current failure, logged once
        self.fetches = 0
        self.failures = 0
        super().__init__()
        try:
            self._start()
        except BaseException:
            self.feed.close()
            raise
        self._next_fetch = self._clock() + config.refresh_s

    def _start(self) -> None:
        try:
            cached = self.cache.load()
        except DeviceListCacheError as err:
            cache_error: DeviceListCacheError | None = err
            cached = None
        else:
            cache_error = None
        try:
            answer = self.feed.fetch(cached.etag if cached else None)
        except RegistryUnavailableError as err:
            if cached is None:
                raise DirectoryError(
                    f"{err}; and no usable cached device list: "
                    + (str(cache_error) if cache_error else f"{self.cache.path} does not exist")
                ) from err
            self.replace(cached.devices)
            self._etag, self.revision, self.source = cached.etag, cached.revision, "cache"
            self._failed(str(err))
            log.warning(
                "%s: polling the %d device(s) cached at %s (%s) until the registry answers",
                self.who,
                len(cached.devices),
                cached.fetched_at,
                self.cache.path,
            )
            return
        if cache_error is not None:
            log.warning("%s: %s; replaced by the registry's list", self.who, cache_error)
        if answer.rows is None:
            assert cached is not None  # 304 only answers the ETag we sent
            self.replace(cached.devices)
            self._etag, self.revision = cached.etag, cached.revision
        else:
            self._apply(answer)
        self.fetches += 1

    def _apply(self, answer: FeedAnswer) -> None:
        assert answer.rows is not None
        records, rows = parse_device_rows(
            list(answer.rows), self.config.gateway_id, where=self.feed.path
        )
        self.replace(records)
        self._etag, self.revision, self.source = answer.etag, answer.revision, "registry"
        try:
            self.cache.save(rows, answer.etag, answer.revision)
        except OSError as err:
            # The list itself is good: poll it, and say the outage copy is not kept.
            log.error(
                "%s: device list not cached at %s: %s",
                self.who,
                self.cache.path,
                err,
            )

    def _failed(self, reason: str) -> None:
        self.failures += 1
        if reason != self.failing:
            log.warning(
                "%s: device list not refreshed: %s (keeping the last list)",
                self.who,
                reason,
            )
        self.failing = reason

    def refresh(self) -> bool:
        """Ask the registry when due; True when the list changed. Failures keep the last list."""
        with self._fetch_lock:
            if self._clock() < self._next_fetch:
                return False
            self._next_fetch = self._clock() + self.config.refresh_s
            before = self.generation
            try:
                answer = self.feed.fetch(self._etag)
                if answer.rows is not None:
                    self._apply(answer)
            except DirectoryError as err:
                self._failed(str(err))
                return False
            self.fetches += 1
            if self.failing is not None:
                log.info("%s: the registry answers again", self.who)
                self.failing = None
            self.source = "registry"
            return self.generation != before

    def close(self) -> None:
        """Close the HTTP client."""
        self.feed.close()
