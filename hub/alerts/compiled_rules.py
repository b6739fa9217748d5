"""Compiled rules: a rule with its file's defaults, where it is filed, what one device sees.

A device's ``Watch`` list is built once per registry snapshot (``RuleEngine._rules_for``):
the rule, the track key, the kind of evaluation and the device's own bands, so that a
reading costs a dict lookup and a comparison per rule instead of an ``isinstance`` chain,
a key built from strings and a threshold looked up in the registry.

A rate rule's window is kept as a monotonic queue (``rate_change``): only the samples that
can still be the window's minimum (rising) or maximum (falling) are kept, so a reading
costs O(1) amortised instead of a scan of every sample in the window, and the saved
window is short.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from device_registry.directory import DeviceRecord
from hub.alerts.rule_model import (
    AbsenceRule,
    AttributeThreshold,
    Defaults,
    MatchRule,
    RateRule,
    Rule,
    StagesRule,
    Threshold,
    ThresholdRule,
)

MAX_WINDOW_SAMPLES = 512

# How a watch evaluates a reading (ints, compared with ``is`` in the engine's loop).
LEVEL = 0  # threshold or stages: the value's level in the device's bands
RATE = 1  # rate of change within a window
MATCH = 2  # equals / in / not equals
ABSENCE = 3  # a metric's silence (the reading only restarts its clock)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def fires_below(rule: Rule) -> bool:
    """Whether the rule fires on low values (its levels are computed on -value)."""
    if isinstance(rule, ThresholdRule):
        return rule.below is not None
    return isinstance(rule, StagesRule) and rule.direction == "below"


def attribute_of(record: DeviceRecord | None, name: str) -> float | None:
    """A device's numeric attribute: its registry tag, else ``driver_config['alert']``."""
    if record is None:
        return None
    raw: object = record.tags.get(name)
    if raw is None:
        alert_config = record.driver_config.get("alert")
        raw = alert_config.get(name) if isinstance(alert_config, Mapping) else None
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return None
    return _number(raw)


def _threshold(value: Threshold, record: DeviceRecord | None) -> float | None:
    if isinstance(value, AttributeThreshold):
        found = attribute_of(record, value.attribute)
        return found if found is not None else value.default
    return float(value)


def level_of(value: float, level: int, bands: list[tuple[float, float]]) -> int:
    """The level ``value`` puts an alert at: bands are (raise above, stay while >= clear)."""
    target = 0
    for index, (raise_at, clear_at) in enumerate(bands, start=1):
        if value > raise_at or (index <= level and value >= clear_at):
            target = index
    return target


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its file's defaults."""

    rule: Rule
    defaults: Defaults

    @property
    def id(self) -> str:
        """The rule's id."""
        return self.rule.id

    def metric(self) -> str | None:
        """The metric the rule reads (None for an offline rule)."""
        return getattr(self.rule, "metric", None)

    def admits(
        self, device_id: str, family: str, record: DeviceRecord | None, tags: Mapping[str, str]
    ) -> bool:
        """Whether the rule's scope takes this device."""
        scope = self.rule.scope
        if scope.families and family not in scope.families:
            return False
        if scope.devices and device_id not in scope.devices:
            return False
        if scope.device_types and (record is None or record.device_type not in scope.device_types):
            return False
        all_tags: Mapping[str, str] = record.tags if record is not None else tags
        if scope.kecamatan and all_tags.get("kecamatan") not in scope.kecamatan:
            return False
        if scope.teams and all_tags.get("team") not in scope.teams:
            return False
        return all(all_tags.get(k) == v for k, v in scope.tags.items())

    def bands(self, record: DeviceRecord | None) -> list[tuple[float, float]] | None:
        """(raise, clear) per level for this device, signs flipped for 'below'; None: n/a."""
        rule = self.rule
        if isinstance(rule, ThresholdRule):
            side = rule.above if rule.above is not None else rule.below
            assert side is not None
            raise_at = _threshold(side, record)
            clear_at = _threshold(rule.clear, record) if rule.clear is not None else raise_at
            if raise_at is None or clear_at is None:
                return None
            if rule.below is not None:
                return [(-raise_at, -clear_at)]
            return [(raise_at, clear_at)]
        if isinstance(rule, StagesRule):
            sign = -1.0 if rule.direction == "below" else 1.0
            out: list[tuple[float, float]] = []
            for stage in rule.stages:
                raise_at = _threshold(stage.threshold, record)
                if raise_at is None:
                    return None
                clear = _threshold(stage.clear, record) if stage.clear is not None else None
                if clear is None:
                    clear = raise_at - sign * rule.hysteresis
                out.append((sign * raise_at, sign * clear))
            return out
        if isinstance(rule, RateRule):
            amount = rule.rise if rule.rise is not None else rule.fall
            assert amount is not None
            return [(amount, rule.clear if rule.clear is not None else amount)]
        return [(0.5, 0.5)]  # match and absence: the level is 0 or 1 already


def index_keys(compiled: CompiledRule) -> list[tuple[str, str]]:
    """Where a rule is filed: under one scope key that every device it admits has."""
    scope = compiled.rule.scope
    if scope.devices:
        return [("device", d) for d in scope.devices]
    if scope.tags:
        key, value = next(iter(scope.tags.items()))
        return [(f"tag:{key}", value)]
    if scope.kecamatan:
        return [("kecamatan", k) for k in scope.kecamatan]
    if scope.teams:
        return [("team", t) for t in scope.teams]
    if scope.device_types:
        return [("type", t) for t in scope.device_types]
    if scope.families:
        return [("family", f) for f in scope.families]
    return [("all", "")]


@dataclass(slots=True)
class Watch:
    """One rule as one device sees it: its track key, kind, bands and sign."""

    compiled: CompiledRule
    key: str  # "<rule id>|<device id>"
    kind: int
    bands: list[tuple[float, float]]
    sign: float  # -1.0 when the rule fires on low values (levels are computed on -value)
    within_ms: int = 0  # rate rules: the window
    rising: bool = True  # rate rules: a rise (else a fall)


def watch_of(compiled: CompiledRule, device_id: str, record: DeviceRecord | None) -> Watch | None:
    """The rule's watch on this device; None when the device lacks a threshold it needs."""
    rule = compiled.rule
    key = f"{compiled.id}|{device_id}"
    if isinstance(rule, MatchRule):
        return Watch(compiled, key, MATCH, [(0.5, 0.5)], 1.0)
    if isinstance(rule, AbsenceRule):
        return Watch(compiled, key, ABSENCE, [(0.5, 0.5)], 1.0)
    bands = compiled.bands(record)
    if bands is None:
        return None
    if isinstance(rule, RateRule):
        within_ms = round(rule.within * 1000)
        return Watch(compiled, key, RATE, bands, 1.0, within_ms, rule.rise is not None)
    return Watch(compiled, key, LEVEL, bands, -1.0 if fires_below(rule) else 1.0)


def rate_change(
    window: list[tuple[int, float]], within_ms: int, rising: bool, t: int, value: float
) -> float:
    """How far the metric rose (or fell) within the window ending at ``t``; ``window`` moves.

    The window holds the candidates for its minimum (rising) or maximum (falling) in time
    order: a sample that a later, lower (higher) one follows can never be the edge again.
    """
    _push(window, rising, t, value)
    start = t - within_ms
    while window[0][0] < start:
        window.pop(0)  # the last sample is at t, so the loop ends
    if len(window) > MAX_WINDOW_SAMPLES:
        del window[: len(window) - MAX_WINDOW_SAMPLES]
    edge = window[0][1]
    return value - edge if rising else edge - value


def monotonic(window: list[tuple[int, float]], rising: bool) -> list[tuple[int, float]]:
    """A saved window (perhaps every sample, as saved before) as ``rate_change`` keeps it."""
    kept: list[tuple[int, float]] = []
    for t, value in window:
        _push(kept, rising, t, value)
    return kept


def _push(window: list[tuple[int, float]], rising: bool, t: int, value: float) -> None:
    """Append a sample, first dropping those it makes unable to be the edge again."""
    if rising:
        while window and window[-1][1] >= value:
            window.pop()
    else:
        while window and window[-1][1] <= value:
            window.pop()
    window.append((t, value))
