"""A database holding a small simulated city, with its rollups and rp_config, for the package."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from dashboards.grafana.demo_points import CitySize, city_lines
from hub.influx_rollups import ROLLUP_LEVELS, RollupSetup, http_writer
from tests.conftest import RunningStack

HOUR_MS = 3_600_000
RAW_POLICY = "autogen"


@dataclass(frozen=True)
class CityDb:
    """The database, the data's window and the stack."""

    name: str
    start_ms: int
    end_ms: int
    stack: RunningStack
    setup: RollupSetup


def write_lines(url: str, database: str, lines: list[str], policy: str | None = None) -> None:
    """Post line protocol in batches of 5,000 lines."""
    params = {"db": database, "precision": "ms"}
    if policy:
        params["rp"] = policy
    with httpx.Client(timeout=60) as client:
        for start in range(0, len(lines), 5000):
            body = "\n".join(lines[start : start + 5000]).encode()
            resp = client.post(f"{url}/write", params=params, content=body)
            assert resp.status_code == 204, resp.text


def roll_up(setup: RollupSetup, start_ms: int, end_ms: int) -> None:
    """What the continuous queries would have done for the window, level by level."""
    for level in ROLLUP_LEVELS:
        for measurement in setup.fields:
            setup.backfill(measurement, level, start_ms, end_ms)


@pytest.fixture(scope="package")
def city_db(running_stack: RunningStack) -> Iterator[CityDb]:
    """Three hours of a small city up to now, rolled up to 1 m and 1 h."""
    name = f"test_boards_{secrets.token_hex(4)}"
    url = running_stack.settings.influx.url
    running_stack.influx.query(f'CREATE DATABASE "{name}"')
    try:
        end_ms = int(time.time() * 1000)
        start_ms = end_ms - 3 * HOUR_MS
        lines = list(city_lines(CitySize(), start_ms=start_ms, end_ms=end_ms))
        write_lines(url, name, lines)
        setup = RollupSetup(
            running_stack.influx, database=name, raw_policy=RAW_POLICY, write=http_writer(url)
        )
        setup.apply(setup.plan())
        roll_up(setup, start_ms - HOUR_MS, end_ms + 60_000)
        yield CityDb(name, start_ms, end_ms, running_stack, setup)
    finally:
        running_stack.influx.query(f'DROP DATABASE "{name}"')
