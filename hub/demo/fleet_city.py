"""Semarang's fleet, generated deterministically from a seed: the sample and the whole city.

``sample_document()`` is what ``hub/demo/data/semarang.json`` holds (regenerate it with
``python -m hub.demo.fleet_city > hub/demo/data/semarang.json``): a few hundred devices of
the families that have drivers, across the 16 kecamatan. ``city_document()`` is the city at
its real size and proportions (10,700 cameras, 2,300 WiFi APs, 54 ATCS controllers with
their detectors, about 150 gauges and pumps, 450 vehicles). Coordinates are jittered
around real places; the names of kecamatan and kelurahan are Semarang's.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from typing import Any

from hub.registry_thresholds import STAGES as FLOOD_STAGES

DEFAULT_SEED = 14
KOTA = "Kota Semarang"


@dataclass(frozen=True, slots=True)
class Area:
    """A kecamatan: centre, whether it is on the coast, its kelurahan with positions."""

    kecamatan: str
    slug: str
    lat: float
    lon: float
    coastal: bool
    kelurahan: tuple[str, ...]


# fmt: off
AREAS: tuple[Area, ...] = (
    Area("Semarang Tengah", "tengah", -6.9800, 110.4180, False,
         ("Pekunden", "Sekayu", "Kembangsari", "Miroto", "Pandansari", "Karangkidul")),
    Area("Semarang Utara", "utara", -6.9590, 110.4150, True,
         ("Tanjung Mas", "Bandarharjo", "Kuningan", "Panggung Lor", "Bulu Lor", "Plombokan")),
    Area("Semarang Timur", "timur", -6.9740, 110.4330, True,
         ("Kemijen", "Rejomulyo", "Mlatibaru", "Rejosari", "Bugangan", "Karangtempel")),
    Area("Semarang Selatan", "selatan", -6.9950, 110.4260, False,
         ("Peterongan", "Lamper Kidul", "Pleburan", "Wonodri", "Mugassari", "Barusari")),
    Area("Semarang Barat", "barat", -6.9830, 110.3870, True,
         ("Krobokan", "Tawangmas", "Tawangsari", "Kembangarum", "Manyaran", "Cabean")),
    Area("Gayamsari", "gayamsari", -6.9860, 110.4480, True,
         ("Sawah Besar", "Kaligawe", "Tambakrejo", "Siwalan", "Pandean Lamper", "Gayamsari")),
    Area("Candisari", "candisari", -7.0100, 110.4240, False,
         ("Jatingaleh", "Jomblang", "Candi", "Kaliwiru", "Karanganyar Gunung", "Tegalsari")),
    Area("Gajahmungkur", "gajahmungkur", -7.0090, 110.4040, False,
         ("Sampangan", "Bendan Duwur", "Bendan Ngisor", "Petompon", "Lempongsari", "Karangrejo")),
    Area("Genuk", "genuk", -6.9640, 110.4790, True,
         ("Terboyo Kulon", "Terboyo Wetan", "Trimulyo",
          "Bangetayu Wetan", "Muktiharjo Lor", "Genuksari")),
    Area("Pedurungan", "pedurungan", -7.0000, 110.4660, False,
         ("Tlogosari Kulon", "Tlogosari Wetan", "Palebon",
          "Muktiharjo Kidul", "Pedurungan Kidul", "Gemah")),
    Area("Tembalang", "tembalang", -7.0550, 110.4420, False,
         ("Tembalang", "Bulusan", "Meteseh", "Sendangmulyo", "Kramas", "Rowosari")),
    Area("Banyumanik", "banyumanik", -7.0650, 110.4170, False,
         ("Srondol Kulon", "Srondol Wetan", "Pudakpayung", "Banyumanik", "Sumurboto", "Tinjomoyo")),
    Area("Gunungpati", "gunungpati", -7.0830, 110.3660, False,
         ("Sekaran", "Sukorejo", "Patemon", "Kalisegoro", "Plalangan", "Gunungpati")),
    Area("Mijen", "mijen", -7.0760, 110.3060, False,
         ("Mijen", "Jatibarang", "Wonoplumbon", "Ngadirgo", "Bubakan", "Jatisari")),
    Area("Ngaliyan", "ngaliyan", -7.0000, 110.3460, False,
         ("Ngaliyan", "Tambakaji", "Beringin", "Purwoyoso", "Kalipancur", "Wonosari")),
    Area("Tugu", "tugu", -6.9760, 110.3140, True,
         ("Mangkang Wetan", "Mangkang Kulon", "Mangunharjo",
          "Randugarut", "Karanganyar", "Tugurejo")),
)
# fmt: on
UPSTREAM = {
    "Gunungpati",
    "Banyumanik",
    "Tembalang",
    "Mijen",
    "Gajahmungkur",
    "Candisari",
    "Ngaliyan",
}

# Where each lowland area's rivers come from (Banjir Kanal Barat / Kali Garang, Banjir
# Kanal Timur, Kali Semarang, Kali Beringin): upstream kecamatan whose rain reaches it.
CATCHMENTS: dict[str, tuple[str, ...]] = {
    "Semarang Barat": ("Gunungpati", "Gajahmungkur"),
    "Semarang Utara": ("Gajahmungkur",),
    "Semarang Tengah": ("Candisari",),
    "Semarang Timur": ("Candisari",),
    "Semarang Selatan": ("Banyumanik", "Candisari"),
    "Gayamsari": ("Pedurungan", "Tembalang"),
    "Pedurungan": ("Tembalang",),
    "Genuk": ("Pedurungan",),
    "Ngaliyan": ("Mijen",),
    "Tugu": ("Mijen", "Ngaliyan"),
}

# BRT Trans Semarang corridors, as stop-to-stop polylines (demo data, real-looking).
# fmt: off
BRT_CORRIDORS: dict[str, tuple[tuple[float, float], ...]] = {
    "k1": ((-6.9739, 110.2985), (-6.9817, 110.3485), (-6.9837, 110.4091), (-6.9932, 110.4225),
           (-7.0052, 110.4381), (-7.0215, 110.4640)),
    "k2": ((-6.9720, 110.4270), (-6.9900, 110.4220), (-7.0140, 110.4210), (-7.0460, 110.4190),
           (-7.0680, 110.4150), (-7.1030, 110.4080)),
    "k3": ((-6.9510, 110.4230), (-6.9680, 110.4240), (-6.9830, 110.4100), (-6.9920, 110.4060)),
    "k4": ((-6.9650, 110.4930), (-6.9700, 110.4560), (-6.9740, 110.4330), (-6.9790, 110.4140)),
    "k5": ((-6.9960, 110.3300), (-6.9880, 110.3800), (-6.9950, 110.4210), (-7.0010, 110.4660)),
    "k6": ((-7.0510, 110.4400), (-7.0210, 110.4340), (-6.9960, 110.4250), (-6.9780, 110.4200)),
    "k7": ((-6.9560, 110.4800), (-6.9740, 110.4480), (-6.9850, 110.4300), (-6.9900, 110.4200)),
    "k8": ((-7.0830, 110.3660), (-7.0300, 110.3900), (-7.0050, 110.4030), (-6.9840, 110.4090)),
}
# fmt: on

TEAMS: tuple[dict[str, Any], ...] = (
    {
        "id": "bpbd-semarang",
        "name": "BPBD Kota Semarang (early warning)",
        "contact_channels": [{"kind": "telegram", "address": "@bpbd_smg_demo"}],
    },
    {"id": "trans-semarang", "name": "BLU Trans Semarang operations"},
    {"id": "dlh-kebersihan", "name": "DLH Kota Semarang, waste collection"},
    {"id": "diskominfo-smg", "name": "Diskominfo Kota Semarang, network and CCTV"},
    {"id": "dishub-atcs", "name": "Dishub Kota Semarang, ATCS"},
)


def area_team(area: Area) -> str:
    """The drainage team of an area (one per kecamatan)."""
    return f"dpu-{area.slug}"


def _jitter(rng: random.Random, lat: float, lon: float, km: float) -> tuple[float, float]:
    # 1 degree is about 111 km here (7 degrees south): good enough for scattering.
    return (
        round(lat + rng.uniform(-km, km) / 111.0, 6),
        round(lon + rng.uniform(-km, km) / 111.0, 6),
    )


def _kelurahan_positions(rng: random.Random, area: Area) -> list[dict[str, Any]]:
    out = []
    for name in area.kelurahan:
        lat, lon = _jitter(rng, area.lat, area.lon, 1.6)
        out.append({"name": name, "lat": lat, "lon": lon})
    return out


def _areas(rng: random.Random) -> list[dict[str, Any]]:
    areas = []
    for area in AREAS:
        gw_lat, gw_lon = _jitter(rng, area.lat, area.lon, 0.3)
        areas.append(
            {
                "kecamatan": area.kecamatan,
                "lat": area.lat,
                "lon": area.lon,
                "coastal": area.coastal,
                "team": area_team(area),
                "gateway": {
                    "id": f"gw-{area.slug}",
                    "lat": gw_lat,
                    "lon": gw_lon,
                    "site": f"kantor-kec-{area.slug}",
                },
                "kelurahan": _kelurahan_positions(rng, area),
            }
        )
    return areas


class _Builder:
    """Accumulates sites and devices with stable, readable ids."""

    def __init__(self, rng: random.Random, areas: list[dict[str, Any]]) -> None:
        self.rng = rng
        self.areas = {a["kecamatan"]: a for a in areas}
        self.sites: list[dict[str, Any]] = []
        self.devices: list[dict[str, Any]] = []
        for area in AREAS:
            doc = self.areas[area.kecamatan]
            self.sites.append(
                {
                    "id": f"kantor-kec-{area.slug}",
                    "name": f"Kantor Kecamatan {area.kecamatan}",
                    "kecamatan": area.kecamatan,
                    "lat": doc["gateway"]["lat"],
                    "lon": doc["gateway"]["lon"],
                }
            )

    def place(self, area: Area, km: float = 1.2) -> tuple[str, float, float]:
        kel = self.rng.choice(self.areas[area.kecamatan]["kelurahan"])
        lat, lon = _jitter(self.rng, kel["lat"], kel["lon"], km)
        return kel["name"], lat, lon

    def site(self, site_id: str, name: str, area: Area, kel: str, lat: float, lon: float) -> str:
        self.sites.append(
            {
                "id": site_id,
                "name": name,
                "kecamatan": area.kecamatan,
                "kelurahan": kel,
                "lat": lat,
                "lon": lon,
            }
        )
        return site_id

    def device(self, **fields: Any) -> dict[str, Any]:
        entry = {k: v for k, v in fields.items() if v not in (None, {}, "")}
        self.devices.append(entry)
        return entry


def flood_stages(params: dict[str, Any], rng: random.Random) -> dict[str, str]:
    """A gauge's flood stages (metres, rising): registry attributes the alerts and boards read.

    Siaga 4 sits above the gauge's ordinary high water (its base, plus the spring tide at
    the coast) so a dry day raises nothing; each stage after it is 0.3 to 0.5 m higher,
    so a 30 mm/h storm (about 1 m at its peak) reaches Siaga 3 or 2, not always Siaga 1.
    """
    high = float(params["base_m"]) + (0.6 if params.get("coastal") else 0.0)
    stage = high + rng.uniform(0.3, 0.5)
    out: dict[str, str] = {}
    for name in FLOOD_STAGES:
        out[name] = f"{stage:.2f}"
        stage += rng.uniform(0.3, 0.5)
    return out


def _flood(b: _Builder, area: Area, *, gauges: int, rains: int, pumps: int) -> None:
    rng = b.rng
    for n in range(1, gauges + 1):
        kel, lat, lon = b.place(area)
        model = "vegapuls_c21" if n % 3 else "generic_4_20ma"
        params: dict[str, Any] = {
            "coastal": area.coastal and n <= 2,
            "upstream": area.kecamatan in UPSTREAM,
            "lag_h": round(rng.uniform(0.5, 2.0), 2),
            "base_m": round(rng.uniform(-0.2, 0.6), 2),
        }
        upstream = CATCHMENTS.get(area.kecamatan, ())
        if upstream:
            # A generator of its own, so adding catchments moved no other device.
            lags = random.Random(f"catchment:{area.slug}:{n}")
            params["catchment"] = [
                {"area": u, "lag_h": round(lags.uniform(1.5, 3.0), 2), "weight": 0.5}
                for u in upstream
            ]
        b.device(
            id=f"smg-{area.slug}-level-{n:02d}",
            family="flood",
            device_type=model,
            kecamatan=area.kecamatan,
            kelurahan=kel,
            lat=lat,
            lon=lon,
            team=area_team(area),
            vendor="VEGA" if model == "vegapuls_c21" else None,
            params=params,
            tags=flood_stages(params, random.Random(f"stages:{area.slug}:{n}")),
        )
    for n in range(1, rains + 1):
        kel, lat, lon = b.place(area)
        b.device(
            id=f"smg-{area.slug}-rain-{n:02d}",
            family="flood",
            device_type="tipping_bucket_rain",
            kecamatan=area.kecamatan,
            kelurahan=kel,
            lat=lat,
            lon=lon,
            team="bpbd-semarang",
            driver_config={"mm_per_tip": 0.2},
            params={"battery_sag_v_per_day": round(rng.uniform(0.01, 0.05), 3)},
        )
    for n in range(1, pumps + 1):
        kel, lat, lon = b.place(area, 0.8)
        site = b.site(f"rumah-pompa-{area.slug}-{n}", f"Rumah Pompa {kel} {n}", area, kel, lat, lon)
        b.device(
            id=f"smg-{area.slug}-pump-{n:02d}",
            family="flood",
            device_type="pump_station_plc",
            kecamatan=area.kecamatan,
            kelurahan=kel,
            lat=lat,
            lon=lon,
            site=site,
            team=area_team(area),
            params={
                "pumps": rng.choice((2, 3, 4)),
                "start_m": 1.0,
                "stop_m": 0.4,
                "coastal": area.coastal,
            },
        )


def _ble(b: _Builder, area: Area, count: int) -> None:
    for n in range(1, count + 1):
        kel, lat, lon = b.place(area, 0.5)
        mac_tail = b.rng.getrandbits(24)
        mac = "A4:C1:38:" + ":".join(f"{(mac_tail >> s) & 0xFF:02X}" for s in (16, 8, 0))
        pvvx = n % 2 == 1
        b.device(
            id=f"ble-{area.slug}-{n:02d}",
            family="ble",
            device_type="thermometer" if pvvx else "bthome_sensor",
            kecamatan=area.kecamatan,
            kelurahan=kel,
            lat=lat,
            lon=lon,
            team=area_team(area),
            address=mac,
            # The simulator advertises once per (simulated) minute, so the scanner keeps each
            # advert; a real sensor advertises every second and min_interval_s 60 thins it.
            driver_config={
                "format": "pvvx" if pvvx else "bthome",
                "min_interval_s": 0.5,
                "contact_means_leak": pvvx,
            },
            params={"sleeps": n % 4 == 0, "battery_start_v": round(b.rng.uniform(2.75, 3.05), 3)},
        )


def _vehicles(b: _Builder, buses_per_corridor: int, trucks_per_area: int) -> None:
    for corridor, stops in BRT_CORRIDORS.items():
        for n in range(1, buses_per_corridor + 1):
            lat, lon = stops[0]
            area = _nearest_area(lat, lon)
            b.device(
                id=f"brt-{corridor}-{n:03d}",
                family="gps",
                device_type="gps_tracker",
                kecamatan=area.kecamatan,
                lat=lat,
                lon=lon,
                team="trans-semarang",
                model="teltonika-fmb920",
                tags={"route": corridor, "fleet": "brt"},  # drivers/gps/routes.json
                params={
                    "route": corridor,
                    "path": [list(p) for p in stops],
                    "offset": round((n - 1) / buses_per_corridor, 4),
                },
            )
    for area in AREAS:
        points = [[k["lat"], k["lon"]] for k in b.areas[area.kecamatan]["kelurahan"]]
        for n in range(1, trucks_per_area + 1):
            kel, lat, lon = b.place(area)
            path = points[n % len(points) :] + points[: n % len(points)]
            b.device(
                id=f"dlh-{area.slug}-truck-{n:02d}",
                family="gps",
                device_type="gps_tracker",
                kecamatan=area.kecamatan,
                kelurahan=kel,
                lat=lat,
                lon=lon,
                team="dlh-kebersihan",
                tags={"route": round_route_id(area), "fleet": "garbage"},
                params={"round": "kelurahan", "path": path, "offset": round(b.rng.random(), 4)},
            )


def round_route_id(area: Area) -> str:
    """The route id of an area's garbage round (its kelurahan in order, a loop)."""
    return f"dlh-{area.slug}-1"


def areas_document(seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """The areas (kelurahan positions included) both fleets of this seed are placed in."""
    return _areas(random.Random(seed))


def _nearest_area(lat: float, lon: float) -> Area:
    return min(AREAS, key=lambda a: (a.lat - lat) ** 2 + (a.lon - lon) ** 2)


def _special_cases(devices: list[dict[str, Any]]) -> None:
    """The realistic faults: a drifting gauge, a stuck one, one that dies, vehicles detouring."""
    by_id = {d["id"]: d for d in devices}
    for device_id, extra in (
        ("smg-tengah-level-01", {"drift_m_per_day": 0.08}),
        ("smg-selatan-level-02", {"sticks_after_h": 3.0}),
        ("smg-genuk-level-02", {"dies_after_h": 5.0}),
        # A bus and a truck that leave their route now and then (the off-route board and rule).
        ("brt-k1-002", {"detour": {"every_h": 2.0, "for_min": 20, "m": 500, "phase_h": 0.5}}),
        ("dlh-genuk-truck-01", {"detour": {"every_h": 3.0, "for_min": 20, "m": 600}}),
    ):
        if device_id in by_id:
            by_id[device_id].setdefault("params", {}).update(extra)


def _document(description: str, areas: list[dict[str, Any]], b: _Builder) -> dict[str, Any]:
    teams = [*TEAMS, *({"id": area_team(a), "name": f"DPU drainage {a.kecamatan}"} for a in AREAS)]
    _special_cases(b.devices)
    return {
        "version": 1,
        "kota": KOTA,
        "description": description,
        "teams": teams,
        "areas": areas,
        "sites": b.sites,
        "devices": b.devices,
    }


def sample_document(seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """The sample city: flood, rain, pumps, BLE, vehicles, CCTV, WiFi and ATCS in 16 kecamatan."""
    rng = random.Random(seed)
    areas = _areas(rng)
    b = _Builder(rng, areas)
    for area in AREAS:
        low = area.coastal or area.kecamatan in ("Semarang Tengah", "Pedurungan")
        _flood(b, area, gauges=4 if area.coastal else 3, rains=2, pumps=3 if low else 0)
        _ble(b, area, 4)
    _vehicles(b, buses_per_corridor=5, trucks_per_area=2)
    for area in AREAS:  # after the others, so adding these moved no earlier device
        _network(b, area)
    for area in AREAS:
        if area.kecamatan in SAMPLE_ATCS_AREAS:
            _atcs(b, area)
    return _document(
        "Sample Semarang for `kotahub demo` (generated by hub/demo/fleet_city.py)", areas, b
    )


SAMPLE_CAMERAS_PER_NVR = 2
# The junctions of the centre, where Semarang's ATCS started.
SAMPLE_ATCS_AREAS = ("Semarang Tengah", "Semarang Selatan", "Semarang Timur", "Gayamsari")
SAMPLE_DETECTORS = 4


def _atcs(b: _Builder, area: Area) -> None:
    """A signal controller and its loop detectors (read through it: ``detectors`` maps them)."""
    kel, lat, lon = b.place(area, km=0.8)
    controller = f"atcs-{area.slug}-01"
    detectors = {str(n): f"{controller}-det{n}" for n in range(1, SAMPLE_DETECTORS + 1)}
    b.device(
        id=controller,
        family="atcs",
        device_type="ntcip_1202_controller",
        kecamatan=area.kecamatan,
        kelurahan=kel,
        lat=lat,
        lon=lon,
        team="dishub-atcs",
        driver_config={"detectors": detectors},
    )
    for device_id in detectors.values():
        b.device(
            id=device_id,
            family="atcs",
            device_type="ntcip_1202_detector",
            kecamatan=area.kecamatan,
            kelurahan=kel,
            lat=lat,
            lon=lon,
            team="dishub-atcs",
            parent=controller,
        )


def _network(b: _Builder, area: Area) -> None:
    """An area's CCTV (an NVR at the kantor kecamatan, cameras recorded on it) and a WiFi AP."""
    kel, lat, lon = b.place(area, km=0.3)
    nvr = b.device(
        id=f"cctv-{area.slug}-nvr-01",
        family="cctv",
        device_type="nvr_4ch",
        kecamatan=area.kecamatan,
        kelurahan=kel,
        lat=lat,
        lon=lon,
        team="diskominfo-smg",
    )
    for n in range(1, SAMPLE_CAMERAS_PER_NVR + 1):
        kel, lat, lon = b.place(area)
        b.device(
            id=f"cctv-{area.slug}-cam-{n:02d}",
            family="cctv",
            device_type="rt_camera",
            kecamatan=area.kecamatan,
            kelurahan=kel,
            lat=lat,
            lon=lon,
            team="diskominfo-smg",
            parent=nvr["id"],
        )
    kel, lat, lon = b.place(area)
    b.device(
        id=f"wifi-{area.slug}-ap-01",
        family="wifi",
        device_type="mikrotik_ap",
        kecamatan=area.kecamatan,
        kelurahan=kel,
        lat=lat,
        lon=lon,
        team="diskominfo-smg",
    )


# The city's proportions (DESIGN.md): cameras, WiFi, ATCS, gauges and pumps, vehicles.
CITY_CAMERAS = 10_700
CITY_WIFI = 2_300
CITY_ATCS = 54
DETECTORS_PER_ATCS = 4
CITY_BUSES_PER_CORRIDOR = 25  # 8 corridors: 200 buses
CITY_TRUCKS_PER_AREA = 16  # 16 areas: 256 trucks


def _spread(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def city_document(seed: int = DEFAULT_SEED, fraction: float = 1.0) -> dict[str, Any]:
    """The whole city at its real size; the stand-in families are marked as such.

    ``fraction`` (0-1] shrinks the cameras, WiFi points, ATCS controllers and vehicles in
    proportion (at least one of each per area or corridor): a smaller city for profiling.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction!r}")

    def part(count: int) -> int:
        return max(1, round(count * fraction))

    rng = random.Random(seed)
    areas = _areas(rng)
    b = _Builder(rng, areas)
    pump_areas = [a for a in AREAS if a.coastal or a.kecamatan == "Pedurungan"]
    for i, area in enumerate(AREAS):
        pumps = _spread(49, len(pump_areas), pump_areas.index(area)) if area in pump_areas else 0
        _flood(b, area, gauges=4, rains=2, pumps=pumps)
        _ble(b, area, 4)
        for n in range(1, _spread(part(CITY_CAMERAS), len(AREAS), i) + 1):
            kel, lat, lon = b.place(area)
            b.device(
                id=f"cctv-{area.slug}-{n:05d}",
                family="cctv",
                device_type="cctv_stand_in",
                kecamatan=area.kecamatan,
                kelurahan=kel,
                lat=lat,
                lon=lon,
                team="diskominfo-smg",
            )
        for n in range(1, _spread(part(CITY_WIFI), len(AREAS), i) + 1):
            kel, lat, lon = b.place(area)
            b.device(
                id=f"wifi-{area.slug}-{n:04d}",
                family="wifi",
                device_type="wifi_ap_stand_in",
                kecamatan=area.kecamatan,
                kelurahan=kel,
                lat=lat,
                lon=lon,
                team="diskominfo-smg",
            )
        for n in range(1, _spread(part(CITY_ATCS), len(AREAS), i) + 1):
            kel, lat, lon = b.place(area)
            controller = b.device(
                id=f"atcs-{area.slug}-{n:02d}",
                family="atcs",
                device_type="atcs_controller_stand_in",
                kecamatan=area.kecamatan,
                kelurahan=kel,
                lat=lat,
                lon=lon,
                team="dishub-atcs",
            )
            for d in range(1, DETECTORS_PER_ATCS + 1):
                b.device(
                    id=f"{controller['id']}-det{d}",
                    family="atcs_detector",
                    device_type="atcs_detector_stand_in",
                    kecamatan=area.kecamatan,
                    kelurahan=kel,
                    lat=lat,
                    lon=lon,
                    team="dishub-atcs",
                    parent=controller["id"],
                )
    _vehicles(
        b,
        buses_per_corridor=part(CITY_BUSES_PER_CORRIDOR),
        trucks_per_area=part(CITY_TRUCKS_PER_AREA),
    )
    return _document(
        f"Semarang at city scale (seed {seed}; cctv, wifi and atcs are stand-ins)", areas, b
    )


def main() -> None:
    """Print the sample document (the committed data file is this output)."""
    json.dump(sample_document(), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
