"""Retention policies, rollup continuous queries and the boards' rollup map, for InfluxDB 1.x.

Raw points stay in the database's default policy (``influx.retention_policy``, 30 days).
Each measurement is rolled up into ``rollup_1m`` (kept a year) and ``rollup_1h`` (kept
five years) by continuous queries. A rolled-up field keeps its raw name for the aggregate
that fits it (mean of a level, sum of rain, last of a state or counter), so a board's
query reads the same ``"<rp>"."<measurement>"`` whatever the policy; ``_min`` / ``_max``
fields sit beside the numbers. The ``rp_config`` measurement (policy ``forever``) tells
the boards which policy serves which time range: their hidden ``rollup`` variable reads it.

``plan`` compares a server with what it should hold and ``apply`` makes the changes, so
``kotahub influx init`` is idempotent and can show what it would change (``--dry-run``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import httpx

from drivers.framework import DriverFamily, discover_families
from hub.influxql import InfluxQL, InfluxQueryError
from hub.ingest.area_totals import MEASUREMENT as AREA_TOTALS
from hub.ingest.area_totals import area_fields, rollup_aggregate
from hub.settings import Settings

Aggregate = Literal["mean", "min", "max", "last", "sum"]
Kind = Literal["number", "integer", "boolean", "string"]

log = logging.getLogger(__name__)

META_POLICY = "forever"
RP_CONFIG = "rp_config"


class RollupError(Exception):
    """The server refused a statement or could not be reached; names the statement."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RollupLevel:
    """One rollup policy: its bucket, how long it is kept and what it reads from."""

    policy: str
    every: str  # the bucket: GROUP BY time(every)
    duration: str
    duration_hours: int
    run_every: str  # how often its continuous query runs (RESAMPLE EVERY)
    resample_for: str
    # None: the raw policy.
    source: str | None
    # The boards read this policy for time ranges up to this many milliseconds.
    max_range_ms: int


RAW_MAX_RANGE_MS = 24 * 3_600_000
ROLLUP_LEVELS: tuple[RollupLevel, ...] = (
    # Run every 5 minutes over the last 10: a reading delivered up to 5 minutes late (a
    # gateway's buffer after a short outage) still lands in its minute, and each minute is
    # rolled up twice. The cost is per series, not per point: at Semarang's full size one
    # run over 13,000 cameras took 9.3 s whether it covered 5 minutes or more, so running
    # every minute over 5 kept 0.21 of a core busy (bench/rollups.py; docs/grafana.md).
    RollupLevel(
        policy="rollup_1m",
        every="1m",
        duration="365d",
        duration_hours=365 * 24,
        run_every="5m",
        resample_for="10m",
        source=None,
        max_range_ms=7 * 24 * 3_600_000,
    ),
    RollupLevel(
        policy="rollup_1h",
        every="1h",
        duration="1825d",
        duration_hours=1825 * 24,
        run_every="1h",
        resample_for="2h",
        source="rollup_1m",
        max_range_ms=100 * 365 * 24 * 3_600_000,
    ),
)

# Fields whose kind alone does not say how they roll up: counters and totals keep their
# last value, rain adds up. Other numbers get mean/min/max, integers mean/max, booleans
# and strings their last value.
FIELD_AGGREGATES: Mapping[str, tuple[Aggregate, ...]] = {
    "rain_mm": ("sum",),
    "volume": ("sum",),
    "pump_run_hours": ("last",),
    "uptime_s": ("last",),
    "reboots": ("last",),
    "pattern": ("last",),
    "mode": ("last",),
    "alarms": ("last",),
    "messages_in": ("last",),
    "lines_written": ("last",),
    "write_retries": ("last",),
    "refused_lines": ("last",),
    "seq_gaps": ("last",),
    "deadletters": ("last",),
    "count": ("sum",),
    "payload_bytes": ("sum",),
}

# Families whose drivers have not landed yet: the schema's names, so that boards and
# rollups work the day their drivers write. A driver's own metric table replaces a row.
PENDING_FAMILY_FIELDS: Mapping[str, Mapping[str, Kind]] = {
    # drivers/atcs/metrics.py ATCS_DETECTOR_METRICS: detectors are devices of their own.
    "atcs_detector": {
        "volume": "integer",
        "volume_overflow": "boolean",
        "occupancy_pct": "number",
        "fault": "string",
        "alarms": "integer",
        "period_s": "integer",
    },
    "wifi": {
        "up": "boolean",
        "uptime_s": "number",
        "clients": "integer",
        "rx_bps": "number",
        "tx_bps": "number",
        "reboots": "integer",
    },
    # drivers/cctv/metrics.py, the rows a board reads (the family is not discoverable yet).
    "cctv": {
        "onvif_status": "string",
        "clock_drift_s": "number",
        "stream_ok": "boolean",
        "fps_measured": "number",
        "fps_ratio": "number",
        "frozen": "boolean",
        "black": "boolean",
        "blurred": "boolean",
        "blur_var": "number",
        "scene_changed": "boolean",
        "people_count": "integer",
        "zone_people": "integer",
        "crowd_level": "string",
        "parked_vehicles": "integer",
        "recording": "boolean",
        "disk_status": "string",
        "disk_fill_pct": "number",
        "channels_total": "integer",
        "channels_video_loss": "integer",
    },
}
# Not rolled up: inventory text that does not change over time (and ``model`` would
# collide with the registry's ``model`` tag), and event rows, which go to ``<family>_event``.
SKIP_FIELDS = frozenset(
    {
        "manufacturer",
        "model",
        "firmware",
        "serial",
        "trap",
        "trap_oid",
        "event",
        "event_active",
        "event_source",
        "event_topic",
        "channel",
        "dwell_s",
        "if_index",
    }
)

# The hub's own measurements (docs/ingest.md, self_metrics.py).
HUB_FIELDS: Mapping[str, Mapping[str, Kind]] = {
    "hub": {
        "messages_in_per_s": "number",
        "written_per_s": "number",
        "batch_lines_mean": "number",
        "write_latency_mean_s": "number",
        "messages_in": "number",
        "lines_written": "number",
        "write_retries": "number",
        "refused_lines": "number",
        "wal_bytes": "number",
        "wal_depth_bytes": "number",
        "wal_segments": "number",
        "seq_gaps": "number",
        "deadletters": "number",
    },
    "device_status": {"online": "number", "reason": "string"},
    "deadletter": {"count": "number", "payload_bytes": "number"},
    # Devices online / known per family and kecamatan, each minute (the boards' counts).
    "fleet_online": {"online": "integer", "devices": "integer"},
}
# device_status is a change log: its "last" per bucket is what a board wants, not a mean.
FIELD_AGGREGATES_BY_MEASUREMENT: Mapping[tuple[str, str], tuple[Aggregate, ...]] = {
    ("device_status", "online"): ("last",),
}


@dataclass(frozen=True, slots=True)
class FieldRollup:
    """How one field rolls up: ``(aggregate, output name)`` pairs, first one keeps the name."""

    field: str
    outputs: tuple[tuple[Aggregate, str], ...]


def aggregates_for(measurement: str, field: str, kind: Kind) -> tuple[Aggregate, ...]:
    """The aggregates that fit a field (see ``FIELD_AGGREGATES``)."""
    special = FIELD_AGGREGATES_BY_MEASUREMENT.get((measurement, field))
    if special is not None:
        return special
    if measurement == AREA_TOTALS:
        # One aggregate each, by the field's suffix: the mean of a sum, the sum of increases.
        return (rollup_aggregate(field),)
    if kind in ("boolean", "string"):
        return ("last",)
    if field in FIELD_AGGREGATES:
        return FIELD_AGGREGATES[field]
    return ("mean", "min", "max") if kind == "number" else ("mean", "max")


def field_rollup(measurement: str, field: str, kind: Kind) -> FieldRollup:
    """Output names: the first aggregate keeps the field's name, min/max get a suffix."""
    outputs: list[tuple[Aggregate, str]] = []
    for index, aggregate in enumerate(aggregates_for(measurement, field, kind)):
        outputs.append((aggregate, field if index == 0 else f"{field}_{aggregate}"))
    return FieldRollup(field=field, outputs=tuple(outputs))


def measurement_fields(
    families: Mapping[str, DriverFamily] | None = None,
) -> dict[str, dict[str, Kind]]:
    """Every measurement to roll up and its fields' kinds: drivers' tables win."""
    if families is None:
        try:
            found: Mapping[str, DriverFamily] = discover_families()
        except Exception as err:  # a driver that fails to import must not stop the stack
            log.warning("rollups: driver families could not be read (%s); using the schema", err)
            found = {}
    else:
        found = families
    out: dict[str, dict[str, Kind]] = {name: dict(f) for name, f in PENDING_FAMILY_FIELDS.items()}
    for name, family in found.items():
        schema = family.metric_schema(family.rollup_metrics)
        out[name] = {key: kind for key, kind in schema.items() if key not in SKIP_FIELDS}
    out.update({name: dict(f) for name, f in HUB_FIELDS.items()})
    # The hub's totals per kecamatan of the metrics families declare (area_totals.py).
    areas = area_fields(found.values())
    if areas:
        out[AREA_TOTALS] = dict(areas)
    return dict(sorted(out.items()))


def _q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rollup_select(
    database: str,
    measurement: str,
    fields: Mapping[str, Kind],
    level: RollupLevel,
    raw_policy: str,
) -> str:
    """The SELECT ... INTO ... GROUP BY time(), * of one measurement at one level."""
    parts: list[str] = []
    for field, kind in fields.items():
        rollup = field_rollup(measurement, field, kind)
        for aggregate, output in rollup.outputs:
            # From the 1-minute policy, each output is re-aggregated under its own name.
            source_field = field if level.source is None else output
            parts.append(f"{aggregate}({_q(source_field)}) AS {_q(output)}")
    source = raw_policy if level.source is None else level.source
    # Every name is quoted by _q; the statement is built from the schema, not from input.
    into = f"INTO {_q(database)}.{_q(level.policy)}.{_q(measurement)}"
    source_ref = f"FROM {_q(database)}.{_q(source)}.{_q(measurement)}"
    return " ".join(
        ("SELECT", ", ".join(parts), into, source_ref, f"GROUP BY time({level.every}), *")
    )


def cq_name(level: RollupLevel, measurement: str) -> str:
    """The continuous query's name."""
    return f"cq_{level.policy}_{measurement}"


def cq_statement(database: str, level: RollupLevel, measurement: str, select: str) -> str:
    """CREATE CONTINUOUS QUERY for one rollup SELECT."""
    name = cq_name(level, measurement)
    return (
        f"CREATE CONTINUOUS QUERY {_q(name)} ON {_q(database)} "
        f"RESAMPLE EVERY {level.run_every} FOR {level.resample_for} BEGIN {select} END"
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One change a server needs: what it is, and the statements that make it."""

    description: str
    statements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RangeRoute:
    """One ``rp_config`` row: the policy the boards read for a range of time spans."""

    policy: str
    min_range_ms: int
    max_range_ms: int


def range_routes(raw_policy: str) -> tuple[RangeRoute, ...]:
    """Which policy serves which range: raw up to a day, then each rollup in turn."""
    routes = [RangeRoute(raw_policy, 0, RAW_MAX_RANGE_MS)]
    lower = RAW_MAX_RANGE_MS
    for level in ROLLUP_LEVELS:
        routes.append(RangeRoute(level.policy, lower, level.max_range_ms))
        lower = level.max_range_ms
    return tuple(routes)


def rp_config_lines(raw_policy: str) -> list[str]:
    """Line protocol of the ``rp_config`` points (time 0: one row per route, overwritten)."""
    return [
        f'{RP_CONFIG},idx={index} rp="{route.policy}",min_range_ms={route.min_range_ms}i,'
        f"max_range_ms={route.max_range_ms}i 0"
        for index, route in enumerate(range_routes(raw_policy))
    ]


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def _hours(duration: str) -> int:
    """``8760h0m0s`` -> 8760; ``0s`` (infinite) -> 0."""
    match = _DURATION.fullmatch(duration)
    if not match:
        return -1
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours + (minutes * 60 + seconds) // 3600


_ALIAS = re.compile(r'AS\s+"?([A-Za-z0-9_]+)"?', re.IGNORECASE)


def _aliases(query: str) -> list[str]:
    return _ALIAS.findall(query)


class RollupSetup:
    """Plans and applies the policies, continuous queries and ``rp_config`` of one database."""

    def __init__(
        self,
        client: InfluxQL,
        *,
        database: str,
        raw_policy: str,
        write: Callable[[str, str, list[str]], None],
        fields: Mapping[str, Mapping[str, Kind]] | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self.raw_policy = raw_policy
        self._write = write
        self.fields = measurement_fields() if fields is None else fields

    def _run(self, statement: str) -> list[list[object]]:
        try:
            return [row for s in self.client.query(statement) for row in s.values]
        except InfluxQueryError as err:
            raise RollupError(str(err)) from err

    def desired_cqs(self) -> dict[str, str]:
        """CQ name -> CREATE statement, for every measurement and level."""
        out: dict[str, str] = {}
        for level in ROLLUP_LEVELS:
            for measurement, fields in self.fields.items():
                select = rollup_select(self.database, measurement, fields, level, self.raw_policy)
                out[cq_name(level, measurement)] = cq_statement(
                    self.database, level, measurement, select
                )
        return out

    def plan(self) -> list[Change]:
        """What the server lacks or holds differently; an empty list means nothing to do."""
        db = _q(self.database)
        changes: list[Change] = []
        if self.database not in [r[0] for r in self._run("SHOW DATABASES")]:
            raise RollupError(
                f"database {self.database} does not exist: `kotahub stack up` creates it, "
                "or CREATE DATABASE it first"
            )
        policies = {
            str(row[0]): _hours(str(row[1]))
            for row in self._run(f"SHOW RETENTION POLICIES ON {db}")
        }
        if self.raw_policy not in policies:
            raise RollupError(
                f"retention policy {self.raw_policy} (influx.retention_policy) does not exist "
                f"on {self.database}"
            )
        wanted = [(level.policy, level.duration, level.duration_hours) for level in ROLLUP_LEVELS]
        wanted.append((META_POLICY, "INF", 0))
        for policy, duration, hours in wanted:
            if policy not in policies:
                changes.append(
                    Change(
                        f"create retention policy {policy} ({duration})",
                        (
                            f"CREATE RETENTION POLICY {_q(policy)} ON {db} "
                            f"DURATION {duration} REPLICATION 1",
                        ),
                    )
                )
            elif policies[policy] != hours:
                changes.append(
                    Change(
                        f"set retention policy {policy} to {duration}",
                        (f"ALTER RETENTION POLICY {_q(policy)} ON {db} DURATION {duration}",),
                    )
                )
        existing = self._existing_cqs()
        for name, statement in self.desired_cqs().items():
            current = existing.get(name)
            if current is None:
                changes.append(Change(f"create continuous query {name}", (statement,)))
            elif not self._same_cq(current, statement):
                changes.append(
                    Change(
                        f"replace continuous query {name} (fields or interval changed)",
                        (f"DROP CONTINUOUS QUERY {_q(name)} ON {db}", statement),
                    )
                )
        if self._rp_config_rows() != {
            (r.policy, r.min_range_ms, r.max_range_ms) for r in range_routes(self.raw_policy)
        }:
            changes.append(
                Change(
                    f"write {RP_CONFIG} (which policy the boards read for which time range)",
                    tuple(rp_config_lines(self.raw_policy)),
                )
            )
        return changes

    def apply(self, changes: Iterable[Change]) -> None:
        """Run the changes' statements (``rp_config`` lines are written, not queried)."""
        for change in changes:
            lines = [s for s in change.statements if s.startswith(f"{RP_CONFIG},")]
            for statement in change.statements:
                if statement not in lines:
                    self._run(statement)
            if lines:
                self._write(self.database, META_POLICY, lines)

    def _existing_cqs(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for series in self._query_series("SHOW CONTINUOUS QUERIES"):
            if series[0] != self.database:
                continue
            for row in series[1]:
                out[str(row[0])] = str(row[1])
        return out

    def _query_series(self, statement: str) -> list[tuple[str, list[list[object]]]]:
        try:
            return [(s.name, s.values) for s in self.client.query(statement)]
        except InfluxQueryError as err:
            raise RollupError(str(err)) from err

    @staticmethod
    def _same_cq(current: str, wanted: str) -> bool:
        every = re.search(r"GROUP BY time\((\w+)\)", wanted)
        resample = re.search(r"RESAMPLE EVERY \w+ FOR \w+", wanted)
        return (
            _aliases(current) == _aliases(wanted)
            and bool(every and f"time({every.group(1)})" in current.replace(" ", ""))
            and bool(resample and resample.group(0) in current)
        )

    def _rp_config_rows(self) -> set[tuple[str, int, int]]:
        try:
            series = self.client.query(
                f"SELECT * FROM {_q(META_POLICY)}.{_q(RP_CONFIG)}",  # noqa: S608
                database=self.database,
            )
        except InfluxQueryError:
            return set()
        rows: set[tuple[str, int, int]] = set()
        for s in series:
            for record in s.records():
                rows.add(
                    (str(record["rp"]), int(record["min_range_ms"]), int(record["max_range_ms"]))
                )
        return rows

    def backfill(self, measurement: str, level: RollupLevel, start_ms: int, end_ms: int) -> None:
        """Run one level's rollup SELECT INTO for a fixed window (what a CQ does each time)."""
        select = rollup_select(
            self.database, measurement, self.fields[measurement], level, self.raw_policy
        )
        head, _, tail = select.partition(" GROUP BY ")
        self._run(f"{head} WHERE time >= {start_ms}ms AND time < {end_ms}ms GROUP BY {tail}")


def http_writer(
    url: str, *, username: str | None = None, password: str | None = None, timeout_s: float = 10.0
) -> Callable[[str, str, list[str]], None]:
    """A ``write(database, policy, lines)`` over the v1 ``/write`` endpoint."""

    def write(database: str, policy: str, lines: list[str]) -> None:
        auth = (username, password or "") if username else None
        try:
            resp = httpx.post(
                f"{url.rstrip('/')}/write",
                params={"db": database, "rp": policy, "precision": "ms"},
                content="\n".join(lines).encode(),
                auth=auth,
                timeout=timeout_s,
            )
        except httpx.HTTPError as err:
            raise RollupError(f"{url}: {err}") from err
        if resp.status_code != 204:
            raise RollupError(f"writing {RP_CONFIG} to {database}: {resp.status_code} {resp.text}")

    return write


def setup_for(settings: Settings, *, timeout_s: float | None = None) -> RollupSetup:
    """The rollup setup of the settings' InfluxDB (v1 API) and database."""
    ix = settings.influx
    password = ix.password.get_secret_value() if ix.password else None
    timeout = ix.timeout_s if timeout_s is None else timeout_s
    client = InfluxQL(ix.url, username=ix.username, password=password, timeout_s=timeout)
    return RollupSetup(
        client,
        database=ix.database,
        raw_policy=ix.retention_policy,
        write=http_writer(ix.url, username=ix.username, password=password, timeout_s=ix.timeout_s),
    )


def ensure_rollups(settings: Settings, *, log: Callable[[str], None]) -> list[Change]:
    """Plan and apply; return what was changed (nothing on a server already set up)."""
    if settings.influx.api != "v1":
        log("rollups: InfluxDB v2 API configured; create downsampling tasks there instead")
        return []
    setup = setup_for(settings)
    try:
        changes = setup.plan()
        if changes:
            log(f"rollups: {len(changes)} change(s) to {settings.influx.database}")
            setup.apply(changes)
        return changes
    finally:
        setup.client.close()
