"""String fields round-trip exactly through the decoder, line protocol and the real InfluxDB."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_registry.directory import SnapshotDirectory
from hub.ingest.contract_decoder import Accepted, ContractDecoder, Reason, Rejected
from hub.ingest.line_protocol import format_field, format_line
from tests.conftest import RunningStack
from tests.ingest.conftest import device

NOW = 1_795_000_000_000
HOSTILE = [
    'say "hi"',
    "back\\slash",
    "ends with one\\",
    "ends with two\\\\",
    "\\",
    '\\"',
    "tab\there",
    "emoji 😀🌊 and 🇮🇩",
    "right-to-left: שלום عليكم",
    "mixed \u202eevil\u202c",
    "a=b,c d",
    "",
]


def _post(running_stack: RunningStack, database: str, lines: list[str]) -> None:
    resp = httpx.post(
        f"{running_stack.settings.influx.url}/write",
        params={"db": database, "precision": "ms"},
        content="\n".join(lines).encode("utf-8"),
        timeout=10,
    )
    assert resp.status_code == 204, resp.text


def _stored(running_stack: RunningStack, database: str) -> dict[str, str]:
    rows = running_stack.influx.rows(
        'SELECT "note" FROM "flood" GROUP BY "device_id"', database=database
    )
    return {row["device_id"]: row["note"] for row in rows}


def test_hostile_strings_round_trip_through_the_decoder(
    running_stack: RunningStack, influx_db: str
) -> None:
    ids = [f"s{i}" for i in range(len(HOSTILE))]
    decoder = ContractDecoder(SnapshotDirectory([device(i) for i in ids]))
    lines: list[str] = []
    for device_id, text in zip(ids, HOSTILE, strict=True):
        body = json.dumps({"ts": NOW, "metrics": {"note": text}}).encode()
        result = decoder.decode(f"kota/v1/dev/{device_id}/telemetry", body, NOW)
        assert isinstance(result, Accepted), (text, result)
        lines.extend(result.lines)
    _post(running_stack, influx_db, lines)
    assert _stored(running_stack, influx_db) == dict(zip(ids, HOSTILE, strict=True))


def test_newlines_are_refused_from_devices_and_pictured_in_hub_text(
    running_stack: RunningStack, influx_db: str
) -> None:
    decoder = ContractDecoder(SnapshotDirectory([device("n1")]))
    body = json.dumps({"metrics": {"note": "two\nlines\r"}}).encode()
    result = decoder.decode("kota/v1/dev/n1/telemetry", body, NOW)
    assert isinstance(result, Rejected)
    assert result.reason is Reason.BAD_TEXT
    # A dead-letter's excerpt is hub-made text: a raw newline of the payload shows as
    # its picture (U+240A), written and read back exactly, and the point stays one line.
    garbage = decoder.decode("kota/v1/dev/n1/telemetry", b'not json\n"quoted"\\', NOW)
    assert isinstance(garbage, Rejected)
    assert garbage.reason is Reason.NOT_JSON
    line = garbage.deadletter_line(time_ms=NOW)
    assert "\n" not in line
    _post(running_stack, influx_db, [line])
    rows = running_stack.influx.rows('SELECT "excerpt" FROM "deadletter"', database=influx_db)
    assert [row["excerpt"] for row in rows] == ['not json\u240a"quoted"\\']
    raw = format_field("a\nb\rc\x00d\te")
    assert raw == '"a\u240ab\u240dc\u2400d\te"'


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.text(
            st.characters(blacklist_categories=["Cs", "Cc"]) | st.sampled_from(["\\", '"', "\t"]),
            max_size=40,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_storable_text_round_trips(
    running_stack: RunningStack, influx_db: str, texts: list[str]
) -> None:
    running_stack.influx.query('DROP SERIES FROM "flood"', database=influx_db)
    lines = [
        format_line("flood", {"device_id": f"h{i}"}, {"note": text}, NOW)
        for i, text in enumerate(texts)
    ]
    _post(running_stack, influx_db, lines)
    assert _stored(running_stack, influx_db) == {f"h{i}": t for i, t in enumerate(texts)}
