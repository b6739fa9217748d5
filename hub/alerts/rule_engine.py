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
from hub.alerts.compiled_rules import (
    ABSENCE,
    MATCH,
    RATE,
    CompiledRule,
    Watch,
    attribute_of,
    fires_below,
    index_keys,
    level_of,
    monotonic,
    rate_change,
    watch_of,
)
from hub.alerts.rule_model import (
    AbsenceRule,
    Defaults,
    MatchRule,
    RateRule,
    Rule,
    StagesRule,
    ThresholdRule,
)
from hub.ingest.device_status import StatusChange
from hub.ingest.wal_consumers import MetricValue, Reading

__all__ = ["AlertEvent", "RuleEngine", "Track", "attribute_of", "level_of", "template_fields"]

log = logging.getLogger(__name__)

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


class _SafeFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        try:
            return str(super().format_field(value, format_spec))
        except (ValueError, TypeError):
            return str(value)


_FORMATTER = _SafeFormatter()


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
            for key in index_keys(compiled):
                self._index.setdefault(key, []).append(compiled)
        # device id -> (watches by metric, offline watches), per registry snapshot.
        self._device_cache: dict[str, tuple[dict[str, list[Watch]], list[Watch]]] = {}
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
            rule = compiled.rule
            if isinstance(rule, RateRule) and track.window:
                track.window = monotonic(track.window, rule.rise is not None)
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
    ) -> tuple[dict[str, list[Watch]], list[Watch]]:
        generation = self.directory.generation
        if generation != self._generation:
            self._device_cache.clear()
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
        by_metric: dict[str, list[Watch]] = {}
        offline: list[Watch] = []
        for compiled in candidates.values():
            if not compiled.admits(device_id, family, record, tags):
                continue
            watch = watch_of(compiled, device_id, record)
            if watch is None:
                self._warn_unwatched(compiled, device_id)
                continue
            metric = compiled.metric()
            if metric is None:
                offline.append(watch)
            else:
                by_metric.setdefault(metric, []).append(watch)
        cached = (by_metric, offline)
        self._device_cache[device_id] = cached
        return cached

    def _warn_unwatched(self, compiled: CompiledRule, device_id: str) -> None:
        if compiled.id in self._warned:
            return
        self._warned.add(compiled.id)
        log.warning(
            "rule %s: device %s has no value for its threshold attribute (and the "
            "rule gives no default): the rule does not watch it",
            compiled.id,
            device_id,
        )

    def on_reading(self, reading: Reading) -> list[AlertEvent]:
        """Evaluate the rules that watch this reading's device and metrics."""
        by_metric, _offline = self._rules_for(reading.device_id, reading.family, reading.tags)
        if not by_metric:
            return []
        self._now = now = self.clock.now_ms()
        t = reading.time_ms
        tracks = self.tracks
        events: list[AlertEvent] = []
        # The hot loop of the engine (every watch of every reading): kinds are compared
        # with ``is`` and a level that stays where it is returns before ``_step``.
        for metric, value in reading.metrics.items():
            watches = by_metric.get(metric)
            if watches is None:
                continue
            self.evaluations += len(watches)
            for watch in watches:
                kind = watch.kind
                if kind is MATCH or kind is ABSENCE:
                    events.extend(self._evaluate_other(watch, t, value))
                    continue
                if value.__class__ is bool or not isinstance(value, int | float):
                    continue
                key = watch.key
                track = tracks.get(key)
                if track is None:
                    track = tracks[key] = Track()
                if kind is RATE:
                    measured = rate_change(
                        track.window, watch.within_ms, watch.rising, t, float(value)
                    )
                    if now - track.saved_ms >= CHECKPOINT_MS:
                        self.dirty.add(key)
                else:
                    measured = watch.sign * value
                level = track.level
                bands = watch.bands
                if len(bands) == 1:
                    raise_at, clear_at = bands[0]
                    target = 1 if measured > raise_at or (level and measured >= clear_at) else 0
                else:
                    target = level_of(measured, level, bands)
                track.value = value  # for messages; saved with the next change, not for itself
                if target == level and track.pending_level is None:
                    continue
                events.extend(self._step(watch.compiled, key, reading.device_id, track, target, t))
        return events

    def on_status(self, change: StatusChange) -> list[AlertEvent]:
        """Evaluate the offline rules of the device."""
        _by_metric, offline = self._rules_for(change.device_id, change.family, dict(change.tags))
        events: list[AlertEvent] = []
        for watch in offline:
            self.evaluations += 1
            compiled, key = watch.compiled, watch.key
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

    def _evaluate_other(self, watch: Watch, t: int, value: MetricValue) -> list[AlertEvent]:
        """A match rule's hit or miss; an absence rule's clock restarted."""
        rule = watch.compiled.rule
        key = watch.key
        track = self._track(key)
        if isinstance(rule, MatchRule):
            if rule.equals is not None:
                hit = value == rule.equals
            elif rule.in_ is not None:
                hit = value in rule.in_
            else:
                hit = value != rule.not_equals
            target = 1 if hit else 0
        else:
            self._absence.add(key)
            track.last_ms = max(track.last_ms, t)
            if self._now - track.saved_ms >= CHECKPOINT_MS:
                self.dirty.add(key)
            target = 0
        track.value = value
        return self._step(watch.compiled, key, key.partition("|")[2], track, target, t)

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
        threshold = -raw if fires_below(rule) else raw
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
