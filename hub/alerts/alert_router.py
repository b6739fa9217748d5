"""Who gets paged: teams by kecamatan, family and registry team, escalation levels, repeats.

The routing file (YAML, ``[alerts] routing``)::

    teams:
      - id: pompa-timur
        match: {kecamatan: [Semarang Timur, Genuk], families: [flood]}
        notify: ["json://127.0.0.1:9000/hook", "mailto://..."]   # apprise URLs
        rotation: pompa-timur                                      # + whoever is on call
        escalate:
          - {after: 15m, notify: ["tgram://..."]}                 # not acknowledged by then
          - {after: 45m, rotation: supervisors}
        repeat: 30m                                                # until acknowledged
        quiet_hours: {start: "22:00", end: "06:00", utc_offset_h: 7}  # non-critical wait
    default: {notify: ["mailto://situation-room@..."]}
    rotations: [...]                                               # rotations.py

The first team whose ``match`` takes the alert (every key given must match: its
device's kecamatan, family, registry team, severity) gets it; else ``default``. A device
the registry has in ``maintenance``, or in a planned window (maintenance.py), pages no
one (its alerts are still recorded). A level naming a rotation also pages the member on
call at the moment of the page (for a page deferred by quiet hours: when it goes).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from device_registry.directory import DeviceDirectory, SnapshotDirectory
from hub.alerts.alert_store import AlertRow, AlertStore, PageMaker
from hub.alerts.rotations import Rotation
from hub.alerts.rule_engine import AlertEvent
from hub.alerts.rule_model import RuleError, Severity, seconds_of

# The status reason of a camera whose NVR is down too (drivers/cctv/nvr_links.parent_cause).
PARENT_CAUSE = re.compile(r"^parent NVR (\S+) unreachable: ")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeamMatch(_Strict):
    """Which alerts a team takes."""

    kecamatan: tuple[str, ...] = ()
    families: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    severities: tuple[Severity, ...] = ()

    @field_validator("kecamatan", "families", "teams", "severities", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


class Escalation(_Strict):
    """The next level: paged when the alert is not acknowledged ``after`` its raise."""

    after_s: float = Field(alias="after", gt=0)
    notify: tuple[str, ...] = ()
    rotation: str | Rotation | None = None  # a rotation's id, or one written here

    @field_validator("after_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return seconds_of(value)

    @model_validator(mode="after")
    def _someone(self) -> Escalation:
        if not self.notify and self.rotation is None:
            raise ValueError("an escalation level needs notify or rotation")
        return self


class QuietHours(_Strict):
    """Hours in which non-critical pages wait (deferred to the end, never dropped)."""

    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    utc_offset_h: float = Field(default=7.0, ge=-12, le=14)  # WIB by default

    def end_if_quiet(self, now_ms: int) -> int | None:
        """The end of the quiet period ``now_ms`` falls in (ms), or None when not quiet."""
        day_ms = 86_400_000
        local = now_ms + round(self.utc_offset_h * 3_600_000)
        into_day = local % day_ms
        start, end = (int(t[:2]) * 3_600_000 + int(t[3:]) * 60_000 for t in (self.start, self.end))
        if start == end:
            return None
        if start < end:
            quiet, until = start <= into_day < end, end - into_day
        else:  # across midnight, e.g. 22:00-06:00
            quiet = into_day >= start or into_day < end
            until = (end - into_day) % day_ms
        return now_ms + until if quiet else None


class Team(_Strict):
    """A field team: where its pages go and how they escalate."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
    match: TeamMatch = TeamMatch()
    notify: tuple[str, ...] = ()
    rotation: str | Rotation | None = None  # a rotation's id, or one written here
    escalate: tuple[Escalation, ...] = ()
    repeat_s: float | None = Field(default=None, alias="repeat", gt=0)
    quiet_hours: QuietHours | None = None

    @field_validator("repeat_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float | None:
        return None if value is None else seconds_of(value)

    def takes(self, alert: AlertRow) -> bool:
        """Whether the alert is this team's."""
        m = self.match
        return (
            (not m.kecamatan or alert.kecamatan in m.kecamatan)
            and (not m.families or alert.family in m.families)
            and (not m.teams or alert.team in m.teams)
            and (not m.severities or alert.severity in m.severities)
        )

    def level(self, level: int) -> tuple[tuple[str, ...], str | Rotation | None, float]:
        """Escalation ``level``'s URLs, rotation and delay after the raise (0: the team)."""
        if level == 0:
            return self.notify, self.rotation, 0.0
        if level <= len(self.escalate):
            step = self.escalate[level - 1]
            return step.notify, step.rotation, step.after_s
        return (), None, 0.0


class Routing(_Strict):
    """The routing file."""

    teams: tuple[Team, ...] = ()
    default: Team | None = None
    rotations: tuple[Rotation, ...] = ()

    @model_validator(mode="after")
    def _known_rotations(self) -> Routing:
        known = [r.id for r in self.rotations]
        if len(set(known)) != len(known):
            raise ValueError("rotations: an id is listed twice")
        for team in (*self.teams, *([self.default] if self.default else [])):
            for ref in (team.rotation, *(step.rotation for step in team.escalate)):
                if isinstance(ref, str) and ref not in known:
                    names = ", ".join(known) or "none"
                    raise ValueError(f"team {team.id!r}: no rotation {ref!r} (known: {names})")
        return self

    def rotation(self, ref: str | Rotation | None) -> Rotation | None:
        """The rotation a team or level names."""
        if isinstance(ref, Rotation) or ref is None:
            return ref
        return next(r for r in self.rotations if r.id == ref)  # checked at load

    def targets(self, team: Team, level: int, at_ms: int) -> tuple[str, ...]:
        """Who escalation ``level`` pages at ``at_ms``: its URLs and its rotation's on-call."""
        urls, ref, _after = team.level(level)
        rotation = self.rotation(ref)
        if rotation is not None:
            urls = (*urls, *rotation.on_call(at_ms).member.notify)
        return tuple(dict.fromkeys(urls))


def load_routing(path: Path) -> Routing:
    """Read and check a routing file; RuleError names the file and the key."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise RuleError(f"{path}: cannot read the routing file: {err}") from err
    if isinstance(data, dict) and isinstance(data.get("default"), dict):
        data = {**data, "default": {"id": "default", **data["default"]}}
    try:
        return Routing.model_validate(data)
    except ValidationError as err:
        item = err.errors()[0]
        key = ".".join(str(p) for p in item["loc"]).replace("after_s", "after")
        where = f"key '{key}': " if key else ""
        raise RuleError(f"{path}: {where}{item['msg']}") from err


def _title(alert: AlertRow, kind: str) -> str:
    what = {
        "raise": "ALERT",
        "stage": "STAGE",
        "clear": "RESOLVED",
        "escalate": "ESCALATED",
        "repeat": "STILL FIRING",
        "flap_start": "FLAPPING",
        "flap_end": "STEADY",
    }.get(kind, kind.upper())
    stage = f" {alert.stage}" if alert.stage else ""
    return f"[{what}] {alert.severity}{stage}: {alert.rule_id} on {alert.device_id}"


class AlertRouter(PageMaker):
    """Turns events into pages, and runs escalations and repeats from the store."""

    def __init__(
        self,
        routing: Routing,
        directory: DeviceDirectory | None = None,
        *,
        parent_hold_s: float = 120.0,
    ) -> None:
        self.routing = routing
        self.directory = directory
        self.parent_hold_s = parent_hold_s
        self._by_parent: tuple[int, dict[str, list[str]]] = (-1, {})

    def parents_of(self, device_id: str) -> list[str]:
        """The device's registry parent (a camera's NVR), then its gateway: when one is
        down, the device's alerts join that one's incident."""
        record = self.directory.get(device_id) if self.directory is not None else None
        if record is None:
            return []
        return list(dict.fromkeys(p for p in (record.parent_id, record.gateway_id) if p))

    def children_of(self, device_id: str) -> list[str]:
        """The devices whose registry parent or gateway this device is."""
        if self.directory is None:
            return []
        found = [record.device_id for record in self.directory.devices_for_gateway(device_id)]
        generation = self.directory.generation
        if self._by_parent[0] != generation and isinstance(self.directory, SnapshotDirectory):
            by_parent: dict[str, list[str]] = {}
            for record in self.directory.all():
                if record.parent_id:
                    by_parent.setdefault(record.parent_id, []).append(record.device_id)
            self._by_parent = (generation, by_parent)
        found.extend(self._by_parent[1].get(device_id, ()))
        return list(dict.fromkeys(found))

    def parent_hold_ms(self, event: AlertEvent, alert: AlertRow) -> int:
        """A raise whose cause is its parent NVR (``parent NVR <id> unreachable: ...``,
        drivers/cctv/nvr_links.py) waits ``parent_hold_s`` for the NVR's own alert."""
        match = PARENT_CAUSE.match(event.cause)
        if match is None or match.group(1) not in self.parents_of(alert.device_id):
            return 0
        return round(self.parent_hold_s * 1000)

    def in_maintenance(self, device_id: str) -> bool:
        """Whether the registry has the device in maintenance (it pages no one)."""
        record = self.directory.get(device_id) if self.directory is not None else None
        return record is not None and record.state == "maintenance"

    def team(self, alert: AlertRow) -> Team | None:
        """The team that takes the alert, or the default."""
        for team in self.routing.teams:
            if team.takes(alert):
                return team
        return self.routing.default

    def pages(
        self, event: AlertEvent, alert: AlertRow, silenced: bool, now_ms: int
    ) -> list[tuple[str, str]]:
        """Pages for one event: none when silenced, acknowledged or flapping."""
        team = self.team(alert)
        if team is None or silenced or self.in_maintenance(alert.device_id):
            return []
        kind = event.kind
        if kind in ("raise", "stage") and (alert.acked_ms is not None or event.flapping):
            return []
        if kind == "clear":
            if alert.last_page_ms is None or event.flapping:
                return []  # nobody was told it fired
            urls = {
                url
                for level in range(alert.escalation + 1)
                for url in self._paged(team, alert, level)
            }
            return [(url, _title(alert, kind)) for url in sorted(urls)]
        if kind not in ("raise", "stage", "flap_start", "flap_end"):
            return []
        # Whoever is on call when the page goes (after quiet hours, for a deferred one).
        at_ms = self.send_after(alert, now_ms)
        return [(url, _title(alert, kind)) for url in self.routing.targets(team, 0, at_ms)]

    def _paged(self, team: Team, alert: AlertRow, level: int) -> set[str]:
        """Who a level paged for this alert: its on-call when it was paged (and at the last
        repeat), so a RESOLVED note reaches the members who got the pages."""
        times = {alert.raised_ms + round(team.level(level)[2] * 1000)}
        if level == alert.escalation and alert.last_page_ms is not None:
            times.add(alert.last_page_ms)  # repeats page the current level
        return {url for at_ms in times for url in self.routing.targets(team, level, at_ms)}

    def send_after(self, alert: AlertRow, now_ms: int) -> int:
        """Non-critical pages wait out the team's quiet hours; critical ones go at once."""
        team = self.team(alert)
        if team is None or team.quiet_hours is None or alert.severity == "critical":
            return now_ms
        end = team.quiet_hours.end_if_quiet(now_ms)
        return now_ms if end is None else end

    def run_escalations(self, store: AlertStore, now_ms: int) -> None:
        """Escalate alerts not acknowledged in time; repeat pages at the team's interval."""
        for alert in store.firing_unacked():
            team = self.team(alert)
            if team is None or alert.flapping or self.in_maintenance(alert.device_id):
                continue
            if store.in_maintenance_window(alert, now_ms):
                continue  # escalation waits for the window's end
            if store.is_child(alert):
                continue  # part of its parent's incident: the parent escalates
            if self.send_after(alert, now_ms) > now_ms:
                continue  # quiet hours: no escalation or repeat of a non-critical alert now
            level = alert.escalation
            if level < len(team.escalate):
                step = team.escalate[level]
                if now_ms - alert.raised_ms >= step.after_s * 1000:
                    urls = self.routing.targets(team, level + 1, now_ms)
                    targets = [(url, _title(alert, "escalate")) for url in urls]
                    store.escalate(alert, "escalate", targets, now_ms, level=level + 1)
                    continue
            if (
                team.repeat_s is not None
                and alert.last_page_ms is not None
                and now_ms - alert.last_page_ms >= team.repeat_s * 1000
            ):
                urls = self.routing.targets(team, level, now_ms) or self.routing.targets(
                    team, 0, now_ms
                )
                targets = [(url, _title(alert, "repeat")) for url in urls]
                store.escalate(alert, "repeat", targets, now_ms, level=level)
