"""On-call rotations: who of a team is paged at a given instant.

A rotation names its members (each with apprise URLs) and one schedule, in local time of
its ``timezone`` (Asia/Jakarta by default)::

    rotations:
      - id: pompa-timur
        members:
          - {name: budi, notify: ["json://10.0.0.5:9000/budi"]}
          - {name: sari, notify: ["tgram://BOT/CHAT"]}
        handover: {start: "2026-12-07 08:00", every: 1w}   # budi first, then sari, ...
      - id: supervisors
        members: [{name: ani, notify: [...]}, {name: eko, notify: [...]}]
        shifts:                                            # a weekly timetable
          - {from: "mon 08:00", member: ani}
          - {from: "fri 20:00", member: eko}

Each shift lasts until the next one starts (the timetable wraps round the week; a
``from`` without a day is every day), so a rotation always has exactly one member on
call: there are no gaps nor overlaps to get wrong. A rotation of one member needs no
schedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.alerts.rule_model import seconds_of

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SHIFT_FROM = re.compile(r"^(?:(mon|tue|wed|thu|fri|sat|sun)\s+)?([01][0-9]|2[0-3]):([0-5][0-9])$")
_WEEK = timedelta(days=7)
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Member(_Strict):
    """One person on the rotation and where their pages go."""

    name: Name
    notify: tuple[str, ...] = Field(min_length=1)


class Handover(_Strict):
    """Members take turns in their listed order, each for ``every``, from ``start``."""

    start: datetime  # local wall time in the rotation's zone
    every_s: float = Field(alias="every", gt=0)

    @field_validator("start")
    @classmethod
    def _local(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            raise ValueError("start is a local time in the rotation's timezone: give no offset")
        return value

    @field_validator("every_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        if isinstance(value, str) and (weeks := re.fullmatch(r"(\d+(?:\.\d+)?)w", value.strip())):
            return float(weeks.group(1)) * 7 * 86_400  # rotations hand over weekly
        return seconds_of(value)


class Shift(_Strict):
    """A shift of the weekly timetable: ``member`` is on call from ``from`` to the next."""

    starts: str = Field(alias="from")
    member: Name

    @field_validator("starts")
    @classmethod
    def _when(cls, value: str) -> str:
        if not _SHIFT_FROM.match(value.strip().lower()):
            raise ValueError("a shift starts at 'HH:MM' (every day) or 'mon HH:MM' .. 'sun HH:MM'")
        return value.strip().lower()

    def offsets(self) -> list[timedelta]:
        """Its starts as offsets from Monday 00:00 (seven of them for an every-day shift)."""
        match = _SHIFT_FROM.match(self.starts)
        assert match is not None  # checked by the validator
        day, hour, minute = match.groups()
        at = timedelta(hours=int(hour), minutes=int(minute))
        days = [_DAYS.index(day)] if day else range(7)
        return [timedelta(days=d) + at for d in days]


@dataclass(frozen=True, slots=True)
class OnCall:
    """Who is on call, and the shift (UTC ms, start included, end excluded) they are in."""

    member: Member
    start_ms: int
    end_ms: int


class Rotation(_Strict):
    """Members and their schedule; ``on_call`` says who is paged at an instant."""

    id: Name
    timezone: str = "Asia/Jakarta"
    members: tuple[Member, ...] = Field(min_length=1)
    handover: Handover | None = None
    shifts: tuple[Shift, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Jakarta)") from err
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> Rotation:
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError("members: a name is listed twice")
        if self.handover is not None and self.shifts:
            raise ValueError("give either handover or shifts, not both")
        if self.handover is None and not self.shifts and len(self.members) > 1:
            raise ValueError("a rotation of several members needs handover or shifts")
        for shift in self.shifts:
            if shift.member not in names:
                raise ValueError(f"shifts: {shift.member!r} is not one of the members")
        starts = [offset for shift in self.shifts for offset in shift.offsets()]
        if len(set(starts)) != len(starts):
            raise ValueError("shifts: two shifts start at the same time")
        return self

    def on_call(self, at_ms: int) -> OnCall:
        """The member on call at ``at_ms`` (epoch ms), with their shift's bounds."""
        if self.handover is None and not self.shifts:
            return OnCall(self.members[0], -(2**62), 2**62)
        zone = ZoneInfo(self.timezone)
        wall = datetime.fromtimestamp(at_ms / 1000, zone).replace(tzinfo=None)
        starts = self._starts_around(wall)
        # The last start at or before the instant, judged in UTC (what a clock change moves).
        instants = [(_utc_ms(start, zone), member) for start, member in starts]
        index = max(i for i, (ms, _) in enumerate(instants) if ms <= at_ms)
        ms, member = instants[index]
        return OnCall(member, ms, instants[index + 1][0])

    def _starts_around(self, wall: datetime) -> list[tuple[datetime, Member]]:
        """Shift starts (local wall time) from before ``wall`` to after it, in order."""
        if self.handover is not None:
            every = timedelta(seconds=self.handover.every_s)
            start = self.handover.start.replace(tzinfo=None)
            turn = (wall - start) // every
            count = len(self.members)
            return [(start + k * every, self.members[k % count]) for k in range(turn - 2, turn + 3)]
        by_name = {m.name: m for m in self.members}
        monday = datetime(wall.year, wall.month, wall.day) - timedelta(days=wall.weekday())
        week = sorted(
            (offset, by_name[shift.member]) for shift in self.shifts for offset in shift.offsets()
        )
        return [
            (monday + w * _WEEK + offset, member) for w in (-1, 0, 1, 2) for offset, member in week
        ]


def _utc_ms(wall: datetime, zone: ZoneInfo) -> int:
    """A local wall time as epoch ms (fold 0 where a clock change repeats the hour)."""
    return round(wall.replace(tzinfo=zone).timestamp() * 1000)
