"""Simulated points of a city for every family the boards read, as InfluxDB line protocol.

Field names and kinds follow the families' metric tables (``drivers/*/metrics.py``; a test
checks they match) and the hub's own measurements (``device_status``, ``fleet_online``
counted from it each minute, ``area_totals`` modelled each minute, ``hub``, ``deadletter``,
``alert``). Tags are the registry's: ``device_id``, ``family``, ``site``, ``kecamatan``,
``kelurahan``, ``team``, ``model``. Used by the query tests, the board previews and the
query benchmark; deterministic for a seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

KECAMATAN = (
    "Banyumanik",
    "Candisari",
    "Gayamsari",
    "Genuk",
    "Pedurungan",
    "Semarang Tengah",
    "Semarang Utara",
    "Tembalang",
)
MINUTE_MS = 60_000
HUB = "kotahub-hub-1"

FieldValue = float | int | bool | str
NVR_MODEL = "hikvision_nvr"
NVR_CHANNELS = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class CitySize:
    """How many devices of each kind the simulated city has."""

    gauges: int = 3
    rain_gauges: int = 2
    pumps: int = 2
    controllers: int = 3
    detectors_per_controller: int = 2
    access_points: int = 4
    cameras: int = 9
    nvrs: int = 2
    vehicles: int = 4
    ble_sensors: int = 2

    def scaled(self, factor: float) -> CitySize:
        """Every count times ``factor`` (at least one of each); detectors per controller stay."""
        counts = {
            name: max(1, round(getattr(self, name) * factor)) for name in self.__dataclass_fields__
        }
        counts["detectors_per_controller"] = self.detectors_per_controller
        return CitySize(**counts)


# Semarang's real counts (docs/indicators.md), for the benchmark's full-size city.
SEMARANG = CitySize(
    gauges=17,
    rain_gauges=12,
    pumps=49,
    controllers=54,
    detectors_per_controller=4,
    access_points=2300,
    cameras=10700,
    nvrs=2600,
    vehicles=300,
    ble_sensors=200,
)


def _escape_tag(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field(value: FieldValue) -> str:
    # type() is, not isinstance: bool is an int, and this runs for every field of ~2e8 lines.
    kind = type(value)
    if kind is float:
        return repr(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return f"{value}i"
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def series_key(measurement: str, tags: Mapping[str, str]) -> str:
    """The measurement and its sorted, escaped tags: the head of a line of line protocol."""
    return measurement + "".join(f",{k}={_escape_tag(v)}" for k, v in sorted(tags.items()) if v)


def _fields_text(fields: Mapping[str, FieldValue]) -> str:
    return ",".join([f"{k}={_field(v)}" for k, v in fields.items()])


def line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], time_ms: int
) -> str:
    """One point of line protocol (ms precision)."""
    return f"{series_key(measurement, tags)} {_fields_text(fields)} {time_ms}"


@dataclass(frozen=True, slots=True)
class Device:
    """A simulated device and its registry tags."""

    device_id: str
    family: str
    tags: Mapping[str, str]
    every_ms: int
    # Position among its kind: picks which devices carry the simulated faults.
    number: int
    # Its series key, escaped once: tags are most of a line's text.
    key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", series_key(self.family, self.tags))


def _tags(
    device_id: str, family: str, index: int, team: str, model: str, site: str | None = None
) -> dict[str, str]:
    kecamatan = KECAMATAN[index % len(KECAMATAN)]
    return {
        "device_id": device_id,
        "family": family,
        "site": site or f"{family}-site-{index:03d}",
        "kecamatan": kecamatan,
        "kelurahan": f"{kecamatan} kel-{index % 5}",
        "team": team,
        "model": model,
    }


def devices(size: CitySize, tide_gauge: str = "smg-tide-tanjungmas") -> list[Device]:
    """The city's devices."""
    out: list[Device] = []

    def add(device_id: str, family: str, i: int, team: str, model: str, every_s: int) -> None:
        tags = _tags(device_id, family, i, team, model)
        out.append(Device(device_id, family, tags, every_s * 1000, i))

    for i in range(size.gauges):
        add(f"smg-gauge-{i:03d}", "flood", i, "bpbd", "vegapuls_c21", 300)
    add(tide_gauge, "flood", 1, "bpbd", "vegapuls_c21", 300)
    for i in range(size.rain_gauges):
        add(f"smg-rain-{i:03d}", "flood", i, "bpbd", "tipping_bucket_rain", 300)
    for i in range(size.pumps):
        add(f"smg-pump-{i:03d}", "flood", i, "dpu-pompa", "pump_station_plc", 60)
    for i in range(size.controllers):
        add(f"atcs-{i:03d}", "atcs", i, "dishub-atcs", "ntcip_1202_controller", 60)
        for d in range(size.detectors_per_controller):
            tags = _tags(f"atcs-{i:03d}-det{d}", "atcs_detector", i, "dishub-atcs", "ntcip_1202")
            tags["site"] = f"atcs-site-{i:03d}"
            tags["detector"] = str(d + 1)
            out.append(Device(tags["device_id"], "atcs_detector", tags, 60_000, i))
    for i in range(size.access_points):
        add(f"wifi-ap-{i:04d}", "wifi", i, "diskominfo", "mikrotik_cap_ac", 300)
    for i in range(size.cameras):
        team = "diskominfo" if i % 3 else "rt-community"
        add(f"cam-{i:05d}", "cctv", i, team, "hikvision_ds2cd", 300)
    for i in range(size.nvrs):
        add(f"nvr-{i:04d}", "cctv", i, "rt-community", NVR_MODEL, 300)
    for i in range(size.vehicles):
        team = "trans-semarang" if i % 2 == 0 else "dlh-kebersihan"
        add(f"veh-{i:04d}", "gps", i, team, "teltonika-fmb920", 30 if i % 2 else 10)
    for i in range(size.ble_sensors):
        add(f"ble-{i:04d}", "ble", i, "dlh-lingkungan", "pvvx_lywsd03mmc", 60)
    return out


def _daily(hours: float) -> float:
    """A day's activity, 0.3 at night to about 1.6 in the evening (UTC+7 local time)."""
    local = (hours + 7) % 24
    return (
        0.3 + 1.3 * math.exp(-(((local - 18) / 4) ** 2)) + 0.6 * math.exp(-(((local - 8) / 2) ** 2))
    )


# A camera's picture flags by its number % 9 (5 frozen, 6 black, 7 blurred).
_CAMERA_FLAGS = [
    f",frozen={str(k == 5).lower()},black={str(k == 6).lower()},blurred={str(k == 7).lower()}"
    for k in range(9)
]


def _nvr_recording(n: int) -> bool:
    """One NVR in five has stopped recording (a disk error)."""
    return n % 5 != 1


def _nvr_video_loss(n: int) -> int:
    """Every other NVR has lost a channel's video, every seventh two."""
    return (n % 2) + (n % 7 == 3)


def _nvr_disk_fill(n: int, hours: float) -> float:
    """Disk fill by kecamatan (an NVR's number % 8 is its kecamatan): 50 % to 93 %."""
    return round(50 + 5 * (n % len(KECAMATAN)) + 8 * math.sin(hours), 1)


def _camera_text(n: int, hours: float, rng: random.Random) -> str:
    """A camera's fields as line protocol text, made directly: cameras are most of a city's
    lines (10,700 of Semarang's 16,400 devices)."""
    if n % 9 != 4:
        fps, ratio = round(rng.uniform(10, 25), 1), round(rng.uniform(0.5, 1.0), 2)
        head = f'onvif_status="ok",stream_ok=true,fps_measured={fps!r},fps_ratio={ratio!r}'
    else:
        head = 'onvif_status="fault",stream_ok=false,fps_measured=0.0,fps_ratio=0.0'
    text = f"{head}{_CAMERA_FLAGS[n % 9]},blur_var={round(rng.uniform(80, 400), 1)!r}"
    if n % 3 == 0:
        busy = _daily(hours)
        people, zone = int(busy * rng.uniform(10, 25)), int(busy * rng.uniform(5, 15))
        text += (
            f',people_count={people}i,zone_people={zone}i,crowd_level="medium",'
            f"parked_vehicles={int(rng.uniform(0, 4))}i"
        )
    return text


def _vehicle_text(n: int, hours: float, rng: random.Random) -> str:
    """A vehicle's fix as line protocol text, made directly (a bus reports every 10 s)."""
    angle = hours * 2 + n
    lat, lon = round(-7.0 + 0.03 * math.sin(angle), 6), round(110.42 + 0.05 * math.cos(angle), 6)
    # Vehicle 1 stands still.
    speed = 0.0 if n == 1 else round(40 / (0.6 + _daily(hours)) + rng.gauss(0, 2), 1)
    heading = round((math.degrees(angle) + 90) % 360, 1)
    # Vehicle 2 takes a detour; the others keep to their route within GPS noise.
    off = round(650 + 150 * math.sin(hours), 1) if n == 2 else round(abs(rng.gauss(0, 12)), 1)
    return (
        f"lat={lat!r},lon={lon!r},speed_kmh={speed!r},heading={heading!r},satellites=9i,"
        f"hdop=0.9,off_route_m={off!r}"
    )


def _reading_text(device: Device, index: int, t_ms: int, rng: random.Random) -> str:
    """The fields of a device's reading at ``t_ms`` as line protocol text."""
    if device.family == "cctv" and device.tags["model"] != NVR_MODEL:
        return _camera_text(device.number, t_ms / 3_600_000, rng)
    if device.family == "gps":
        return _vehicle_text(device.number, t_ms / 3_600_000, rng)
    return _fields_text(_reading(device, index, t_ms, rng))


def _reading(device: Device, index: int, t_ms: int, rng: random.Random) -> dict[str, FieldValue]:
    """The metrics a device of its kind reports at ``t_ms``."""
    hours = t_ms / 3_600_000
    n = device.number
    model = device.tags["model"]
    if device.family == "flood":
        if model == "tipping_bucket_rain":
            return {"rain_mm": round(max(0.0, rng.gauss(0.3, 0.6)), 1), "battery_v": 12.6}
        if model == "pump_station_plc":
            running = (index // 30 + n) % 3
            return {
                "pump_on": running > 0,
                "pumps_running": running,
                "basin_level_m": round(1.2 + 0.4 * math.sin(hours), 3),
                "pump_run_hours": round(1000.0 + hours, 2),
                "sensor_status": "ok",
            }
        if "tide" in device.device_id:
            return {"level_m": round(0.55 * math.sin(2 * math.pi * hours / 12.42), 3)}
        return {
            "level_m": round(1.0 + 0.4 * n + 0.6 * math.sin(hours / 3 + n), 3),
            "signal_quality_db": round(rng.uniform(20, 40), 1),
            "battery_v": round(rng.uniform(11.8, 13.0), 2),
            "sensor_status": "ok" if n % 4 else "check",
        }
    if device.family == "atcs":
        flashing = n == 1
        return {
            "control_mode": "system_control" if n % 3 else "timebase",
            "flash": flashing,
            "flash_state": "mmu" if flashing else "not_flash",
            "alarm_critical": flashing,
            "alarm_detector_fault": n == 2,
            "alarm_coord_fail": False,
            "pattern": 255 if flashing else 3,
            "pattern_mode": "flash" if flashing else "pattern",
            "cycle_s": 0 if flashing else 120,
            "detector_periods_missed": 0,
        }
    if device.family == "atcs_detector":
        rush = 1.0 + math.sin(hours * math.pi / 12) ** 2
        faulty = device.tags["detector"] == "2" and n == 2
        fields: dict[str, FieldValue] = {
            "volume": int(rng.uniform(5, 25) * rush),
            "volume_overflow": False,
            "fault": "open_loop" if faulty else "ok",
            "alarms": 4 if faulty else 0,
            "period_s": 60,
        }
        if not faulty:
            fields["occupancy_pct"] = round(min(100.0, rng.uniform(5, 30) * rush), 1)
        return fields
    if device.family == "wifi":
        up = n % 7 != 3
        busy = _daily(hours)
        return {
            "up": up,
            "uptime_s": float(index * 300 + 86_400),
            "clients": int(busy * rng.uniform(10, 30)) if up else 0,
            "rx_bps": round(busy * rng.uniform(1e6, 3e6), 1) if up else 0.0,
            "tx_bps": round(busy * rng.uniform(4e6, 1.2e7), 1) if up else 0.0,
            "reboots": index // 200 if n % 5 == 0 else 0,
        }
    if device.family == "cctv":
        if model == NVR_MODEL:
            recording = _nvr_recording(n)
            return {
                "recording": recording,
                "disk_status": "ok" if recording else "error",
                "disk_fill_pct": _nvr_disk_fill(n, hours),
                "channels_total": NVR_CHANNELS,
                "channels_video_loss": _nvr_video_loss(n),
            }
        raise AssertionError("cameras are made by _camera_text")
    if device.family == "gps":
        raise AssertionError("vehicles are made by _vehicle_text")
    return {
        "temperature_c": round(28 + 3 * math.sin(hours / 4), 2),
        "humidity_pct": round(rng.uniform(60, 90), 1),
        "battery_pct": 87,
        "rssi_dbm": int(rng.uniform(-90, -50)),
    }


# The readings are made an hour at a time, every device's hour before the next hour, so a
# bulk write fills InfluxDB's shards in time order.
CHUNK_MS = 3_600_000


def time_chunks(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """``[start, end)`` windows of ``CHUNK_MS`` covering ``start_ms`` to ``end_ms`` inclusive."""
    return [(t, min(t + CHUNK_MS, end_ms + 1)) for t in range(start_ms, end_ms + 1, CHUNK_MS)]


def reading_lines(
    fleet: list[Device],
    *,
    origin_ms: int,
    window: tuple[int, int],
    seed: int = 17,
    step_factor: int = 1,
) -> Iterator[str]:
    """The devices' readings in ``[window)``; a reading's index counts from ``origin_ms``.

    Deterministic for ``(seed, window)``, so windows can be made in any order or process.
    """
    start_ms, end_ms = window
    rng = random.Random(f"{seed}/{start_ms}")
    for device in fleet:
        every = device.every_ms * step_factor
        first = origin_ms - origin_ms % every
        index = max(0, -(-(start_ms - first) // every))
        t, key = first + index * every, device.key
        while t < end_ms:
            yield f"{key} {_reading_text(device, index, t, rng)} {t}"
            index += 1
            t += every


def context_lines(
    fleet: list[Device], *, start_ms: int, end_ms: int, seed: int = 17
) -> Iterator[str]:
    """The points beside the readings: flood stages, the hub's own, dead-letters, alerts."""
    yield from _stage_lines(fleet, start_ms)
    yield from _hub_lines(fleet, start_ms=start_ms, end_ms=end_ms, rng=random.Random(seed))


def city_lines(
    size: CitySize, *, start_ms: int, end_ms: int, seed: int = 17, step_factor: int = 1
) -> Iterator[str]:
    """Every point of the city between ``start_ms`` and ``end_ms``, readings in time order.

    ``step_factor`` thins the devices' rates (2 = every other reading) for large runs.
    """
    fleet = devices(size)
    for window in time_chunks(start_ms, end_ms):
        yield from reading_lines(
            fleet, origin_ms=start_ms, window=window, seed=seed, step_factor=step_factor
        )
    yield from context_lines(fleet, start_ms=start_ms, end_ms=end_ms, seed=seed)


def _stage_lines(fleet: list[Device], time_ms: int) -> Iterator[str]:
    """Each level gauge's stages, as hub/registry_thresholds.py writes them from the registry.

    Spread around each gauge's simulated level, so its day crosses some of them.
    """
    for device in fleet:
        if device.family != "flood" or device.tags["model"] != "vegapuls_c21":
            continue
        if "tide" in device.device_id:
            base, step = 0.5, 0.1  # rob floods at 0.5-0.7 m
        else:
            base, step = 1.3 + 0.4 * device.number, 0.25
        stages = {f"siaga{4 - k}_m": round(base + k * step, 2) for k in range(4)}
        yield line("flood_threshold", device.tags, dict(stages), time_ms)


def _hub_lines(
    fleet: list[Device], *, start_ms: int, end_ms: int, rng: random.Random
) -> Iterator[str]:
    """device_status changes, the fleet counts, the hub's own points, dead-letters, alerts."""
    changes = _status_changes(fleet, start_ms=start_ms, end_ms=end_ms)
    for time_ms, index, online in changes:
        reason = "data" if online else "silent"
        fields: dict[str, FieldValue] = {"online": 1.0 if online else 0.0, "reason": reason}
        yield line("device_status", fleet[index].tags, fields, time_ms)
    yield from _fleet_lines(fleet, changes, start_ms=start_ms, end_ms=end_ms)
    yield from _area_lines(fleet, start_ms=start_ms, end_ms=end_ms, rng=rng)
    hub_every = 60_000
    t, n = start_ms - start_ms % hub_every, 0
    while t <= end_ms:
        if t >= start_ms:
            yield line(
                "hub",
                {"hub": HUB},
                {
                    "messages_in_per_s": round(50 * _daily(t / 3_600_000) + rng.gauss(0, 1), 2),
                    "written_per_s": round(50 * _daily(t / 3_600_000) + rng.gauss(0, 1), 2),
                    "batch_lines_mean": 480.0,
                    "write_latency_mean_s": round(rng.uniform(0.01, 0.08), 4),
                    "messages_in": float(n * 3000),
                    "lines_written": float(n * 3000),
                    "write_retries": 0.0,
                    "refused_lines": 0.0,
                    "wal_bytes": 2e7,
                    "wal_depth_bytes": round(rng.uniform(0, 4e5), 0),
                    "wal_segments": 2.0,
                    "seq_gaps": float(n // 5),
                    "deadletters": float(n // 3),
                },
                t,
            )
            if n % 5 == 0:
                yield line(
                    "hub",
                    {"hub": HUB, "device_id": fleet[n % len(fleet)].device_id},
                    {"seq_gaps": float(n // 5)},
                    t,
                )
            if n % 3 == 0:
                reason = ("not_json", "metric_not_in_type", "unknown_device")[(n // 3) % 3]
                yield line(
                    "deadletter",
                    {"reason": reason, "hub": HUB},
                    {"count": 1.0, "topic": "kota/v1/dev/x/telemetry", "payload_bytes": 120.0},
                    t,
                )
        n += 1
        t += hub_every
    yield from _alert_lines(fleet, end_ms)


def _status_changes(
    fleet: list[Device], *, start_ms: int, end_ms: int
) -> list[tuple[int, int, bool]]:
    """``(time, device index, online)`` of each device_status point, in writing order."""
    out: list[tuple[int, int, bool]] = []
    for i, device in enumerate(fleet):
        out.append((start_ms + i, i, True))
        if i % 11 == 5 or (device.family == "gps" and device.number == 3):
            out.append((end_ms - 60_000, i, False))
    # A few devices drop out for half an hour every hour, as a city's do; each is back
    # before the end, so the devices offline now stay the ones above.
    hour = 3_600_000
    for h, t in enumerate(range(start_ms - start_ms % hour + hour, end_ms - hour, hour)):
        for k in range(3):
            index = (h * 37 + k * 101) % len(fleet)
            out.append((t, index, False))
            out.append((t + hour // 2, index, True))
    return out


def _fleet_lines(
    fleet: list[Device], changes: list[tuple[int, int, bool]], *, start_ms: int, end_ms: int
) -> Iterator[str]:
    """The hub's ``fleet_online`` points each minute, counted from the status changes.

    As the hub counts: the devices known (a status point at or before the minute) and
    those online, per family, kecamatan and team; a group with no device known yet has no
    point.
    """
    keys: list[str] = []
    group_of: dict[tuple[str, str, str], int] = {}
    member: list[int] = []
    for device in fleet:
        group = (device.family, device.tags.get("kecamatan", ""), device.tags.get("team", ""))
        if group not in group_of:
            group_of[group] = len(keys)
            tags = {"hub": HUB, "family": group[0], "kecamatan": group[1], "team": group[2]}
            keys.append(series_key("fleet_online", tags))
        member.append(group_of[group])
    online, known = [0] * len(keys), [0] * len(keys)
    state: list[bool | None] = [None] * len(fleet)
    # Sorted by time, stable: points of one device at one time overwrite in writing order.
    pending = sorted(changes, key=lambda change: change[0])
    next_change = 0
    t = start_ms - start_ms % MINUTE_MS
    t += MINUTE_MS if t < start_ms else 0
    while t <= end_ms:
        while next_change < len(pending) and pending[next_change][0] <= t:
            _, index, now_online = pending[next_change]
            next_change += 1
            slot, before = member[index], state[index]
            if before is None:
                known[slot] += 1
            elif before:
                online[slot] -= 1
            online[slot] += now_online
            state[index] = now_online
        tail = f" {t}"
        yield from [
            f"{key} online={online[g]}i,devices={known[g]}i{tail}"
            for g, key in enumerate(keys)
            if known[g]
        ]
        t += MINUTE_MS


def _area_lines(
    fleet: list[Device], *, start_ms: int, end_ms: int, rng: random.Random
) -> Iterator[str]:
    """The hub's ``area_totals`` each minute, modelled on the readings' distributions.

    Not summed from the random readings (a full-size city is 13,000 devices a minute):
    each total is its devices' expected value on the day's curve with a little noise, the
    counts are exact, and the reboots' increases are the readings' own (every 200th
    reading of every fifth access point, counted from ``start_ms`` as ``reading_lines``).
    """
    groups: dict[tuple[str, str], list[Device]] = {}
    nvrs: dict[str, list[Device]] = {}
    for device in fleet:
        if device.family not in ("wifi", "cctv"):
            continue
        key = (device.family, device.tags["kecamatan"])
        groups.setdefault(key, [])
        if device.tags["model"] == NVR_MODEL:
            nvrs.setdefault(key[1], []).append(device)
        else:
            groups[key].append(device)
    t = start_ms - start_ms % MINUTE_MS + MINUTE_MS
    while t <= end_ms:
        busy = _daily(t / 3_600_000)
        for (family, kecamatan), members in sorted(groups.items()):
            n = len(members)
            tags = {"hub": HUB, "family": family, "kecamatan": kecamatan}
            fields: dict[str, FieldValue] = {}  # a kecamatan with NVRs and no camera
            if family == "wifi":
                up = sum(d.number % 7 != 3 for d in members)
                rebooting = sum(d.number % 5 == 0 for d in members)
                every = members[0].every_ms
                first = start_ms - start_ms % every
                crossed = (t - first) // every // 200 - max(
                    0, t - MINUTE_MS - first
                ) // every // 200
                noise = rng.uniform(0.9, 1.1)
                fields = {
                    "clients_sum": round(busy * 20 * up * noise),
                    "rx_bps_sum": round(busy * 2e6 * up * noise, 1),
                    "tx_bps_sum": round(busy * 8e6 * up * noise, 1),
                    "reboots_increase": rebooting * crossed,
                }
                fields |= {f"{k}_devices": n for k in ("clients", "rx_bps", "tx_bps", "reboots")}
            elif n:
                ok = sum(d.number % 9 != 4 for d in members)
                crowd = any(d.number % 3 == 0 for d in members)
                fields = {"fps_ratio_sum": round(0.75 * ok * rng.uniform(0.97, 1.03), 2)}
                for flag, k in (("frozen", 5), ("black", 6), ("blurred", 7)):
                    fields[f"{flag}_sum"] = sum(d.number % 9 == k for d in members)
                fields |= {f"{k}_devices": n for k in ("fps_ratio", "frozen", "black", "blurred")}
                if crowd:
                    fields["zone_people_max"] = int(busy * rng.uniform(13, 15))
                    fields["parked_vehicles_max"] = 3
            if family == "cctv" and kecamatan in nvrs:
                fields |= _nvr_area_fields(nvrs[kecamatan], t / 3_600_000)
            yield line("area_totals", tags, fields, t)
        t += MINUTE_MS


def _nvr_area_fields(members: list[Device], hours: float) -> dict[str, FieldValue]:
    """A kecamatan's NVR totals: exact counts of the readings' flags, their fullest disk."""
    n = len(members)
    fields: dict[str, FieldValue] = {
        "recording_sum": sum(_nvr_recording(d.number) for d in members),
        "channels_total_sum": NVR_CHANNELS * n,
        "channels_video_loss_sum": sum(_nvr_video_loss(d.number) for d in members),
        # The NVRs of a kecamatan fill alike (its number % 8): the max is any one's.
        "disk_fill_pct_max": _nvr_disk_fill(members[0].number, hours),
    }
    counted = ("recording", "channels_total", "channels_video_loss")
    return fields | {f"{k}_devices": n for k in counted}


def _alert_lines(fleet: list[Device], end_ms: int) -> Iterator[str]:
    """A raised, an acknowledged and a cleared alert (the alert engine's schema)."""
    samples = [d for d in fleet if d.family in ("flood", "atcs", "wifi")][:3]
    for number, device in enumerate(samples):
        tags = {
            "rule_id": f"{device.family}_rule",
            "device_id": device.device_id,
            "family": device.family,
            "kecamatan": device.tags["kecamatan"],
            "team": device.tags["team"],
            "severity": ("warning", "critical", "info")[number],
        }
        base = end_ms - (number + 2) * 600_000
        events = [("raise", "siaga")]
        if number == 1:
            events.append(("ack", "siaga"))
        if number == 2:
            events.append(("clear", "normal"))
        for step, (event, stage) in enumerate(events):
            yield line(
                "alert",
                {**tags, "event": event},
                {
                    "alert_key": f"{tags['rule_id']}/{device.device_id}",
                    "instance": 1.0,
                    "level": 2.0 if event != "clear" else 0.0,
                    "stage": stage,
                    "message": f"{device.device_id}: {event} ({stage})",
                    "actor": "",
                    "event_id": float(number * 10 + step),
                },
                base + step * 60_000,
            )
