"""The rate window as a monotonic queue: the same change as a scan of every sample."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from device_registry.directory import DeviceRecord, SnapshotDirectory
from hub.alerts.clock import ManualClock
from hub.alerts.compiled_rules import MAX_WINDOW_SAMPLES, monotonic, rate_change
from hub.alerts.rule_engine import RuleEngine, Track, level_of
from hub.alerts.rule_model import parse_rules
from hub.ingest.wal_consumers import Reading

T0 = 1_795_000_000_000
GAUGE = DeviceRecord(device_id="g1", family="flood", device_type="vegapuls-c21", tags={})

samples = st.lists(
    st.tuples(st.integers(min_value=0, max_value=120_000), st.floats(-10, 10)),
    min_size=1,
    max_size=80,
)


def reference(history: list[tuple[int, float]], within_ms: int, rising: bool) -> float:
    """The change the engine computed before: a scan of every sample in the window."""
    t, value = history[-1]
    inside = [v for ts, v in history if ts >= t - within_ms]
    return value - min(inside) if rising else max(inside) - value


@settings(max_examples=300, deadline=None)
@given(steps=samples, within_ms=st.integers(min_value=0, max_value=60_000), rising=st.booleans())
def test_the_queue_gives_the_change_a_scan_of_every_sample_gives(
    steps: list[tuple[int, float]], within_ms: int, rising: bool
) -> None:
    window: list[tuple[int, float]] = []
    history: list[tuple[int, float]] = []
    t = T0
    for gap, value in steps:
        t += gap  # in time order, as a device's readings arrive
        history.append((t, value))
        change = rate_change(window, within_ms, rising, t, value)
        assert change == reference(history, within_ms, rising)
        assert change >= 0
        # Only candidates are kept, in time order, each one better than the one before.
        assert [ts for ts, _v in window] == sorted(ts for ts, _v in window)
        edges = [v for _t, v in window]
        assert edges == (sorted(edges) if rising else sorted(edges, reverse=True))
        assert len(window) <= MAX_WINDOW_SAMPLES


@settings(max_examples=100, deadline=None)
@given(steps=samples, rising=st.booleans(), value=st.floats(-10, 10))
def test_a_window_saved_with_every_sample_loads_as_the_queue(
    steps: list[tuple[int, float]], rising: bool, value: float
) -> None:
    """A track saved before the queue (every sample) gives the same next change."""
    history: list[tuple[int, float]] = []
    t = T0
    for gap, sample in steps:
        t += gap
        history.append((t, sample))
    kept = monotonic(list(history), rising)
    assert set(kept) <= set(history)
    t += 1_000
    within_ms = 10 * 60_000
    history.append((t, value))
    assert rate_change(kept, within_ms, rising, t, value) == reference(history, within_ms, rising)


def test_an_engine_restarted_on_an_old_full_window_still_raises() -> None:
    text = "rules: [{id: rising, kind: rate, metric: level_m, rise: 0.10, within: 15m}]"
    defaults, rules = parse_rules(text, "test.yaml")
    clock = ManualClock(T0 + 600_000)
    directory = SnapshotDirectory([GAUGE])
    engine = RuleEngine([(defaults, rule) for rule in rules], directory, clock)
    # As saved before the queue: every sample, the lowest first, rising since.
    old = Track(window=[(T0, 1.0), (T0 + 200_000, 0.95), (T0 + 400_000, 1.02)])
    engine.load({"rising|g1": Track.from_json(old.to_json())})
    assert engine.tracks["rising|g1"].window == [(T0 + 200_000, 0.95), (T0 + 400_000, 1.02)]
    events = engine.on_reading(
        Reading("g1", "flood", "telemetry", {}, {"level_m": 1.06}, clock.now_ms())
    )
    assert [(e.kind, e.rule_id) for e in events] == [("raise", "rising")]  # 0.95 -> 1.06


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=-5, max_value=5), min_size=1, max_size=40),
    raise_at=st.floats(min_value=-2, max_value=2),
    margin=st.floats(min_value=0, max_value=1),
    below=st.booleans(),
)
def test_the_engines_one_band_shortcut_moves_as_level_of(
    values: list[float], raise_at: float, margin: float, below: bool
) -> None:
    side, clear = ("below", raise_at + margin) if below else ("above", raise_at - margin)
    text = f"rules: [{{id: t, kind: threshold, metric: x, {side}: {raise_at!r}, clear: {clear!r}}}]"
    defaults, rules = parse_rules(text, "test.yaml")
    clock = ManualClock(T0)
    directory = SnapshotDirectory([GAUGE])
    engine = RuleEngine([(defaults, rule) for rule in rules], directory, clock)
    sign = -1.0 if below else 1.0
    level = 0
    for value in values:
        clock.advance(1)
        events = engine.on_reading(
            Reading("g1", "flood", "telemetry", {}, {"x": value}, clock.now_ms())
        )
        new = level_of(sign * value, level, [(sign * raise_at, sign * clear)])
        expected = [] if new == level else [("raise" if new else "clear")]
        assert [e.kind for e in events] == expected
        level = new
