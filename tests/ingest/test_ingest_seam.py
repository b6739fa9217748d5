"""The seam, property-based: any message through decode, WAL and line protocol into InfluxDB.

Hypothesis throws arbitrary bytes and arbitrary JSON (contract-shaped or not) at the
stages the hub chains for each message: the decoder, the encoding of a group of lines
as one WAL record, the WAL's append, fsync and read-back, and the real InfluxDB's
``/write``. No stage may raise, and every message must end as exactly one outcome: its
points written, or one dead-letter point, each of which InfluxDB accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_registry.directory import SnapshotDirectory
from hub.ingest.contract_decoder import Accepted, ContractDecoder, Rejected
from hub.ingest.ingest_service import encode_lines
from hub.ingest.write_ahead_log import WriteAheadLog
from tests.conftest import RunningStack
from tests.ingest.conftest import device

NOW = 1_795_000_000_000
TOPICS = st.sampled_from(
    [
        "kota/v1/dev/g1/telemetry",
        "kota/v1/dev/g1/event",
        "kota/v1/dev/g1/status",
        "kota/v1/gw/gw9/dev/g1/telemetry",  # foreign gateway
        "kota/v1/dev/ghost/telemetry",  # unknown device
        "kota/v1/dev/g1/cmd/reboot",  # not a contract topic
    ]
)
TEXT = st.text(max_size=40) | st.sampled_from(["\ud800", "a\nb", "\\", '"', "\x00", "😀"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
METRIC_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True) | TEXT
CONTRACT = st.fixed_dictionaries(
    {},
    optional={
        "ts": st.none() | st.integers(min_value=NOW - 10**9, max_value=NOW + 10**6) | TEXT,
        "seq": st.none() | st.integers(min_value=-5, max_value=2**66) | st.booleans(),
        "metrics": st.dictionaries(METRIC_NAMES, SCALARS, max_size=5) | JSON_VALUES,
        "online": st.booleans() | SCALARS,
        "reason": TEXT | SCALARS,
    },
)


def _encode(value: Any) -> bytes:
    # ensure_ascii keeps lone surrogates as \\u escapes: valid JSON, invalid Unicode.
    return json.dumps(value, allow_nan=True).encode()


PAYLOADS = st.binary(max_size=300) | CONTRACT.map(_encode) | JSON_VALUES.map(_encode)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(messages=st.lists(st.tuples(TOPICS, PAYLOADS), min_size=1, max_size=12))
def test_every_message_is_written_or_dead_lettered(
    running_stack: RunningStack,
    influx_db: str,
    tmp_path_factory: Any,
    messages: list[tuple[str, bytes]],
) -> None:
    decoder = ContractDecoder(SnapshotDirectory([device("g1")]))
    lines: list[str] = []
    rejected = 0
    for index, (topic, raw) in enumerate(messages):
        result = decoder.decode(topic, raw, NOW + index)
        if isinstance(result, Rejected):
            rejected += 1
            lines.append(result.deadletter_line(time_ms=NOW + index))
        else:
            assert isinstance(result, Accepted)
            lines.extend(result.lines)
    if not lines:
        return  # only messages without metrics (or cleared statuses): nothing to write
    wal = WriteAheadLog(Path(tmp_path_factory.mktemp("wal")))
    try:
        wal.append(encode_lines(lines))
        wal.sync()
        records, _end = wal.read(wal.first_position(), 1 << 20)
    finally:
        wal.close()
    body = b"\n".join(records)
    assert body.count(b"\n") + 1 == len(lines)  # every point is one line
    running_stack.influx.query(f'DROP DATABASE "{influx_db}"')
    running_stack.influx.query(f'CREATE DATABASE "{influx_db}"')
    resp = httpx.post(
        f"{running_stack.settings.influx.url}/write",
        params={"db": influx_db, "precision": "ms"},
        content=body,
        timeout=10,
    )
    assert resp.status_code == 204, (resp.text, body)
    dead = running_stack.influx.rows('SELECT count("count") FROM deadletter', database=influx_db)
    assert (int(dead[0]["count"]) if dead else 0) == rejected
