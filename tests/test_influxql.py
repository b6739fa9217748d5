"""The InfluxQL client against the real InfluxDB: one kept HTTP client, shared by threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from hub.influxql import InfluxQL, InfluxQueryError
from tests.conftest import RunningStack


def test_closed_client_reopens_on_next_query(running_stack: RunningStack, influx_db: str) -> None:
    with InfluxQL(running_stack.settings.influx.url) as client:
        assert client.ping()
        databases = client.first_column("SHOW DATABASES")
    assert influx_db in databases
    assert client.first_column("SHOW DATABASES") == databases
    client.close()
    client.close()


def test_threads_share_one_client(running_stack: RunningStack, influx_db: str) -> None:
    client = running_stack.influx
    statements = [f"SELECT count(x) FROM m{i}" for i in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda q: client.query(q, database=influx_db), statements))
    assert answers == [[] for _ in statements]
    with pytest.raises(InfluxQueryError, match="error parsing query"):
        client.query("SELEKT 1", database=influx_db)
