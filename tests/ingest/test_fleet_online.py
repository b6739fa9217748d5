"""fleet_online: devices online per family and kecamatan, counted from the status tracker.

A property test holds the counts against the tracker's own states; a hub on the real
broker and InfluxDB writes the counts and changes them as devices go online and offline.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from device_registry.directory import DeviceRecord
from hub.ingest.device_status import DeviceStatusTracker, FleetCount
from hub.ingest.self_metrics import HubMeasurement
from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, payload, wait_until

FAMILIES = ("flood", "wifi", "cctv")
KECAMATAN = ("Tembalang", "Genuk", "")
TEAMS = ("dishub", "rt-community", "")


def _record(
    number: int, family: str, kecamatan: str, interval_s: float, team: str = ""
) -> DeviceRecord:
    tags = {"site": f"site-{number}", "kecamatan": kecamatan} if kecamatan else {}
    if team:
        tags["team"] = team
    return DeviceRecord(
        device_id=f"dev-{number}",
        family=family,
        device_type="t",
        expected_interval_s=interval_s,
        tags=tags,
    )


_RECORDS = st.builds(
    _record,
    st.integers(0, 11),
    st.sampled_from(FAMILIES),
    st.sampled_from(KECAMATAN),
    st.sampled_from([0.01, 1.0, 60.0]),
    st.sampled_from(TEAMS),
)
# (operation, device, online, milliseconds forward): what the hub's threads do to it.
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["seen", "reported", "restored", "silence"]),
        _RECORDS,
        st.booleans(),
        st.integers(0, 5_000),
    ),
    max_size=60,
)


def _expected(tracker: DeviceStatusTracker, records: dict[str, DeviceRecord]) -> list[FleetCount]:
    """The counts from the tracker's state of each device, one device at a time."""
    online: Counter[tuple[str, str, str]] = Counter()
    known: Counter[tuple[str, str, str]] = Counter()
    for device_id, record in records.items():
        state = tracker.online(device_id)
        if state is None or not record.accepts_data:
            continue
        key = (record.family, record.tags.get("kecamatan", ""), record.tags.get("team", ""))
        known[key] += 1
        online[key] += state
    return [FleetCount(*key[:2], online[key], known[key], key[2]) for key in sorted(known)]


@settings(max_examples=300, deadline=None)
@given(_STEPS, st.sets(st.integers(0, 11)), st.sets(st.integers(0, 11)))
def test_counts_match_the_tracker_states(
    steps: list[tuple[str, DeviceRecord, bool, int]], retired: set[int], moved: set[int]
) -> None:
    tracker = DeviceStatusTracker(offline_factor=3.0)
    last: dict[str, DeviceRecord] = {}  # each device's record as the tracker last got it
    now = 1_000_000
    for operation, record, online, forward in steps:
        now += forward
        if operation == "seen":
            tracker.seen(record, now)
            last[record.device_id] = record
        elif operation == "reported":
            tracker.reported(record, online, None, now, now)
            last[record.device_id] = record
        elif operation == "restored":
            if tracker.restore(record, online, now - forward, now):
                last.setdefault(record.device_id, record)
        else:
            tracker.check_silence(now)
    assert tracker.fleet_counts() == _expected(tracker, last)

    # The registry as it is now: some devices retired, some moved, one removed.
    registry: dict[str, DeviceRecord] = {}
    for device_id, record in last.items():
        number = int(device_id.split("-")[1])
        if number in retired:
            record = replace(record, state="retired")
        if number in moved:
            record = replace(record, tags={"kecamatan": "Candisari"})
        if number != 11:
            registry[device_id] = record
    assert tracker.fleet_counts(registry.get) == _expected(tracker, registry)
    counts = tracker.fleet_counts(registry.get)
    assert sum(c.devices for c in counts) == sum(
        1 for r in registry.values() if r.accepts_data and tracker.online(r.device_id) is not None
    )


def test_lines_are_integer_points_with_the_hub_tag() -> None:
    lines = HubMeasurement("hub-a").fleet_lines(
        [FleetCount("cctv", "Semarang Tengah", 3, 5, "rt"), FleetCount("wifi", "", 0, 1)], 1_000
    )
    assert lines == [
        "fleet_online,family=cctv,hub=hub-a,kecamatan=Semarang\\ Tengah,team=rt "
        "online=3i,devices=5i 1000",
        # No kecamatan in the registry: the tag is left out, as on the device_status point.
        "fleet_online,family=wifi,hub=hub-a online=0i,devices=1i 1000",
    ]


def _fleet(stack: RunningStack, database: str, hub: str) -> dict[tuple[str, str], tuple[int, int]]:
    """Each (family, kecamatan)'s newest counts the hub wrote."""
    rows = stack.influx.rows(
        'SELECT last("online") AS "online", last("devices") AS "devices" FROM "fleet_online" '
        f'WHERE "hub" = \'{hub}\' GROUP BY "family", "kecamatan"',
        database=database,
    )
    return {
        (str(r["family"]), str(r["kecamatan"])): (int(r["online"]), int(r["devices"])) for r in rows
    }


def test_hub_writes_counts_that_follow_devices_going_online_and_offline(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    def gauge(name: str, kecamatan: str, **extra: object) -> DeviceRecord:
        return device(f"{unique_id}-{name}", tags={"site": name, "kecamatan": kecamatan}, **extra)

    records = [
        gauge("g1", "Tembalang"),
        gauge("g2", "Tembalang"),
        gauge("g3", "Genuk"),
        gauge("ap1", "Genuk", family="wifi"),
        gauge("quiet", "Genuk"),  # registered but never heard: not counted
    ]
    hubs.devices(*records)
    service = hubs.start(fleet_online_interval_s=1.0)
    hub = service.client_id
    publisher = mqtt_client()
    for record in records[:4]:
        publisher.publish(f"kota/v1/dev/{record.device_id}/telemetry", payload({"x": 1.0}))
    everyone = {
        ("flood", "Tembalang"): (2, 2),
        ("flood", "Genuk"): (1, 1),
        ("wifi", "Genuk"): (1, 1),
    }
    wait_until(lambda: _fleet(running_stack, influx_db, hub) == everyone, what="all online")

    # The fleet's tags are the device_status points' own.
    status_groups = {
        (str(r["family"]), str(r["kecamatan"]))
        for r in running_stack.influx.rows(
            'SELECT last("online") AS "online" FROM "device_status" GROUP BY "family", "kecamatan"',
            database=influx_db,
        )
    }
    assert status_groups == set(everyone)

    publisher.publish(f"kota/v1/dev/{unique_id}-g2/status", "offline")
    publisher.publish(f"kota/v1/dev/{unique_id}-ap1/status", "offline")
    one_down = {**everyone, ("flood", "Tembalang"): (1, 2), ("wifi", "Genuk"): (0, 1)}
    wait_until(lambda: _fleet(running_stack, influx_db, hub) == one_down, what="two offline")

    publisher.publish(f"kota/v1/dev/{unique_id}-ap1/telemetry", payload({"x": 2.0}))
    back = {**one_down, ("wifi", "Genuk"): (1, 1)}
    wait_until(lambda: _fleet(running_stack, influx_db, hub) == back, what="back online")

    # Retired in the registry: out of the counts within a refresh and an interval.
    hubs.devices(*records[:2], replace(records[2], state="retired"), *records[3:])

    def groups_written_last() -> set[tuple[str, str]]:
        newest = running_stack.influx.rows(
            'SELECT last("devices") AS "devices" FROM "fleet_online" '
            f'WHERE "hub" = \'{hub}\' GROUP BY "family", "kecamatan"',
            database=influx_db,
        )
        latest = max(int(r["time"]) for r in newest)
        return {(str(r["family"]), str(r["kecamatan"])) for r in newest if r["time"] == latest}

    wait_until(
        lambda: groups_written_last() == {("flood", "Tembalang"), ("wifi", "Genuk")},
        what="the retired gauge's group no longer written",
    )
    assert service.stats.housekeeping_errors["fleet_online"] == 0
