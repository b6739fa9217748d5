"""Rule evaluation on the live stream: readings and status changes in, alert events out.

Every (rule, device) pair the rule's scope admits has a ``Track``: its current level
(0 normal; 1 firing; for stages, 1..n the stage), a pending move with the time it
started (for-duration on raise, clear_for on clear), a rate window, the times of its
recent raises and clears (flap detection). A condition is evaluated with the reading's
own time; time passing (a for-duration running out, a metric staying silent, flapping
calming down) is checked by ``tick`` against the engine's clock.

The engine is single-threaded (the WAL consumer's thread) and deterministic: the same
stream, from the same saved tracks, gives the same events. ``dirty`` names the tracks
changed since ``take_dirty``, so that their state is saved with the WAL position.
"""

from __future__ import annotations

import logging
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from device_registry.directory import DeviceDirectory, DeviceRecord
from hub.alerts.clock import Clock
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
from hub.ingest.device_status import StatusChange
from hub.ingest.wal_consumers import MetricValue, Reading

log = logging.getLogger(__name__)

MAX_WINDOW_SAMPLES = 512
# A rate window or a silence clock that only moved on is saved at most this often (a
# level or a pending move is saved at once): after a crash it is at most this stale.
CHECKPOINT_MS = 10_000
EVENT_KINDS = ("raise", "stage", "clear", "flap_start", "flap_end")


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A change of one alert: raised, moved to another stage, cleared, flapping or calm."""

    kind: str
    key: str  # "<rule id>|<device id>"
    rule_id: str
    device_id: str
    level: int
    stage: str
    severity: str
    value: MetricValue | None
    time_ms: int
    message: str
    family: str
    kecamatan: str
    team: str
    flapping: bool = False
    cause: str = ""  # an offline status's reason, e.g. "parent NVR nvr-1 unreachable: ..."


@dataclass(slots=True)
class Track:
    """The evaluation state of one rule on one device (saved as JSON)."""

    level: int = 0
    pending_level: int | None = None
    pending_since: int = 0
    value: MetricValue | None = None
    last_ms: int = 0
    window: list[tuple[int, float]] = field(default_factory=list)
    changes: list[int] = field(default_factory=list)
    flapping: bool = False
    # An offline rule's status reason: a for-delayed raise comes from ``tick``, long after
    # the status change, and must still carry it (saved, so a restart keeps it too).
    cause: str = ""
    saved_ms: int = 0  # in memory only: engine clock at the last save

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "level": self.level,
            "pending_level": self.pending_level,
            "pending_since": self.pending_since,
            "value": self.value,
            "last_ms": self.last_ms,
            "window": self.window,
            "changes": self.changes,
            "flapping": self.flapping,
            "cause": self.cause,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Track:
        """The track a ``to_json`` dict describes."""
        track = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        track.window = [(int(t), float(v)) for t, v in track.window]
        return track


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _below(rule: Rule) -> bool:
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


class _SafeFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        try:
            return str(super().format_field(value, format_spec))
        except (ValueError, TypeError):
            return str(value)


_FORMATTER = _SafeFormatter()


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


def _index_keys(compiled: CompiledRule) -> list[tuple[str, str]]:
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


class RuleEngine:
    """Evaluates compiled rules on readings, status changes and the passing of time."""

    def __init__(
        self,
        rules: Iterable[tuple[Defaults, Rule]],
        directory: DeviceDirectory,
        clock: Clock,
    ) -> None:
        self.rules = [CompiledRule(rule, defaults) for defaults, rule in rules]
        self.by_id = {compiled.id: compiled for compiled in self.rules}
        self.directory = directory
        self.clock = clock
        self.tracks: dict[str, Track] = {}
        self.dirty: set[str] = set()
        self.evaluations = 0
        self._pending: set[str] = set()
        self._absence: set[str] = set()
        self._flapping: set[str] = set()
        # Rules indexed by their most selective scope key, so that a device is matched
        # against its candidates only (15,000 devices x 1,000 rules would be slow).
        self._index: dict[tuple[str, str], list[CompiledRule]] = {}
        for compiled in self.rules:
            for key in _index_keys(compiled):
                self._index.setdefault(key, []).append(compiled)
        # device id -> (rules by metric, offline rules, bands by rule id), per registry snapshot.
        self._device_cache: dict[str, tuple[dict[str, list[CompiledRule]], list[CompiledRule]]] = {}
        self._bands: dict[str, list[tuple[float, float]] | None] = {}
        self._generation = -1
        self._warned: set[str] = set()
        self._now = clock.now_ms()  # the clock once per reading, for checkpoints

    # -- state ---------------------------------------------------------------------
    def reset(self, tracks: Mapping[str, Track]) -> None:
        """Forget the state in memory and take ``tracks`` (the saved ones) instead."""
        self.tracks.clear()
        self.dirty.clear()
        self._pending.clear()
        self._absence.clear()
        self._flapping.clear()
        self.load(tracks)

    def load(self, tracks: Mapping[str, Track]) -> None:
        """Take tracks saved before a restart."""
        for key, track in tracks.items():
            rule_id = key.partition("|")[0]
            compiled = self.by_id.get(rule_id)
            if compiled is None:
                continue  # its rule is gone from the files
            self.tracks[key] = track
            if track.pending_level is not None:
                self._pending.add(key)
            if isinstance(compiled.rule, AbsenceRule) and compiled.rule.metric is not None:
                self._absence.add(key)
            if track.flapping:
                self._flapping.add(key)

    def take_dirty(self) -> dict[str, Track]:
        """The tracks changed since the last call (to be saved now)."""
        dirty = {key: self.tracks[key] for key in self.dirty if key in self.tracks}
        self.dirty = set()
        now = self.clock.now_ms()
        for track in dirty.values():
            track.saved_ms = now
        return dirty

    # -- input -----------------------------------------------------------------------
    def _rules_for(
        self, device_id: str, family: str, tags: Mapping[str, str]
    ) -> tuple[dict[str, list[CompiledRule]], list[CompiledRule]]:
        generation = self.directory.generation
        if generation != self._generation:
            self._device_cache.clear()
            self._bands.clear()
            self._generation = generation
        cached = self._device_cache.get(device_id)
        if cached is not None:
            return cached
        record = self.directory.get(device_id)
        all_tags = record.tags if record is not None else tags
        keys = [("device", device_id), ("family", family), ("all", "")]
        keys += [(f"tag:{k}", v) for k, v in all_tags.items()]
        keys += [("kecamatan", all_tags.get("kecamatan", "")), ("team", all_tags.get("team", ""))]
        if record is not None:
            keys.append(("type", record.device_type))
        candidates: dict[str, CompiledRule] = {}
        for key in keys:
            for compiled in self._index.get(key, ()):
                candidates[compiled.id] = compiled
        by_metric: dict[str, list[CompiledRule]] = {}
        offline: list[CompiledRule] = []
        for compiled in candidates.values():
            if not compiled.admits(device_id, family, record, tags):
                continue
            metric = compiled.metric()
            if metric is None:
                offline.append(compiled)
            else:
                by_metric.setdefault(metric, []).append(compiled)
        cached = (by_metric, offline)
        self._device_cache[device_id] = cached
        return cached

    def _device_bands(
        self, compiled: CompiledRule, device_id: str
    ) -> list[tuple[float, float]] | None:
        key = f"{compiled.id}|{device_id}"
        if key in self._bands:
            return self._bands[key]
        bands = compiled.bands(self.directory.get(device_id))
        if bands is None and compiled.id not in self._warned:
            self._warned.add(compiled.id)
            log.warning(
                "rule %s: device %s has no value for its threshold attribute (and the "
                "rule gives no default): the rule does not watch it",
                compiled.id,
                device_id,
            )
        self._bands[key] = bands
        return bands

    def on_reading(self, reading: Reading) -> list[AlertEvent]:
        """Evaluate the rules that watch this reading's device and metrics."""
        by_metric, _offline = self._rules_for(reading.device_id, reading.family, reading.tags)
        if not by_metric:
            return []
        self._now = self.clock.now_ms()
        events: list[AlertEvent] = []
        for metric, value in reading.metrics.items():
            for compiled in by_metric.get(metric, ()):
                self.evaluations += 1
                events.extend(self._evaluate(compiled, reading, value))
        return events

    def on_status(self, change: StatusChange) -> list[AlertEvent]:
        """Evaluate the offline rules of the device."""
        _by_metric, offline = self._rules_for(change.device_id, change.family, dict(change.tags))
        events: list[AlertEvent] = []
        for compiled in offline:
            self.evaluations += 1
            key = f"{compiled.id}|{change.device_id}"
            track = self._track(key)
            self.dirty.add(key)
            track.value = "offline" if not change.online else "online"
            track.cause = "" if change.online else change.reason
            target = 0 if change.online else 1
            events.extend(
                self._step(compiled, key, change.device_id, track, target, change.time_ms)
            )
        return events

    def _track(self, key: str) -> Track:
        """The track of ``key``, a new one if none (setdefault would build one every time)."""
        track = self.tracks.get(key)
        if track is None:
            track = self.tracks[key] = Track()
        return track

    def _evaluate(
        self, compiled: CompiledRule, reading: Reading, value: MetricValue
    ) -> list[AlertEvent]:
        rule = compiled.rule
        key = f"{compiled.id}|{reading.device_id}"
        t = reading.time_ms
        if isinstance(rule, MatchRule):
            track = self._track(key)
            if rule.equals is not None:
                hit = value == rule.equals
            elif rule.in_ is not None:
                hit = value in rule.in_
            else:
                hit = value != rule.not_equals
            target = 1 if hit else 0
        elif isinstance(rule, AbsenceRule):
            track = self._track(key)
            self._absence.add(key)
            track.last_ms = max(track.last_ms, t)
            if self._now - track.saved_ms >= CHECKPOINT_MS:
                self.dirty.add(key)
            target = 0
        else:
            number = _number(value)
            if number is None:
                return []
            bands = self._device_bands(compiled, reading.device_id)
            if bands is None:
                return []
            track = self._track(key)
            measured = number
            if isinstance(rule, RateRule):
                measured = self._change(track, rule, t, number)
                if self._now - track.saved_ms >= CHECKPOINT_MS:
                    self.dirty.add(key)
            elif _below(rule):
                measured = -number
            target = level_of(measured, track.level, bands)
        track.value = value  # for messages; saved with the next change, not for itself
        return self._step(compiled, key, reading.device_id, track, target, t)

    @staticmethod
    def _change(track: Track, rule: RateRule, t: int, value: float) -> float:
        """How far the metric rose (or fell) within the rule's window, ending at ``t``."""
        window = track.window
        window.append((t, value))
        start = t - round(rule.within * 1000)
        while window and window[0][0] < start:
            window.pop(0)
        if len(window) > MAX_WINDOW_SAMPLES:
            del window[: len(window) - MAX_WINDOW_SAMPLES]
        values = [v for _t, v in window]
        return value - min(values) if rule.rise is not None else max(values) - value

    # -- moves -------------------------------------------------------------------------
    def _step(
        self, compiled: CompiledRule, key: str, device_id: str, track: Track, target: int, t: int
    ) -> list[AlertEvent]:
        if target == track.level:
            if track.pending_level is not None:
                track.pending_level = None
                self._pending.discard(key)
                self.dirty.add(key)
            return []
        up = target > track.level
        rule = compiled.rule
        hold_s = rule.for_s if up else rule.clear_for_s
        if isinstance(rule, AbsenceRule) and rule.metric is not None and up:
            hold_s = 0.0  # the silence itself was the wait
        if hold_s <= 0:
            return self._move(compiled, key, device_id, track, target, t)
        same_way = track.pending_level is not None and (track.pending_level > track.level) == up
        if not same_way:
            track.pending_since = t
        if track.pending_level != target:
            self.dirty.add(key)
        track.pending_level = target
        if t - track.pending_since >= hold_s * 1000:
            return self._move(compiled, key, device_id, track, target, t)
        self._pending.add(key)
        return []

    def _move(
        self, compiled: CompiledRule, key: str, device_id: str, track: Track, target: int, t: int
    ) -> list[AlertEvent]:
        old = track.level
        track.level = target
        track.pending_level = None
        self._pending.discard(key)
        self.dirty.add(key)
        kind = "raise" if old == 0 else "clear" if target == 0 else "stage"
        events: list[AlertEvent] = []
        flap = compiled.rule.flap
        if flap is not None and kind != "stage":
            track.changes.append(t)
            horizon = t - round(flap.within * 1000)
            track.changes = [c for c in track.changes if c >= horizon]
            if not track.flapping and len(track.changes) >= flap.changes:
                track.flapping = True
                self._flapping.add(key)
                events.append(self._event("flap_start", compiled, device_id, track, t))
        events.insert(0, self._event(kind, compiled, device_id, track, t, level=target or old))
        return events

    def tick(self) -> list[AlertEvent]:
        """Time-driven moves: for-durations run out, silent metrics, flapping calms down."""
        now = self.clock.now_ms()
        events: list[AlertEvent] = []
        for key in list(self._pending):
            track = self.tracks.get(key)
            compiled = self.by_id.get(key.partition("|")[0])
            if track is None or compiled is None or track.pending_level is None:
                self._pending.discard(key)
                continue
            up = track.pending_level > track.level
            hold_s = compiled.rule.for_s if up else compiled.rule.clear_for_s
            if now - track.pending_since >= hold_s * 1000:
                device_id = key.partition("|")[2]
                events.extend(self._move(compiled, key, device_id, track, track.pending_level, now))
        for key in list(self._absence):
            track = self.tracks.get(key)
            compiled = self.by_id.get(key.partition("|")[0])
            if track is None or compiled is None:
                self._absence.discard(key)
                continue
            if track.level == 0 and now - track.last_ms > compiled.rule.for_s * 1000:
                track.value = None
                events.extend(self._move(compiled, key, key.partition("|")[2], track, 1, now))
        for key in list(self._flapping):
            track = self.tracks.get(key)
            compiled = self.by_id.get(key.partition("|")[0])
            flap = compiled.rule.flap if compiled is not None else None
            if track is None or compiled is None or flap is None:
                self._flapping.discard(key)
                continue
            if not track.changes or now - track.changes[-1] >= flap.within * 1000:
                track.flapping = False
                track.changes = []
                self._flapping.discard(key)
                self.dirty.add(key)
                events.append(self._event("flap_end", compiled, key.partition("|")[2], track, now))
        return events

    # -- events and messages -------------------------------------------------------------
    def _event(
        self,
        kind: str,
        compiled: CompiledRule,
        device_id: str,
        track: Track,
        t: int,
        *,
        level: int | None = None,
    ) -> AlertEvent:
        rule = compiled.rule
        level = track.level if level is None else level
        stage, severity = "", rule.severity
        if isinstance(rule, StagesRule) and level > 0:
            chosen = rule.stages[min(level, len(rule.stages)) - 1]
            stage, severity = chosen.name, chosen.severity
        record = self.directory.get(device_id)
        tags: Mapping[str, str] = record.tags if record is not None else {}
        cause = track.cause
        message = self.render(
            compiled, device_id, record, track.value, stage, severity, kind, t, cause
        )
        return AlertEvent(
            kind,
            f"{rule.id}|{device_id}",
            rule.id,
            device_id,
            level,
            stage,
            severity,
            track.value,
            t,
            message,
            record.family if record is not None else "",
            tags.get("kecamatan", ""),
            tags.get("team", ""),
            track.flapping,
            cause,
        )

    def render(
        self,
        compiled: CompiledRule,
        device_id: str,
        record: DeviceRecord | None,
        value: MetricValue | None,
        stage: str,
        severity: str,
        state: str,
        t: int,
        cause: str = "",
    ) -> str:
        """The rule's message for this device and value, with its links."""
        fields = template_fields(
            compiled, device_id, record, value, stage, severity, state, t, cause
        )
        return _FORMATTER.vformat(compiled.rule.message, (), fields)


def template_fields(
    compiled: CompiledRule,
    device_id: str,
    record: DeviceRecord | None,
    value: MetricValue | None,
    stage: str,
    severity: str,
    state: str,
    t: int,
    cause: str = "",
) -> dict[str, Any]:
    """What a message template may name (``rule_model.TEMPLATE_FIELDS``)."""
    rule = compiled.rule
    tags: Mapping[str, str] = record.tags if record is not None else {}
    site, kecamatan = tags.get("site", ""), tags.get("kecamatan", "")
    location = ", ".join(part for part in (site, tags.get("kelurahan", ""), kecamatan) if part)
    threshold: Any = ""
    bands = compiled.bands(record)
    if bands and isinstance(rule, ThresholdRule | StagesRule):
        index = 0
        if isinstance(rule, StagesRule) and stage:
            index = [s.name for s in rule.stages].index(stage)
        raw = bands[index][0]
        threshold = -raw if _below(rule) else raw
    fields: dict[str, Any] = {
        "rule": rule.id,
        "rule_name": rule.title,
        "device_id": device_id,
        "device_name": tags.get("name") or device_id,
        "device_type": record.device_type if record is not None else "",
        "family": record.family if record is not None else "",
        "location": location or "unknown location",
        "site": site,
        "kecamatan": kecamatan,
        "kelurahan": tags.get("kelurahan", ""),
        "team": tags.get("team", ""),
        "metric": compiled.metric() or "status",
        "value": "none" if value is None else value,
        "threshold": threshold,
        "stage": stage,
        "severity": severity,
        "state": state,
        "time": datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cause": cause,
    }
    link_fields = {**fields, "map_link": "", "runbook_link": ""}
    defaults = compiled.defaults
    fields["map_link"] = (
        _FORMATTER.vformat(defaults.map_url, (), link_fields) if defaults.map_url else ""
    )
    runbook = rule.runbook
    if runbook and defaults.runbook_url and "://" not in runbook:
        runbook = _FORMATTER.vformat(defaults.runbook_url, (), {**link_fields, "runbook": runbook})
    fields["runbook_link"] = runbook
    return fields
