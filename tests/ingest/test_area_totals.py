"""area_totals: the hub's sums, peaks and increases per family and kecamatan.

Unit tests of the sums, the freshness window, counters and peaks with the real wifi and
cctv declarations; a property test holds any reading sequence against a reference
computed step by step, and never lets one crash the totals or their lines; a hub on the
real broker and InfluxDB writes the totals of the readings it takes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_registry.directory import DeviceRecord
from drivers.cctv import FAMILY as CCTV
from drivers.framework import AreaMetric
from drivers.wifi import FAMILY as WIFI
from hub.influx_rollups import aggregates_for, measurement_fields
from hub.ingest.area_totals import AreaTotal, AreaTotals, area_fields
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, payload, wait_until

MINUTE = 60_000


def _ap(number: int, kecamatan: str = "Tembalang", interval_s: float = 120.0) -> DeviceRecord:
    return DeviceRecord(
        device_id=f"ap-{number}",
        family="wifi",
        device_type="mikrotik_ap",
        expected_interval_s=interval_s,
        tags={"kecamatan": kecamatan} if kecamatan else {},
    )


def _camera(number: int, kecamatan: str = "Genuk") -> DeviceRecord:
    return DeviceRecord(
        device_id=f"cam-{number}",
        family="cctv",
        device_type="rt_camera",
        expected_interval_s=300.0,
        tags={"kecamatan": kecamatan},
    )


def _fields(totals: list[AreaTotal]) -> dict[tuple[str, str], dict[str, float]]:
    return {(t.family, t.kecamatan): dict(t.fields) for t in totals}


def test_sums_count_the_devices_that_reported_recently() -> None:
    areas = AreaTotals([WIFI, CCTV], offline_factor=3.0)
    areas.record(_ap(1), {"clients": 10, "rx_bps": 1.5e6, "up": True}, 0)
    areas.record(_ap(2), {"clients": 4, "rx_bps": 0.5e6}, 0)
    areas.record(_ap(3, "Genuk"), {"clients": 7}, 0)
    areas.record(_ap(1), {"clients": 12}, MINUTE)  # its last value replaces the first
    got = _fields(areas.totals(2 * MINUTE))
    assert got[("wifi", "Tembalang")] == {
        "clients_sum": 16,
        "clients_devices": 2,
        "rx_bps_sum": 2e6,
        "rx_bps_devices": 2,
    }
    assert got[("wifi", "Genuk")] == {"clients_sum": 7, "clients_devices": 1}
    # 3 x 120 s after its last reading an AP is stale: out of the sums and the counts.
    got = _fields(areas.totals(6 * MINUTE + 1))
    assert got == {("wifi", "Tembalang"): {"clients_sum": 12, "clients_devices": 1}}
    assert areas.totals(7 * MINUTE + 1) == []


def test_counters_add_their_growth_and_a_restart_adds_nothing() -> None:
    areas = AreaTotals([WIFI])
    areas.record(_ap(1), {"reboots": 5}, 0)  # the first value is the baseline
    areas.record(_ap(2), {"reboots": 0}, 0)
    got = _fields(areas.totals(MINUTE))[("wifi", "Tembalang")]
    assert (got["reboots_increase"], got["reboots_devices"]) == (0, 2)
    areas.record(_ap(1), {"reboots": 7}, MINUTE)
    areas.record(_ap(2), {"reboots": 1}, MINUTE)
    assert _fields(areas.totals(2 * MINUTE))[("wifi", "Tembalang")]["reboots_increase"] == 3
    areas.record(_ap(1), {"reboots": 0}, 2 * MINUTE)  # the agent restarted its counter
    areas.record(_ap(1), {"reboots": 1}, 2 * MINUTE + 1)
    assert _fields(areas.totals(3 * MINUTE))[("wifi", "Tembalang")]["reboots_increase"] == 1


def test_peaks_start_over_each_interval_and_booleans_count_as_cameras() -> None:
    areas = AreaTotals([CCTV])
    areas.record(_camera(1), {"zone_people": 12, "frozen": True, "fps_ratio": 0.5}, 0)
    areas.record(_camera(1), {"zone_people": 4, "frozen": True}, 1)
    areas.record(_camera(2), {"zone_people": 9, "frozen": False, "fps_ratio": 1.0}, 2)
    got = _fields(areas.totals(MINUTE))[("cctv", "Genuk")]
    assert got["zone_people_max"] == 12
    assert (got["frozen_sum"], got["frozen_devices"]) == (1, 2)
    assert got["fps_ratio_sum"] / got["fps_ratio_devices"] == pytest.approx(0.75)
    areas.record(_camera(2), {"zone_people": 3}, MINUTE + 1)
    assert _fields(areas.totals(2 * MINUTE))[("cctv", "Genuk")]["zone_people_max"] == 3
    # No reading since: no peak, the sums stay while the cameras are fresh.
    assert "zone_people_max" not in _fields(areas.totals(3 * MINUTE))[("cctv", "Genuk")]


def _nvr(number: int, kecamatan: str = "Genuk") -> DeviceRecord:
    return DeviceRecord(
        device_id=f"nvr-{number}",
        family="cctv",
        device_type="nvr_4ch",
        expected_interval_s=300.0,
        tags={"kecamatan": kecamatan},
    )


def test_nvr_totals_count_nvrs_not_cameras() -> None:
    areas = AreaTotals([CCTV])
    nvr = {"channels_total": 4, "disk_status": "ok"}
    areas.record(
        _nvr(1), {**nvr, "recording": True, "channels_video_loss": 0, "disk_fill_pct": 61.5}, 0
    )
    areas.record(
        _nvr(2),
        {
            **nvr,
            "recording": False,
            "channels_video_loss": 2,
            "disk_fill_pct": 97.0,
            "disk_status": "error",
        },
        1,
    )
    areas.record(
        _nvr(3), {**nvr, "recording": True, "channels_video_loss": 1, "disk_fill_pct": 40.0}, 2
    )
    areas.record(
        _nvr(4, "Tembalang"),
        {**nvr, "recording": False, "channels_video_loss": 0, "disk_fill_pct": 10.0},
        3,
    )
    # A camera reports none of the NVR rows: it counts in no NVR total.
    areas.record(_camera(1), {"frozen": False, "fps_ratio": 1.0, "nvr_recording": True}, 4)
    got = _fields(areas.totals(MINUTE))
    genuk, tembalang = got[("cctv", "Genuk")], got[("cctv", "Tembalang")]
    assert (genuk["recording_sum"], genuk["recording_devices"]) == (2, 3)
    assert genuk["recording_devices"] - genuk["recording_sum"] == 1  # not recording
    assert tembalang["recording_devices"] - tembalang["recording_sum"] == 1
    assert (genuk["channels_total_sum"], genuk["channels_total_devices"]) == (12, 3)
    assert genuk["channels_video_loss_sum"] == 3
    assert genuk["disk_fill_pct_max"] == 97.0
    assert tembalang["disk_fill_pct_max"] == 10.0
    assert genuk["frozen_devices"] == 1  # the camera
    # nvr-2 starts recording; nvr-3 goes silent past 3 x 300 s and drops out of the sums.
    areas.record(_nvr(2), {"recording": True, "channels_video_loss": 0}, 10 * MINUTE)
    areas.record(_nvr(1), {"recording": True, "channels_video_loss": 0}, 14 * MINUTE)
    genuk = _fields(areas.totals(15 * MINUTE + 3))[("cctv", "Genuk")]
    assert (genuk["recording_sum"], genuk["recording_devices"]) == (2, 2)
    assert genuk["channels_video_loss_sum"] == 0
    # The disk fill is a peak: none reported since the previous point, none now.
    assert "disk_fill_pct_max" not in genuk
    line = next(x for x in areas.lines("hub-a", 16 * MINUTE) if "Genuk" in x)
    assert "recording_sum=2i" in line
    assert "disk_fill_pct_max" not in line


def test_the_registry_decides_retired_and_moved_devices() -> None:
    areas = AreaTotals([WIFI])
    areas.record(_ap(1), {"clients": 3}, 0)
    areas.record(_ap(2), {"clients": 5}, 0)
    areas.record(_ap(3), {"clients": 8}, 0)
    registry = {
        "ap-1": replace(_ap(1), state="retired"),
        "ap-2": _ap(2, "Candisari"),
    }  # ap-3 deleted
    got = _fields(areas.totals(MINUTE, registry.get))
    assert got == {("wifi", "Candisari"): {"clients_sum": 5, "clients_devices": 1}}


def test_families_without_declarations_cost_one_lookup_and_write_nothing() -> None:
    areas = AreaTotals([WIFI])
    flood = DeviceRecord(device_id="g", family="flood", device_type="t")
    areas.record(flood, {"level_m": 1.0}, 0)
    areas.record(_camera(1), {"zone_people": 3}, 0)  # cctv is not among the families
    assert areas.families == frozenset({"wifi"})
    assert areas.totals(MINUTE) == []


def test_lines_are_typed_as_the_metrics_and_tagged_with_the_hub() -> None:
    areas = AreaTotals([WIFI, CCTV])
    areas.record(_ap(1, "Semarang Tengah"), {"clients": 3, "rx_bps": 2.0, "reboots": 1}, 0)
    areas.record(_ap(2, ""), {"clients": 2}, 0)
    assert areas.lines("hub-a", 1_000) == [
        # No kecamatan in the registry: the tag is left out, as on the device's points.
        "area_totals,family=wifi,hub=hub-a clients_devices=1i,clients_sum=2i 1000",
        "area_totals,family=wifi,hub=hub-a,kecamatan=Semarang\\ Tengah clients_devices=1i,"
        "clients_sum=3i,reboots_devices=1i,reboots_increase=0i,rx_bps_devices=1i,"
        "rx_bps_sum=2.0 1000",
    ]


def test_the_rollups_keep_the_meaning_of_each_field() -> None:
    fields = measurement_fields()["area_totals"]
    assert fields == area_fields([WIFI, CCTV])
    assert aggregates_for("area_totals", "clients_sum", "integer") == ("mean",)
    assert aggregates_for("area_totals", "clients_devices", "integer") == ("mean",)
    assert aggregates_for("area_totals", "zone_people_max", "integer") == ("max",)
    assert aggregates_for("area_totals", "reboots_increase", "integer") == ("sum",)
    # The NVRs' totals: the mean count of a bucket, the fullest disk of it.
    assert aggregates_for("area_totals", "recording_sum", "integer") == ("mean",)
    assert aggregates_for("area_totals", "recording_devices", "integer") == ("mean",)
    assert aggregates_for("area_totals", "disk_fill_pct_max", "number") == ("max",)
    assert fields["disk_fill_pct_max"] == "number"
    assert fields["channels_video_loss_sum"] == "integer"


def test_a_declaration_must_name_a_metric_its_aggregate_can_total() -> None:
    with pytest.raises(ValueError, match="needs a metric of kind"):
        replace(WIFI, area_metrics=(AreaMetric(key="trap", aggregate="sum"),))
    with pytest.raises(ValueError, match="needs a metric of kind"):
        replace(CCTV, area_metrics=(AreaMetric(key="frozen", aggregate="max"),))
    twice = (AreaMetric(key="clients", aggregate="sum"),) * 2
    with pytest.raises(ValueError, match="twice"):
        replace(WIFI, area_metrics=twice)


def test_a_field_two_families_would_type_differently_is_left_out() -> None:
    # Another family whose "clients" is a float: area_totals' clients_sum stays an integer.
    floats = tuple(replace(m, type="float") for m in WIFI.metrics if m.key == "clients")
    other = replace(
        WIFI,
        name="zzz",
        metrics=floats,
        device_types=(),
        area_metrics=(AreaMetric(key="clients", aggregate="sum"),),
    )
    assert area_fields([WIFI, other])["clients_sum"] == "integer"
    assert AreaTotals([WIFI, other]).families == frozenset({"wifi"})


def test_extreme_values_never_break_a_line() -> None:
    areas = AreaTotals([WIFI])
    areas.record(_ap(1), {"clients": 2**63 - 1, "rx_bps": 1.7e308, "reboots": -(2**63)}, 0)
    areas.record(_ap(2), {"clients": 2**63 - 1, "rx_bps": 1.7e308, "reboots": 2**63 - 1}, 0)
    # The float sum overflowed: left out; the integer one is clamped to int64.
    assert areas.lines("hub", 1) == [
        "area_totals,family=wifi,hub=hub,kecamatan=Tembalang clients_devices=2i,"
        f"clients_sum={2**63 - 1}i,reboots_devices=2i,reboots_increase=0i,rx_bps_devices=2i 1"
    ]


# -- property: any reading sequence, against a reference computed step by step ------------

# Values the decoder lets through (int64, finite floats), kept where float sums are exact
# enough to compare, and text, which a sum skips.
_NUMBER = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(-1e12, 1e12, allow_nan=False), st.text(max_size=3)
)
_FLAG = st.one_of(st.booleans(), st.text(max_size=3))
_WIFI_METRICS = st.fixed_dictionaries(
    {}, optional={"clients": _NUMBER, "rx_bps": _NUMBER, "reboots": _NUMBER, "up": _FLAG}
)
_CCTV_METRICS = st.fixed_dictionaries(
    {}, optional={"fps_ratio": _NUMBER, "frozen": _FLAG, "zone_people": _NUMBER}
)
_KECAMATAN = st.sampled_from(["Tembalang", "Genuk", ""])
_READING = st.one_of(
    st.tuples(
        st.builds(_ap, st.integers(0, 5), _KECAMATAN, st.sampled_from([1.0, 60.0])), _WIFI_METRICS
    ),
    st.tuples(st.builds(_camera, st.integers(0, 5), _KECAMATAN), _CCTV_METRICS),
)
# (reading or None for a write, milliseconds forward)
_STEPS = st.lists(st.tuples(st.one_of(st.none(), _READING), st.integers(0, 400_000)), max_size=50)
_PLANS: dict[str, tuple[tuple[str, str], ...]] = {
    family.name: tuple((a.key, a.aggregate) for a in family.area_metrics) for family in (WIFI, CCTV)
}


class _Reference:
    """The totals as the docstring defines them, one device and one metric at a time."""

    def __init__(self) -> None:
        self.records: dict[str, DeviceRecord] = {}
        self.last: dict[tuple[str, str], tuple[object, int]] = {}
        self.growth: dict[tuple[str, str], object] = {}
        self.peak: dict[tuple[str, str], object] = {}

    def record(self, device: DeviceRecord, metrics: dict[str, object], now: int) -> None:
        self.records[device.device_id] = device
        for key, aggregate in _PLANS[device.family]:
            value = metrics.get(key)
            if value is None or isinstance(value, str):
                continue
            slot = (device.device_id, key)
            if aggregate == "max":
                best = self.peak.get(slot)
                self.peak[slot] = value if best is None or value > best else best  # type: ignore[operator]
                continue
            if aggregate == "increase":
                before = self.last.get(slot)
                grown = self.growth.get(slot, 0)
                if before is not None and value > before[0]:  # type: ignore[operator]
                    grown = grown + (value - before[0])  # type: ignore[operator]
                self.growth[slot] = grown
            self.last[slot] = (value, now)

    def totals(self, now: int) -> dict[tuple[str, str], dict[str, object]]:
        out: dict[tuple[str, str], dict[str, object]] = {}
        for device_id, record in self.records.items():
            fields = out.setdefault((record.family, record.tags.get("kecamatan") or ""), {})
            limit = 3.0 * record.expected_interval_s * 1000
            for key, aggregate in _PLANS[record.family]:
                slot = (device_id, key)
                if aggregate == "max":
                    if slot in self.peak:
                        name = f"{key}_max"
                        best = fields.get(name)
                        value = self.peak[slot]
                        fields[name] = value if best is None or value > best else best  # type: ignore[operator]
                    continue
                if slot not in self.last:
                    continue
                value, at = self.last[slot]
                fresh = now - at <= limit
                suffix = "_sum" if aggregate == "sum" else "_increase"
                share = self.growth.pop(slot, 0) if aggregate == "increase" else value
                if fresh or (aggregate == "increase" and share):
                    fields[key + suffix] = fields.get(key + suffix, 0) + share  # type: ignore[operator]
                if fresh:
                    fields[f"{key}_devices"] = fields.get(f"{key}_devices", 0) + 1  # type: ignore[operator]
        self.peak.clear()
        return {area: fields for area, fields in out.items() if fields}


@settings(max_examples=300, deadline=None)
@given(_STEPS)
def test_any_readings_total_as_the_reference_and_never_crash(
    steps: list[tuple[tuple[DeviceRecord, dict[str, object]] | None, int]],
) -> None:
    areas = AreaTotals([WIFI, CCTV], offline_factor=3.0)
    reference = _Reference()
    now = 1_000_000
    for reading, forward in [*steps, (None, 0)]:
        now += forward
        if reading is not None:
            areas.record(reading[0], reading[1], now)
            reference.record(reading[0], reading[1], now)
            continue
        expected = reference.totals(now)
        got = {(t.family, t.kecamatan): dict(t.fields) for t in areas.totals(now)}
        assert got.keys() == expected.keys()
        for area, fields in expected.items():
            assert got[area] == pytest.approx(fields, rel=1e-9, abs=1e-9), area
        # The lines never fail either (integers beyond int64 are clamped).
        for line in areas.lines("hub", now):
            assert line.startswith("area_totals,family=")


def test_hub_writes_the_totals_of_the_readings_it_takes(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    schema = WIFI.metric_schema()
    aps = [
        device(
            f"{unique_id}-ap{n}",
            family="wifi",
            device_type="mikrotik_ap",
            tags={"site": f"ap{n}", "kecamatan": "Genuk"},
            metrics=schema,
        )
        for n in range(3)
    ]
    hubs.devices(*aps)
    service = hubs.start(fleet_online_interval_s=1.0)
    publisher = mqtt_client()
    for n, ap in enumerate(aps):
        metrics = {"clients": 10 * (n + 1), "rx_bps": 1000.0, "reboots": 4, "up": True}
        publisher.publish(f"kota/v1/dev/{ap.device_id}/telemetry", payload(metrics))
    publisher.publish(f"kota/v1/dev/{aps[0].device_id}/telemetry", payload({"reboots": 6}))

    def newest() -> dict[str, float]:
        rows = running_stack.influx.rows(
            'SELECT last("clients_sum") AS "clients", last("clients_devices") AS "aps", '
            'last("rx_bps_sum") AS "rx", sum("reboots_increase") AS "reboots" '
            f'FROM "area_totals" WHERE "hub" = \'{service.client_id}\' '
            "AND \"family\" = 'wifi' AND \"kecamatan\" = 'Genuk'",
            database=influx_db,
        )
        return {k: float(v) for k, v in rows[0].items() if k != "time"} if rows else {}

    expected = {"clients": 60.0, "aps": 3.0, "rx": 3000.0, "reboots": 2.0}
    wait_until(lambda: newest() == expected, what="the APs' totals")
    assert service.stats.housekeeping_errors["area_totals"] == 0
