"""Line protocol formatting: tag escaping, the series prefix, device_status points."""

from __future__ import annotations

import httpx
from hypothesis import given
from hypothesis import strategies as st

from hub.ingest.device_status import StatusChange
from hub.ingest.line_protocol import escape_measurement, escape_tag, tag_prefix
from tests.conftest import RunningStack


def _reference_prefix(measurement: str, tags: dict[str, str]) -> str:
    """The definition: every key and value escaped, empty ones left out, keys sorted."""
    pairs = [(escape_tag(k), escape_tag(tags[k])) for k in sorted(tags)]
    return ",".join([escape_measurement(measurement), *(f"{k}={v}" for k, v in pairs if k and v)])


def test_prefix_escapes_only_what_needs_it() -> None:
    tags = {
        "site": "gauge-001",
        "kecamatan": "Semarang Timur",
        "model": "a,b=c",
        "note": "ends\\",
        "only": "\\",
        "empty": "",
        "device_id": "g1",
    }
    assert tag_prefix("flood", tags) == (
        "flood,device_id=g1,kecamatan=Semarang\\ Timur,model=a\\,b\\=c,note=ends,site=gauge-001"
    )


def test_prefix_escapes_keys_and_measurement() -> None:
    assert tag_prefix("pump station", {"a key": "v\nw"}) == "pump\\ station,a\\ key=v\\ w"


def test_escaped_tags_read_back_from_influxdb(running_stack: RunningStack, influx_db: str) -> None:
    tags = {"device_id": "g 1", "model": "a,b=c", "note": "two\nlines", "path": "C:\\"}
    line = f"{tag_prefix('pump station', tags)} level=1.5 1700000000000"
    resp = httpx.post(
        f"{running_stack.settings.influx.url}/write",
        params={"db": influx_db, "precision": "ms"},
        content=line.encode(),
    )
    assert resp.status_code == 204, resp.text
    rows = running_stack.influx.rows('SELECT * FROM "pump station"', database=influx_db)
    assert len(rows) == 1
    row = rows[0]
    assert (row["device_id"], row["model"], row["path"]) == ("g 1", "a,b=c", "C:")
    assert row["note"] == "two lines"  # a newline cannot be stored; it becomes a space
    assert row["level"] == 1.5


@given(
    st.text(min_size=1, max_size=12),
    st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=6),
)
def test_prefix_matches_escaping_every_text(measurement: str, tags: dict[str, str]) -> None:
    assert tag_prefix(measurement, tags) == _reference_prefix(measurement, tags)


def test_status_change_line() -> None:
    tags = (("device_id", "g1"), ("family", "flood"), ("kecamatan", "Semarang Timur"))
    online = StatusChange("g1", "flood", True, "data", 1_700_000_000_000, tags)
    offline = StatusChange("g1", "flood", False, 'said "bye"', 1_700_000_000_001, tags)
    prefix = "device_status,device_id=g1,family=flood,kecamatan=Semarang\\ Timur"
    assert online.line() == f'{prefix} online=1.0,reason="data" 1700000000000'
    assert offline.line() == f'{prefix} online=0.0,reason="said \\"bye\\"" 1700000000001'
