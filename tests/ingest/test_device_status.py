"""Device online/offline: retained status, Last Will, silence; points and events."""

from __future__ import annotations

import threading
import time

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from hub.ingest import StatusChange
from hub.ingest.device_status import DeviceStatusTracker
from tests.conftest import MqttClientFactory, RunningStack, free_port
from tests.ingest.conftest import HubFactory, device, level_points, payload, wait_until


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _status_rows(stack: RunningStack, database: str, device_id: str) -> list[tuple[float, str]]:
    rows = stack.influx.rows(
        f"SELECT online, reason FROM device_status WHERE device_id = '{device_id}'",
        database=database,
    )
    return [(float(r["online"]), str(r["reason"])) for r in rows]


def test_retained_status_and_last_will(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    known, gauge = f"{unique_id}-known", f"{unique_id}-g1"
    hubs.devices(device(known), device(gauge))
    admin = mqtt_client()
    # Retained before the hub starts: the hub learns it when it subscribes.
    admin.publish(f"kota/v1/dev/{known}/status", "online", retain=True)
    service = hubs.start()
    events: list[StatusChange] = []
    service.status.subscribe(events.append)
    wait_until(lambda: service.status.online(known) is True, what="retained online")

    # A device that says it is online and has a Last Will saying offline.
    dev = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{unique_id}-device",
        protocol=mqtt.MQTTv5,
    )
    dev.username_pw_set(running_stack.settings.mqtt.username, running_stack.mqtt_password)
    dev.will_set(
        f"kota/v1/dev/{gauge}/status",
        '{"online": false, "reason": "connection lost"}',
        qos=1,
        retain=True,
    )
    connected = threading.Event()
    dev.on_connect = lambda *_args: connected.set()
    dev.connect(running_stack.mqtt_host, running_stack.mqtt_port, keepalive=30)
    dev.loop_start()
    assert connected.wait(10)
    dev.publish(f"kota/v1/dev/{gauge}/status", "online", qos=1, retain=True).wait_for_publish(10)
    wait_until(lambda: service.status.online(gauge) is True, what="device online")
    # Status points are stamped with the receive time: a Last Will arriving within the
    # same millisecond would overwrite the online point. Let the online point land first.
    wait_until(
        lambda: _status_rows(running_stack, influx_db, gauge) == [(1.0, "status online")],
        what="the online point",
    )
    # "Disconnect with Will Message" (reason 4): the broker publishes the will, as on a crash.
    dev.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
    dev.loop_stop()
    wait_until(lambda: service.status.online(gauge) is False, what="last will")
    # Clear the retained messages this test left on the shared broker.
    admin.publish(f"kota/v1/dev/{known}/status", b"", retain=True)
    admin.publish(f"kota/v1/dev/{gauge}/status", b"", retain=True)

    # The retained status of `known` may arrive before or after subscribe(): only `gauge`.
    assert [(e.online, e.reason) for e in events if e.device_id == gauge] == [
        (True, "status online"),
        (False, "connection lost"),
    ]
    wait_until(
        lambda: (
            _status_rows(running_stack, influx_db, gauge)
            == [(1.0, "status online"), (0.0, "connection lost")]
        ),
        what="device_status points",
    )
    assert _status_rows(running_stack, influx_db, known) == [(1.0, "status online")]
    assert service.stats.deadletters.total() == 0  # clearing a retained status is no error
    assert service.status.online(gauge) is False
    row = running_stack.influx.rows(
        f"SELECT * FROM device_status WHERE device_id = '{gauge}'", database=influx_db
    )[0]
    assert row["site"] == "Kali Banger"


def test_silence_marks_offline_and_data_brings_back(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge, expected_interval_s=0.5))
    service = hubs.start(offline_factor=3.0)
    events: list[StatusChange] = []
    unsubscribe = service.status.subscribe(events.append)
    publisher = mqtt_client()
    topic = f"kota/v1/dev/{gauge}/telemetry"
    publisher.publish(topic, payload({"level_m": 1.0}))
    wait_until(lambda: service.status.online(gauge) is True, what="online from data")
    started = time.monotonic()
    wait_until(lambda: service.status.online(gauge) is False, what="offline from silence")
    assert time.monotonic() - started >= 1.0  # not before 3 x 0.5 s of silence
    publisher.publish(topic, payload({"level_m": 1.1}))
    wait_until(lambda: service.status.online(gauge) is True, what="back online")
    unsubscribe()
    assert [(e.online, e.reason) for e in events] == [
        (True, "data"),
        (False, "silent"),
        (True, "data"),
    ]
    wait_until(
        lambda: (
            _status_rows(running_stack, influx_db, gauge)
            == [(1.0, "data"), (0.0, "silent"), (1.0, "data")]
        ),
        what="device_status points",
    )


def test_silence_check_spares_a_device_heard_meanwhile() -> None:
    tracker = DeviceStatusTracker()
    record = device("g1")  # expected every 60 s: silent after 180 s
    assert tracker.seen(record, 0) is not None
    assert tracker.seen(record, 10_000) is None
    assert [c.online for c in tracker.check_silence(150_000)] == []
    # check_silence saw it quiet since 20 s, then data came (seen takes no lock) before
    # the change was made: the change must not happen. (Calls the step directly: the
    # interleaving cannot be produced reliably from outside.)
    tracker.seen(record, 199_500)
    assert tracker._set(record, False, "silent", 200_000, None, 20_000) is None
    assert tracker.online("g1") is True
    assert [(c.online, c.reason) for c in tracker.check_silence(400_000)] == [(False, "silent")]
    assert tracker.seen(record, 400_100) is not None
    assert tracker.online("g1") is True


def test_restart_is_not_a_status_change(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    steady, dropped = f"{unique_id}-steady", f"{unique_id}-dropped"
    hubs.devices(device(steady), device(dropped))
    publisher = mqtt_client()
    first = hubs.start()
    for gauge in (steady, dropped):
        publisher.publish(f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 1.0}))
    # A change in the same millisecond as the last would overwrite its point: the
    # online points land first (as in test_retained_status_and_last_will).
    wait_until(
        lambda: _status_rows(running_stack, influx_db, dropped) == [(1.0, "data")],
        what="dropped online",
    )
    publisher.publish(f"kota/v1/dev/{dropped}/status", '{"online": false, "reason": "bye"}')
    wait_until(
        lambda: _status_rows(running_stack, influx_db, dropped) == [(1.0, "data"), (0.0, "bye")],
        what="dropped's two points",
    )
    wait_until(lambda: _status_rows(running_stack, influx_db, steady) == [(1.0, "data")])
    first.stop()

    second = hubs.start()
    events: list[StatusChange] = []
    second.status.subscribe(events.append)
    # Known before any message: steady was online, dropped offline.
    assert (second.status.online(steady), second.status.online(dropped)) == (True, False)
    for gauge in (steady, dropped):
        publisher.publish(f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 2.0}))
    wait_until(lambda: level_points(running_stack, influx_db) == 4, what="the new readings")
    wait_until(lambda: len(events) == 1, what="dropped coming back")
    assert [(e.device_id, e.online) for e in events] == [(dropped, True)]
    assert _status_rows(running_stack, influx_db, steady) == [(1.0, "data")]
    wait_until(
        lambda: (
            _status_rows(running_stack, influx_db, dropped)
            == [(1.0, "data"), (0.0, "bye"), (1.0, "data")]
        ),
        what="dropped's third point",
    )


def test_status_points_replayed_from_the_wal_win(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    gauge = f"{unique_id}-g1"
    hubs.devices(device(gauge))
    # An older offline point already in InfluxDB.
    resp = httpx.post(
        f"{running_stack.settings.influx.url}/write",
        params={"db": influx_db, "precision": "ms"},
        content=f'device_status,device_id={gauge} online=0.0,reason="old" {_now_ms() - 60_000}',
    )
    assert resp.status_code == 204
    # InfluxDB unreachable: the online point stays in the WAL.
    dead = f"http://127.0.0.1:{free_port()}"
    first = hubs.start(influx={"url": dead, "timeout_s": 1.0})
    mqtt_client().publish(f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 1.0}))
    wait_until(lambda: first.stats.messages_acked == 1, what="the reading in the WAL")
    first.stop(drain_timeout_s=0.5)

    second = hubs.start()
    wait_until(lambda: level_points(running_stack, influx_db) == 1, what="the replayed reading")
    wait_until(lambda: second.status.online(gauge) is True, what="status from the WAL")
    assert [r for _, r in _status_rows(running_stack, influx_db, gauge)] == ["old", "data"]
    events: list[StatusChange] = []
    second.status.subscribe(events.append)
    mqtt_client().publish(f"kota/v1/dev/{gauge}/telemetry", payload({"level_m": 2.0}))
    wait_until(lambda: level_points(running_stack, influx_db) == 2, what="the new reading")
    assert events == []
    assert len(_status_rows(running_stack, influx_db, gauge)) == 2
