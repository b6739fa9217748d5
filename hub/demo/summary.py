"""The demo's live summary: a data model built from the running parts, and its Rich view.

``DemoSummary.snapshot()`` reads the hub's counters, the hub's view of each device
(online/offline), the gateways' links and outboxes, the simulators' counts and the latest
flood levels in InfluxDB, and returns a frozen ``DemoSnapshot``. Tests assert on the
snapshot; ``render`` only draws it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

RECENT_CHANGES = 8
RATE_WINDOW_S = 10.0


@dataclass(frozen=True, slots=True)
class DemoDevice:
    """What the summary knows of one simulated device."""

    device_id: str
    family: str
    area: str
    gateway_id: str | None


@dataclass(frozen=True, slots=True)
class GroupRow:
    """Devices online out of the total, for one family or one area."""

    name: str
    online: int
    total: int


@dataclass(frozen=True, slots=True)
class GatewayRow:
    """One gateway: its link, its agent's broker connection and outbox, its devices."""

    gateway_id: str
    area: str
    cut: bool
    connected: bool
    outbox: int
    online: int
    total: int


@dataclass(frozen=True, slots=True)
class HubCounters:
    """The hub's own counters at one moment."""

    messages_in: int
    lines_written: int
    deadletters: Mapping[str, int]
    wal_depth_bytes: int
    broker_connected: bool


@dataclass(frozen=True, slots=True)
class GatewayState:
    """What the runner reports of one gateway."""

    cut: bool
    connected: bool
    outbox: int


@dataclass(frozen=True, slots=True)
class DemoSnapshot:
    """Everything the terminal summary shows, at one moment."""

    elapsed_s: float
    sim_time: datetime | None
    speed: float
    messages_in: int
    lines_written: int
    messages_in_per_s: float
    written_per_s: float
    produced: Mapping[str, int]
    deadletters: int
    deadletter_reasons: tuple[tuple[str, int], ...]
    wal_depth_bytes: int
    broker_connected: bool
    families: tuple[GroupRow, ...]
    areas: tuple[GroupRow, ...]
    gateways: tuple[GatewayRow, ...]
    flood_levels: tuple[tuple[str, float], ...]
    flood_levels_note: str
    faults: tuple[str, ...]
    recent_changes: tuple[str, ...]
    next_steps: tuple[tuple[str, str], ...]
    devices_online: int = 0
    devices_total: int = 0

    def family(self, name: str) -> GroupRow | None:
        """The row of one family."""
        return next((row for row in self.families if row.name == name), None)

    def area(self, name: str) -> GroupRow | None:
        """The row of one area."""
        return next((row for row in self.areas if row.name == name), None)

    def gateway(self, gateway_id: str) -> GatewayRow | None:
        """The row of one gateway."""
        return next((row for row in self.gateways if row.gateway_id == gateway_id), None)

    def flood_level(self, area: str) -> float | None:
        """The highest recent water level in an area, if InfluxDB gave one."""
        return next((level for name, level in self.flood_levels if name == area), None)


@dataclass(slots=True)
class SummarySources:
    """Where the summary reads from (callables, so that tests can give their own)."""

    hub: Callable[[], HubCounters]
    online: Callable[[str], bool | None]
    gateways: Callable[[], Mapping[str, GatewayState]]
    produced: Callable[[], Mapping[str, int]]
    faults: Callable[[], Sequence[str]]
    flood_levels: Callable[[], Mapping[str, float]] | None = None
    sim_time: Callable[[], datetime] | None = None
    speed: float = 1.0
    next_steps: Sequence[tuple[str, str]] = ()


@dataclass(slots=True)
class DemoSummary:
    """Builds snapshots; keeps a short history of the counters for the rates."""

    devices: Sequence[DemoDevice]
    sources: SummarySources
    clock: Callable[[], float] = time.monotonic  # a test's own clock, never a patched global
    started: float = -1.0
    _history: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=64))
    _changes: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_CHANGES))
    _levels: tuple[tuple[str, float], ...] = ()
    _levels_note: str = "waiting for the first query"

    def __post_init__(self) -> None:
        """Start the running time on the summary's own clock."""
        if self.started < 0:
            self.started = self.clock()

    def note_change(self, device_id: str, online: bool, reason: str) -> None:
        """A device went online or offline (called from the hub's status subscription)."""
        stamp = time.strftime("%H:%M:%S")
        self._changes.appendleft(
            f"{stamp} {device_id} {'online' if online else 'offline'}"
            + (f" ({reason})" if reason else "")
        )

    def refresh_levels(self) -> None:
        """Ask InfluxDB for the latest flood levels (slow: the runner calls it in a thread)."""
        if self.sources.flood_levels is None:
            self._levels_note = "no flood gauges in this fleet"
            return
        try:
            levels = self.sources.flood_levels()
        except Exception as err:  # InfluxDB down during an outage: say so, keep going
            self._levels_note = f"InfluxDB not answering ({type(err).__name__})"
            return
        self._levels = tuple(sorted(levels.items(), key=lambda item: -item[1]))
        self._levels_note = "" if levels else "no level readings in the last 5 minutes yet"

    def snapshot(self) -> DemoSnapshot:
        """The summary now."""
        now = self.clock()
        hub = self.sources.hub()
        self._history.append((now, hub.messages_in, hub.lines_written))
        in_rate, written_rate = self._rates(now)
        gateways = self.sources.gateways()
        families: Counter[str] = Counter()
        families_on: Counter[str] = Counter()
        areas: Counter[str] = Counter()
        areas_on: Counter[str] = Counter()
        gw_total: Counter[str] = Counter()
        gw_on: Counter[str] = Counter()
        gw_area: dict[str, str] = {}
        online_total = 0
        for device in self.devices:
            on = self.sources.online(device.device_id) is True
            families[device.family] += 1
            areas[device.area] += 1
            online_total += on
            families_on[device.family] += on
            areas_on[device.area] += on
            if device.gateway_id:
                gw_total[device.gateway_id] += 1
                gw_on[device.gateway_id] += on
                gw_area.setdefault(device.gateway_id, device.area)
        gateway_rows = tuple(
            GatewayRow(
                gateway_id=gw,
                area=gw_area.get(gw, ""),
                cut=state.cut,
                connected=state.connected,
                outbox=state.outbox,
                online=gw_on[gw],
                total=gw_total[gw],
            )
            for gw, state in sorted(gateways.items())
        )
        return DemoSnapshot(
            elapsed_s=now - self.started,
            sim_time=self.sources.sim_time() if self.sources.sim_time else None,
            speed=self.sources.speed,
            messages_in=hub.messages_in,
            lines_written=hub.lines_written,
            messages_in_per_s=in_rate,
            written_per_s=written_rate,
            produced=dict(self.sources.produced()),
            deadletters=sum(hub.deadletters.values()),
            deadletter_reasons=tuple(Counter(hub.deadletters).most_common(3)),
            wal_depth_bytes=hub.wal_depth_bytes,
            broker_connected=hub.broker_connected,
            families=tuple(GroupRow(n, families_on[n], t) for n, t in sorted(families.items())),
            areas=tuple(GroupRow(n, areas_on[n], t) for n, t in sorted(areas.items())),
            gateways=gateway_rows,
            flood_levels=self._levels,
            flood_levels_note=self._levels_note,
            faults=tuple(self.sources.faults()),
            recent_changes=tuple(self._changes),
            next_steps=tuple(self.sources.next_steps),
            devices_online=online_total,
            devices_total=len(self.devices),
        )

    def _rates(self, now: float) -> tuple[float, float]:
        """Messages in and lines written per second over the last ~10 s."""
        newest = self._history[-1]
        earlier = list(self._history)[:-1]
        # The oldest sample inside the window; when snapshots come slower than the window
        # (the plain view's one line every 10 s), the previous one: never a zero span.
        oldest = next(
            (h for h in earlier if now - h[0] <= RATE_WINDOW_S), earlier[-1] if earlier else newest
        )
        span = newest[0] - oldest[0]
        if span <= 0:
            return 0.0, 0.0
        return (newest[1] - oldest[1]) / span, (newest[2] - oldest[2]) / span


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _ratio(row: GroupRow) -> Text:
    colour = "green" if row.online == row.total else ("red" if row.online == 0 else "yellow")
    return Text(f"{row.online}/{row.total}", style=colour)


def render(snap: DemoSnapshot, *, max_areas: int = 16) -> RenderableType:
    """The snapshot as Rich renderables (a header line and a few small tables)."""
    sim = f", simulated {snap.sim_time:%Y-%m-%d %H:%M} (x{snap.speed:g})" if snap.sim_time else ""
    header = Text.assemble(
        ("Kotahub demo: a simulated Semarang", "bold"),
        f"  running {snap.elapsed_s:,.0f} s{sim}\n",
        f"messages in {snap.messages_in_per_s:,.1f}/s ({snap.messages_in:,})   "
        f"written {snap.written_per_s:,.1f}/s ({snap.lines_written:,})   "
        f"WAL depth {_bytes(snap.wal_depth_bytes)}   ",
        (
            f"dead-letters {snap.deadletters:,}",
            "yellow" if snap.deadletters else "",
        ),
        "   broker ",
        ("connected", "green") if snap.broker_connected else ("DISCONNECTED", "red"),
        f"\ndevices online {snap.devices_online:,}/{snap.devices_total:,}",
    )
    if snap.deadletter_reasons:
        header.append(
            "  (" + ", ".join(f"{r}: {n}" for r, n in snap.deadletter_reasons) + ")", "yellow"
        )
    families = Table(title="by family", title_justify="left", box=None, pad_edge=False)
    for column in ("family", "online", "readings"):
        families.add_column(column, justify="left" if column == "family" else "right")
    for row in snap.families:
        families.add_row(row.name, _ratio(row), f"{snap.produced.get(row.name, 0):,}")
    areas = Table(title="by area (kecamatan)", title_justify="left", box=None, pad_edge=False)
    for column in ("area", "online", "gateway", "outbox", "level m"):
        areas.add_column(column, justify="left" if column in ("area", "gateway") else "right")
    by_area_gw = {g.area: g for g in snap.gateways}
    levels = dict(snap.flood_levels)
    for row in snap.areas[:max_areas]:
        gw = by_area_gw.get(row.name)
        if gw is None:
            link = Text("-", style="dim")
        elif gw.cut:
            link = Text(f"{gw.gateway_id} CUT", style="red")
        elif not gw.connected:
            link = Text(f"{gw.gateway_id} connecting", style="yellow")
        else:
            link = Text(gw.gateway_id, style="green")
        level = levels.get(row.name)
        areas.add_row(
            row.name,
            _ratio(row),
            link,
            f"{gw.outbox:,}" if gw else "-",
            f"{level:.2f}" if level is not None else "-",
        )
    parts: list[RenderableType] = [header, Text(""), families, Text(""), areas]
    if snap.flood_levels_note:
        parts.append(Text(f"flood levels: {snap.flood_levels_note}", style="dim"))
    parts.append(
        Text(
            "faults: " + ("; ".join(snap.faults) if snap.faults else "none"),
            style="red" if snap.faults else "dim",
        )
    )
    if snap.recent_changes:
        parts.append(Text("latest changes:\n  " + "\n  ".join(snap.recent_changes), style="dim"))
    if snap.next_steps:
        steps = Table(title="where to look next", title_justify="left", box=None, pad_edge=False)
        steps.add_column("what")
        steps.add_column("how", overflow="fold")
        for what, how in snap.next_steps:
            steps.add_row(what, how)
        parts += [Text(""), steps]
    return Group(*parts)
