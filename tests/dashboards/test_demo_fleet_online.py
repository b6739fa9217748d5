"""The demo city's fleet_online points say what its device_status points say, minute by minute."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from dashboards.grafana.demo_points import MINUTE_MS, CitySize, city_lines, devices

HOUR_MS = 3_600_000


def _tags(head: str) -> dict[str, str]:
    parts = head.replace("\\ ", "\x00").split(",")[1:]
    return {k: v.replace("\x00", " ") for k, v in (p.split("=", 1) for p in parts)}


def _split(text: str) -> tuple[str, str, int]:
    head, fields, stamp = text.replace("\\ ", "\x00").rsplit(" ", 2)
    return head.replace("\x00", "\\ "), fields, int(stamp)


def _recount(lines: list[str]) -> dict[int, dict[tuple[str, str, str], tuple[int, int]]]:
    """Per minute written, the counts from the device_status points at or before it."""
    changes: list[tuple[int, int, str, tuple[str, str, str], bool]] = []
    minutes: set[int] = set()
    for order, text in enumerate(lines):
        head, fields, stamp = _split(text)
        if head.startswith("device_status,"):
            tags = _tags(head)
            group = (tags["family"], tags.get("kecamatan", ""), tags.get("team", ""))
            changes.append((stamp, order, tags["device_id"], group, "online=1.0" in fields))
        elif head.startswith("fleet_online,"):
            minutes.add(stamp)
    changes.sort()
    out: dict[int, dict[tuple[str, str, str], tuple[int, int]]] = {}
    state: dict[str, tuple[tuple[str, str, str], bool]] = {}
    position = 0
    for minute in sorted(minutes):
        while position < len(changes) and changes[position][0] <= minute:
            _, _, device_id, group, online = changes[position]
            state[device_id] = (group, online)
            position += 1
        online_by: Counter[tuple[str, str, str]] = Counter()
        known_by: Counter[tuple[str, str, str]] = Counter()
        for group, online in state.values():
            known_by[group] += 1
            online_by[group] += online
        out[minute] = {g: (online_by[g], known_by[g]) for g in known_by}
    return out


def _written(lines: list[str]) -> dict[int, dict[tuple[str, str, str], tuple[int, int]]]:
    out: dict[int, dict[tuple[str, str, str], tuple[int, int]]] = {}
    for text in lines:
        if not text.startswith("fleet_online,"):
            continue
        head, fields, stamp = _split(text)
        tags = _tags(head)
        assert tags["hub"] == "kotahub-hub-1"
        values = dict(f.split("=") for f in fields.split(","))
        counts = (int(values["online"].rstrip("i")), int(values["devices"].rstrip("i")))
        out.setdefault(stamp, {})[
            (tags["family"], tags.get("kecamatan", ""), tags.get("team", ""))
        ] = counts
    return out


@settings(max_examples=15, deadline=None)
@given(st.integers(0, HOUR_MS), st.integers(2 * MINUTE_MS, 5 * HOUR_MS))
def test_each_minute_counts_the_status_points_before_it(offset_ms: int, span_ms: int) -> None:
    start_ms = 1_764_000_000_000 + offset_ms
    end_ms = start_ms + span_ms
    lines = list(city_lines(CitySize(), start_ms=start_ms, end_ms=end_ms))
    written = _written(lines)
    # Every minute of the span has its points, and nothing outside it.
    first = start_ms + (-start_ms) % MINUTE_MS
    assert sorted(written) == list(range(first, end_ms + 1, MINUTE_MS))
    assert written == _recount(lines)
    # By the last minute every device of the city is known.
    last = written[max(written)]
    assert sum(known for _, known in last.values()) == len(devices(CitySize()))
