"""Agent supervision end to end: one family failing costs that family only.

Real pymodbus server and real Mosquitto; the BLE radio is the FAKE bleak backend (no
machine here has one), made unable to start the way a gateway without an adapter is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bleak.exc import BleakBluetoothNotAvailableError, BleakBluetoothNotAvailableReason

from device_registry.directory import DeviceRecord, SnapshotDirectory, save_device_file
from drivers.ble import FAMILY as BLE
from drivers.ble.ble_scanner import BleSensorScanner
from drivers.ble.bthome import BTHOME_UUID
from drivers.flood import FAMILY as FLOOD
from drivers.framework import DeviceSpec, DriverConfig, DriverFamily
from hub.agent import cli
from hub.agent.agent import Agent, AgentFatalError, poll_task, status_reason, stream_task
from hub.agent.cli import AgentStartError, build_agent, run_agent
from hub.agent.task_supervisor import RestartPolicy
from hub.settings import Settings
from tests.agent.conftest import agent_settings, by_topic, flood_record, running_agent, wait_until
from tests.conftest import MqttClientFactory
from tests.drivers.conftest import StationFactory
from tests.drivers.fake_bleak_backend import FakeBleakScannerBackend

SUPERVISOR_LOG = "hub.agent.task_supervisor"
FAST_RESTARTS = RestartPolicy(first_delay_s=0.1, max_delay_s=0.4, healthy_after_s=0.5)
SENSOR_MAC = "A4:C1:38:00:11:22"


class UnstartableRadio(FakeBleakScannerBackend):
    """FAKE radio whose start fails while ``start_error`` is set (no adapter, powered off)."""

    start_error: ClassVar[Exception | None] = None
    starts: ClassVar[int] = 0

    async def start(self) -> None:
        """Fail like bleak does without an adapter, or start the fake scan."""
        UnstartableRadio.starts += 1
        if UnstartableRadio.start_error is not None:
            raise UnstartableRadio.start_error
        await super().start()


def fake_radio_scanner(devices: Sequence[tuple[DeviceSpec, DriverConfig]]) -> BleSensorScanner:
    """The BLE family's factory, over the fake radio."""
    return BleSensorScanner(devices, backend=UnstartableRadio)


FAMILIES: dict[str, DriverFamily] = {
    "flood": FLOOD,
    "ble": dataclasses.replace(BLE, create_stream=fake_radio_scanner),
}


def ble_record(device_id: str, gateway_id: str) -> DeviceRecord:
    """A BTHome sensor heard by the gateway's scanner, published on every advert."""
    return DeviceRecord(
        device_id=device_id,
        family="ble",
        device_type="bthome_sensor",
        gateway_id=gateway_id,
        expected_interval_s=60.0,
        protocol="ble",
        address=SENSOR_MAC,
        driver_config={"min_interval_s": 0},
    )


@pytest.fixture
def no_adapter() -> Any:
    """The fake radio cannot start until the test clears ``start_error``."""
    UnstartableRadio.starts = 0
    UnstartableRadio.start_error = BleakBluetoothNotAvailableError(
        "No Bluetooth adapters found.", BleakBluetoothNotAvailableReason.NO_BLUETOOTH
    )
    yield UnstartableRadio
    UnstartableRadio.start_error = None


async def test_ble_scanner_that_cannot_start_costs_ble_only(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    modbus_station: StationFactory,
    unique_id: str,
    no_adapter: type[UnstartableRadio],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = f"gw-{unique_id}"
    gauge, sensor = f"{unique_id}-gauge", f"{unique_id}-ble"
    station = await modbus_station()
    station.set_registers(1, 3, [2])
    station.set_int16(1, 4, 125)
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gw}/#")
    records = [flood_record(gauge, gw, station.port), ble_record(sensor, gw)]

    def gauge_readings() -> int:
        return len(by_topic(watcher.messages, f"dev/{gauge}/telemetry"))

    with caplog.at_level(logging.INFO):
        async with running_agent(
            agent_settings(test_settings),
            gw,
            records,
            families=FAMILIES,
            restart_policy=FAST_RESTARTS,
        ) as agent:
            await wait_until(lambda: no_adapter.starts >= 2)
            readings_while_failing = gauge_readings()
            # The scanner keeps failing and restarting while the gauge keeps arriving.
            await wait_until(lambda: no_adapter.starts >= 5)
            await wait_until(lambda: gauge_readings() >= readings_while_failing + 5)
            report = agent.health_report()
            ble_task = report["failing"][stream_task("ble")]
            assert ble_task["state"] in ("running", "backing_off")
            assert ble_task["restarts"] >= 4
            assert "No Bluetooth adapters found" in ble_task["last_error"]
            assert poll_task(gauge) not in report["failing"]
            assert "publisher" not in report["failing"]
            assert report["tasks"] == 3

            no_adapter.start_error = None  # the adapter is plugged in
            await wait_until(lambda: bool(FakeBleakScannerBackend.running))
            FakeBleakScannerBackend.running[-1].advertise(
                SENSOR_MAC, service_data={BTHOME_UUID: bytes.fromhex("4002CA09")}, rssi=-60
            )
            await wait_until(lambda: bool(by_topic(watcher.messages, f"dev/{sensor}/telemetry")))
            await wait_until(lambda: agent.health_report()["failing"] == {})
            restarts = agent.health_report()["restarts"]
            gauge_count = gauge_readings()
            await wait_until(lambda: gauge_readings() > gauge_count)
    assert by_topic(watcher.messages, f"dev/{sensor}/telemetry")[0]["metrics"] == {
        "temperature_c": 25.06,
        "rssi_dbm": -60,
    }
    # The sensor went offline (with the cause) after offline_after_failures restarts, and
    # came back online when first heard.
    statuses = by_topic(watcher.messages, f"dev/{sensor}/status")
    assert [s["online"] for s in statuses] == [False, True]
    assert "No Bluetooth adapters found" in statuses[0]["reason"]
    gauge_statuses = by_topic(watcher.messages, f"dev/{gauge}/status")
    assert [s["online"] for s in gauge_statuses] == [True]
    # Logged once with its cause (traceback), no repeat within the minute, recovery once.
    supervisor_logs = [r for r in caplog.records if r.name == SUPERVISOR_LOG]
    errors = [r for r in supervisor_logs if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], BleakBluetoothNotAvailableError)
    assert stream_task("ble") in errors[0].getMessage()
    assert not [r for r in supervisor_logs if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in supervisor_logs if r.levelno == logging.INFO] == [
        f"task {stream_task('ble')} running healthily again ({restarts} restart(s) in all)"
    ]


async def test_outbox_error_restarts_the_publisher_and_loses_nothing(
    test_settings: Settings,
    mqtt_client: MqttClientFactory,
    modbus_station: StationFactory,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = f"gw-{unique_id}"
    gauge = f"{unique_id}-gauge"
    station = await modbus_station()
    station.set_registers(1, 3, [2])
    station.set_int16(1, 4, 125)
    watcher = mqtt_client()
    watcher.subscribe(f"kota/v1/gw/{gw}/dev/{gauge}/telemetry")
    records = [flood_record(gauge, gw, station.port)]
    async with running_agent(
        agent_settings(test_settings), gw, records, families=FAMILIES, restart_policy=FAST_RESTARTS
    ) as agent:
        await wait_until(lambda: len(watcher.messages) >= 2)
        real_peek = agent.outbox.peek
        failures = 0

        def peek_fails_twice(limit: int) -> Any:
            nonlocal failures
            if failures < 2:
                failures += 1
                raise sqlite3.OperationalError("disk I/O error")
            return real_peek(limit)

        monkeypatch.setattr(agent.outbox, "peek", peek_fails_twice)
        await wait_until(lambda: failures == 2)
        await wait_until(lambda: agent.supervisor.health()["publisher"].restarts == 2)
        count = len(watcher.messages)
        await wait_until(lambda: len(watcher.messages) >= count + 3)
        queued_after = len(agent.outbox)
        readings = agent.stats.readings
    assert agent.supervisor.health() == {}  # all stopped
    assert poll_task(gauge) not in agent.health_report()["failing"]
    # Every reading made while the publisher was down reached the broker (in order).
    await wait_until(lambda: len(watcher.messages) >= readings - queued_after)
    seqs = [p["seq"] for p in by_topic(watcher.messages, "/telemetry")]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) >= readings - queued_after


def damaged_database_error(tmp_path: Path) -> sqlite3.DatabaseError:
    """A real SQLite 'file is not a database' error, as a damaged outbox raises it."""
    bad = tmp_path / "not-a-database.sqlite3"
    bad.write_bytes(b"this is not SQLite" * 100)
    connection = sqlite3.connect(bad)
    try:
        connection.execute("SELECT * FROM sqlite_master")
    except sqlite3.DatabaseError as err:
        return err
    finally:
        connection.close()
    raise AssertionError("SQLite read a file of garbage")


async def test_damaged_outbox_stops_the_agent_in_order_and_says_why(
    test_settings: Settings,
    modbus_station: StationFactory,
    unique_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = f"gw-{unique_id}"
    station = await modbus_station()
    records = [flood_record(f"{unique_id}-gauge", gw, station.port)]
    error = damaged_database_error(tmp_path)
    agent = Agent(
        settings=agent_settings(test_settings),
        gateway_id=gw,
        directory=SnapshotDirectory(records),
        families=FAMILIES,
        restart_policy=FAST_RESTARTS,
    )
    before = asyncio.all_tasks()
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    await wait_until(lambda: agent.stats.polls >= 2)

    def damaged(limit: int) -> Any:
        raise error

    monkeypatch.setattr(agent.outbox, "peek", damaged)
    agent.outbox.append("kota/v1/x", b"{}")  # a message to send, so peek is called
    with pytest.raises(AgentFatalError) as caught:
        await asyncio.wait_for(run, 10)
    assert not stop.is_set()  # the agent stopped by itself
    message = str(caught.value)
    assert f"agent {gw} stopped: task publisher failed and must not be restarted" in message
    assert "is damaged" in message
    assert "file is not a database" in message
    assert agent.supervisor.health() == {}
    assert asyncio.all_tasks() - before == set()


def test_damaged_outbox_at_start_names_the_file(
    test_settings: Settings, tmp_path: Path, unique_id: str
) -> None:
    gw = f"gw-{unique_id}"
    devices = tmp_path / "devices.json"
    save_device_file(devices, [])
    buffer_dir = tmp_path / "outbox"
    buffer_dir.mkdir()
    (buffer_dir / f"outbox-{gw}.sqlite3").write_bytes(b"this is not SQLite" * 100)
    settings = agent_settings(test_settings, devices_file=devices, buffer_dir=buffer_dir)
    with pytest.raises(AgentStartError, match=rf"outbox .*outbox-{gw}\.sqlite3.*not a database"):
        build_agent(settings, gw)


def test_fatal_error_exits_non_zero_with_the_reason(
    test_settings: Settings,
    tmp_path: Path,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    devices = tmp_path / "devices.json"
    save_device_file(devices, [])
    settings = agent_settings(test_settings, devices_file=devices)

    async def fails_fatally(agent: Agent) -> None:
        raise AgentFatalError("agent gw stopped: task publisher failed and must not be restarted")

    monkeypatch.setattr(cli, "run_until_signal", fails_fatally)
    with pytest.raises(SystemExit) as exited:
        run_agent(settings, f"gw-{unique_id}")
    assert exited.value.code == 1
    assert "task publisher failed and must not be restarted" in caplog.text


def test_status_reason_is_one_storable_line() -> None:
    # A failure's text becomes a device's status reason: the hub refuses control
    # characters and reasons over 256 characters, so the device would never go offline.
    assert status_reason("Traceback:\n  line 1\r\n\tboom\ud800") == "Traceback: line 1 boom"
    long = status_reason("x" * 1000)
    assert len(long) == 200
    assert long.endswith("...")
