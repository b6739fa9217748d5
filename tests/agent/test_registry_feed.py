"""A field agent's device list from a real registry API (uvicorn on a free port), and its cache.

Fetch, refresh by ETag, a token of another gateway refused, the registry down (the cached
list is polled, the agent keeps polling), a damaged cache (a clear one-line error).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_registry.api_tokens import create_token
from device_registry.database import open_database
from device_registry.directory import DirectoryError
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceCreate, DeviceTypeCreate
from hub.agent.agent import Agent
from hub.agent.cli import AgentStartError, build_agent
from hub.agent.device_list_cache import DeviceListCache, DeviceListCacheError, parse_device_rows
from hub.agent.registry_feed import (
    RegistryFeed,
    RegistryFeedConfig,
    RegistryFeedDirectory,
    RegistryRefusedError,
    feed_config,
)
from hub.local_ca import ensure_server_certificate
from hub.settings import AgentSettings, ConfigError, Settings, load_settings
from tests.agent.conftest import agent_settings, by_topic, wait_until
from tests.agent.registry_api_server import ServedRegistry, served_registry
from tests.conftest import MqttClientFactory
from tests.drivers.conftest import StationFactory


class Clock:
    """A clock the test moves, so that a refresh is due when the test says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def add_gauge(service: RegistryService, device_id: str, gateway_id: str, port: int) -> None:
    service.create_device(
        DeviceCreate(
            id=device_id,
            device_type="generic_4_20ma",
            state="active",
            gateway_id=gateway_id,
            protocol_address=f"127.0.0.1:{port}",
            driver_config={"timeout_s": 0.3, "poll_interval_s": 0.2},
        ),
        actor="test",
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ServedRegistry]:
    """A registry (SQLite) with two gateways and a flood gauge type, served over HTTP."""
    database = open_database(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    service = RegistryService(database)
    service.create_type(
        DeviceTypeCreate(
            name="generic_4_20ma", family="flood", protocol="modbus_tcp", expected_interval_s=60
        ),
        actor="test",
    )
    service.create_type(
        DeviceTypeCreate(
            name="field_agent",
            family="gateway",
            protocol="mqtt",
            expected_interval_s=60,
            is_gateway=True,
        ),
        actor="test",
    )
    for gw in ("gw-a", "gw-b"):
        service.create_device(DeviceCreate(id=gw, device_type="field_agent"), actor="test")
    with served_registry(service) as served:
        yield served
    database.close()


def token_for(registry: ServedRegistry, gateway_id: str) -> str:
    return create_token(
        registry.service.database,
        name=f"{gateway_id}-agent",
        role="gateway",
        actor="test",
        gateway_id=gateway_id,
    ).token


def feed_settings(
    state: Path, registry: ServedRegistry, gateway_id: str, token: str, **agent: Any
) -> Settings:
    return load_settings(
        None,
        state_dir=state,
        agent={
            "gateway_id": gateway_id,
            "registry_url": registry.url,
            "registry_token": token,
            "registry_timeout_s": 3,
            **agent,
        },
    )


def test_fetch_refresh_by_etag_outage_and_restart_from_the_cache(
    registry: ServedRegistry, tmp_path: Path
) -> None:
    add_gauge(registry.service, "g-1", "gw-a", 5020)
    add_gauge(registry.service, "other-gw", "gw-b", 5021)
    settings = feed_settings(tmp_path / "s", registry, "gw-a", token_for(registry, "gw-a"))
    config = feed_config(settings, "gw-a")
    clock = Clock()
    directory = RegistryFeedDirectory(config, clock=clock)
    try:
        assert [d.device_id for d in directory.devices_for_gateway("gw-a")] == ["g-1"]
        assert directory.devices_for_gateway("gw-b") == []  # never another gateway's
        record = directory.get("g-1")
        assert record is not None
        assert record.address == "127.0.0.1:5020"
        assert record.protocol == "modbus_tcp"
        # The cache: 0600, the same list, the registry's revision.
        cache = config.cache_file
        assert cache == tmp_path / "s" / "agent" / "devices-gw-a.json"
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
        saved = json.loads(cache.read_text())
        assert [d["device_id"] for d in saved["devices"]] == ["g-1"]
        assert saved["revision"] == registry.service.revision()

        # Not due yet: no request. Due, unchanged: a 304, the snapshot stays.
        assert directory.refresh() is False
        assert directory.fetches == 1
        clock.now += config.refresh_s
        generation = directory.generation
        assert directory.refresh() is False
        assert directory.fetches == 2
        assert directory.generation == generation
        # A new device for this gateway arrives on the next due refresh.
        add_gauge(registry.service, "g-2", "gw-a", 5022)
        clock.now += config.refresh_s
        assert directory.refresh() is True
        assert [d.device_id for d in directory.devices_for_gateway("gw-a")] == ["g-1", "g-2"]

        # The registry goes away: the list is kept, the failure noted (once).
        registry.stop()
        clock.now += config.refresh_s
        assert directory.refresh() is False
        assert directory.failing is not None
        assert "registry" in directory.failing
        assert len(directory.devices_for_gateway("gw-a")) == 2
    finally:
        directory.close()

    # A restart during the outage: the cached list, with where it came from.
    again = RegistryFeedDirectory(config, clock=clock)
    try:
        assert again.source == "cache"
        assert [d.device_id for d in again.devices_for_gateway("gw-a")] == ["g-1", "g-2"]
        registry.start()
        clock.now += config.refresh_s
        again.refresh()
        assert again.source == "registry"
        assert again.failing is None
    finally:
        again.close()


def test_a_token_of_another_gateway_is_refused_with_the_reason(
    registry: ServedRegistry, tmp_path: Path
) -> None:
    settings = feed_settings(tmp_path / "s", registry, "gw-b", token_for(registry, "gw-a"))
    with pytest.raises(AgentStartError, match=r"answered 403: .*belongs to gateway 'gw-a'"):
        build_agent(settings, None)
    # Nothing was cached from a refused answer.
    assert not (tmp_path / "s" / "agent" / "devices-gw-b.json").exists()
    # No token at all: the setting is named, and how to make one.
    bare = load_settings(
        None,
        state_dir=tmp_path / "s",
        agent={"gateway_id": "gw-b", "registry_url": registry.url},
    )
    with pytest.raises(AgentStartError, match=r"agent.registry_token: not set .*--role gateway"):
        build_agent(bare, None)


def test_token_file_and_a_registry_down_with_no_cache(
    registry: ServedRegistry, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(token_for(registry, "gw-a") + "\n")
    token_file.chmod(0o600)
    settings = load_settings(
        None,
        state_dir=tmp_path / "s",
        agent={
            "gateway_id": "gw-a",
            "registry_url": registry.url,
            "registry_token_file": str(token_file),
        },
    )
    directory = RegistryFeedDirectory(feed_config(settings, "gw-a"))
    directory.close()
    assert directory.devices_for_gateway("gw-a") == []
    registry.stop()
    (tmp_path / "s" / "agent" / "devices-gw-a.json").unlink()
    with pytest.raises(DirectoryError, match=r"no usable cached device list: .* does not exist"):
        RegistryFeedDirectory(feed_config(settings, "gw-a"))


def test_a_damaged_cache_during_an_outage_is_one_clear_line(
    registry: ServedRegistry, tmp_path: Path
) -> None:
    state = tmp_path / "s"
    token = token_for(registry, "gw-a")
    settings = feed_settings(state, registry, "gw-a", token)
    cache = state / "agent" / "devices-gw-a.json"
    cache.parent.mkdir(parents=True)
    cache.write_text('{"format": 1, "gateway_id": "gw-a", "devices": [{"device_id"')
    # With the registry up, the damaged cache is replaced by the registry's list.
    RegistryFeedDirectory(feed_config(settings, "gw-a")).close()
    assert json.loads(cache.read_text())["gateway_id"] == "gw-a"
    cache.write_text("\x00\x01 not json")
    registry.stop()
    config = tmp_path / "kotahub.toml"
    config.write_text(
        f'state_dir = "{state}"\n[agent]\ngateway_id = "gw-a"\n'
        f'registry_url = "{registry.url}"\nregistry_token = "{token}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "hub", "agent", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert done.returncode == 2, done.stderr
    assert "agent cannot start" in done.stderr
    assert f"{cache}: damaged, not JSON" in done.stderr
    assert "Traceback" not in done.stderr
    assert token not in done.stderr + done.stdout


async def test_the_agent_polls_through_a_registry_outage_and_picks_up_new_devices(
    registry: ServedRegistry,
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    modbus_station: StationFactory,
    unique_id: str,
) -> None:
    gw = "gw-a"
    station = await modbus_station()
    station.set_registers(1, 3, [1])
    station.set_int16(1, 4, 17)
    first, second = f"{unique_id}-g1", f"{unique_id}-g2"
    add_gauge(registry.service, first, gw, station.port)
    base = agent_settings(test_settings)
    agent_part = base.agent.model_dump() | {
        "gateway_id": gw,
        "registry_url": registry.url,
        "registry_token": token_for(registry, gw),
        "registry_refresh_s": 0.3,
        "registry_timeout_s": 2,
    }
    settings = base.model_copy(update={"agent": AgentSettings(**agent_part)})
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gw}/dev/#")
    directory = RegistryFeedDirectory(feed_config(settings, gw))
    agent = Agent(settings=settings, gateway_id=gw, directory=directory)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:

        def telemetry(device_id: str) -> int:
            return len(by_topic(watcher.messages, f"dev/{device_id}/telemetry"))

        await wait_until(lambda: telemetry(first) >= 2, 15)
        await asyncio.to_thread(registry.stop)
        await wait_until(lambda: directory.failing is not None, 15)
        during = telemetry(first)
        await wait_until(lambda: telemetry(first) >= during + 3, 15)  # polling goes on
        assert not task.done()
        await asyncio.to_thread(registry.start)
        add_gauge(registry.service, second, gw, station.port)
        await wait_until(lambda: telemetry(second) >= 1, 15)
        assert directory.failing is None
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        directory.close()
    payloads = by_topic(watcher.messages, f"dev/{second}/telemetry")
    assert payloads[0]["metrics"] == {"level_m": 1.7}


def test_https_with_the_registry_ca_and_a_clear_line_without_it(
    registry: ServedRegistry, tmp_path: Path
) -> None:
    files = ensure_server_certificate(tmp_path / "tls", ["127.0.0.1", "localhost"])
    add_gauge(registry.service, "g-tls", "gw-a", 5020)
    token = token_for(registry, "gw-a")
    with served_registry(registry.service, tls=(files.cert_file, files.key_file)) as secure:
        assert secure.url.startswith("https://")
        trusted = feed_settings(
            tmp_path / "a", secure, "gw-a", token, registry_ca_file=str(files.ca_file)
        )
        directory = RegistryFeedDirectory(feed_config(trusted, "gw-a"))
        directory.close()
        assert [d.device_id for d in directory.devices_for_gateway("gw-a")] == ["g-tls"]
        # Without the CA the system's trust store does not know it: named, with the fix.
        untrusted = feed_settings(tmp_path / "b", secure, "gw-a", token)
        with pytest.raises(
            AgentStartError, match=r"TLS certificate not trusted .*: set agent\.registry_ca_file"
        ):
            build_agent(untrusted, None)


cache_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)
valid_row = st.fixed_dictionaries(
    {
        "device_id": st.text(min_size=1, max_size=10),
        "family": st.sampled_from(["flood", "", "x"]),
        "device_type": st.text(max_size=5),
        "gateway_id": st.sampled_from(["gw-a", "gw-b", None]),
    },
    optional={"expected_interval_s": st.one_of(st.floats(), st.integers(), st.text(max_size=3))},
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    document=st.one_of(
        cache_documents,
        st.fixed_dictionaries(
            {
                "format": st.sampled_from([1, 2, "1"]),
                "gateway_id": st.sampled_from(["gw-a", "gw-b"]),
                "etag": st.one_of(st.none(), st.text(max_size=5), st.integers()),
                "revision": st.one_of(st.none(), st.integers(), st.booleans()),
                "fetched_at": st.one_of(st.text(max_size=5), st.none()),
                "devices": st.one_of(st.lists(valid_row, max_size=3), cache_documents),
            }
        ),
    ),
    raw=st.one_of(st.none(), st.binary(max_size=50)),
)
def test_any_cache_file_is_a_list_or_a_clear_error(
    tmp_path: Path, document: object, raw: bytes | None
) -> None:
    path = tmp_path / "cache.json"
    path.write_bytes(raw if raw is not None else json.dumps(document).encode())
    cache = DeviceListCache(path, "gw-a")
    error: DeviceListCacheError | None = None
    try:
        loaded = cache.load()
    except DeviceListCacheError as err:
        error = err
    if error is not None:
        assert str(path) in str(error)  # names the file, whatever the fault
        return
    assert loaded is not None
    assert all(d.gateway_id == "gw-a" for d in loaded.devices)
    # What loads, saves and loads again the same.
    cache.save(loaded.rows, loaded.etag, loaded.revision)
    again = cache.load()
    assert again is not None
    assert again.devices == loaded.devices


@functools.cache
def answer_parser() -> RegistryFeed:
    """One feed for all examples (its HTTP client is never used: only the parser)."""
    config = RegistryFeedConfig(
        url="http://127.0.0.1:9", token="khr_x", gateway_id="gw-a", cache_file=Path("unused")
    )
    return RegistryFeed(config)


@settings(max_examples=150, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=60),
        cache_documents.map(lambda d: json.dumps(d).encode()),
        st.fixed_dictionaries(
            {
                "gateway_id": st.sampled_from(["gw-a", "gw-b", None]),
                "revision": st.one_of(st.integers(), st.text(max_size=3), st.none()),
                "devices": st.one_of(st.lists(valid_row, max_size=3), cache_documents),
            }
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_any_registry_answer_is_a_list_or_a_refusal(body: bytes) -> None:
    refusal: RegistryRefusedError | None = None
    try:
        answer = answer_parser()._parse(body, '"rev-1"', "registry test")
    except RegistryRefusedError as err:
        refusal = err
    if refusal is not None:
        assert str(refusal).startswith("registry test")  # names the registry
        return
    assert answer.rows is not None
    loaded = parse_device_rows(list(answer.rows), "gw-a", where="again")[0]
    assert all(d.gateway_id == "gw-a" for d in loaded)


@settings(max_examples=100, deadline=None)
@given(url=st.text(max_size=40))
def test_any_registry_url_is_taken_or_named(url: str) -> None:
    settings_ = load_settings(
        None, agent={"gateway_id": "gw-a", "registry_url": url or "x", "registry_token": "t"}
    )
    refusal: ConfigError | None = None
    try:
        config = feed_config(settings_, "gw-a")
    except ConfigError as err:
        refusal = err
    if refusal is not None:
        assert str(refusal).startswith("agent.registry_url: ")  # names the setting
        return
    assert config.url.startswith(("http://", "https://"))
