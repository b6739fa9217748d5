"""The BLE metric table covers every object the pinned bthome-ble knows, and the hub accepts
what the driver publishes (numbered metrics, events) against the device type's schema."""

from __future__ import annotations

from datetime import UTC, datetime

from bthome_ble.const import MEAS_TYPES
from bthome_ble.event import EventDeviceKeys
from sensor_state_data.description import BaseBinarySensorDescription, BaseSensorDescription

from device_registry.directory import DeviceRecord, SnapshotDirectory
from drivers.ble import FAMILY as BLE
from drivers.ble.bthome import DEVICE_INFO_IDS, BTHomeDecoder
from drivers.ble.metrics import BINARY_KEYS, EVENT_KEYS, MAX_REPEATS, SENSOR_KEYS, numbered
from drivers.contract import epoch_ms
from drivers.framework import Reading
from hub.agent.mqtt_publisher import gateway_topic
from hub.ingest.contract_decoder import Accepted, ContractDecoder, Rejected


def test_every_library_object_has_a_row_of_the_right_type() -> None:
    sensors = {(k.device_class, k.unit): k for k in SENSOR_KEYS}
    binaries = {k.device_class: k for k in BINARY_KEYS}
    events = {k.device_class: k for k in EVENT_KEYS}
    for object_id, meas in MEAS_TYPES.items():
        form = meas.meas_format
        if isinstance(form, BaseSensorDescription):
            unit = form.native_unit_of_measurement
            row = sensors[(str(form.device_class), None if unit is None else str(unit))]
            if row.type == "int":
                # An int row only for objects that can only be whole numbers.
                assert meas.factor == 1, hex(object_id)
        elif isinstance(form, BaseBinarySensorDescription):
            row = binaries[str(form.device_class)]
        elif isinstance(form, EventDeviceKeys):
            row = events[str(form)]
        else:
            assert object_id in DEVICE_INFO_IDS, hex(object_id)
            continue
        for index in range(1, MAX_REPEATS + 1):
            assert BLE.metric(numbered(row.metric, index)).type == row.type


def test_table_sizes_and_the_types_schemas() -> None:
    assert len(MEAS_TYPES) == 95  # bthome-ble 3.25.0's object ids
    keys = {m.key for m in BLE.metrics}
    assert {"temperature_c_2", "temperature_c_4", "button_4", "dimmer_2_steps"} <= keys
    thermometer = BLE.device_type("thermometer")
    assert set(thermometer.metrics) == {
        "temperature_c",
        "humidity_pct",
        "battery_v",
        "battery_pct",
        "water_leak",
        "rssi_dbm",
    }
    assert set(BLE.device_type("bthome_sensor").metrics) == keys


def hub_for(device_type: str) -> tuple[ContractDecoder, DeviceRecord]:
    spec = BLE.device_type(device_type)
    record = DeviceRecord(
        device_id="ble-1",
        family="ble",
        device_type=spec.name,
        gateway_id="gw1",
        metrics=BLE.metric_schema(spec.metrics),
    )
    return ContractDecoder(SnapshotDirectory([record])), record


def published(decoder: ContractDecoder, reading: Reading) -> Accepted | Rejected:
    topic = gateway_topic("gw1", reading.device_id, reading.kind)
    return decoder.decode(topic, reading.payload(), epoch_ms(reading.ts))


def test_the_hub_accepts_numbered_metrics_and_events_of_a_bthome_sensor() -> None:
    decoder, _ = hub_for("bthome_sensor")
    ts = datetime.now(UTC)
    bthome = BTHomeDecoder()
    # Three temperatures, two humidities, a battery (bthome-ble's multiple-objects test).
    advert = bthome.decode(
        "A4:C1:38:8D:18:B2", bytes.fromhex("4002ca0902cf0902cf0803b71803b717015d")
    )
    metrics = {**advert.metrics, "rssi_dbm": -60}
    assert {"temperature_c_3", "humidity_pct_2"} <= set(metrics)
    result = published(decoder, Reading(device_id="ble-1", ts=ts, metrics=metrics))
    assert isinstance(result, Accepted), result
    (line,) = result.lines
    assert line.startswith("ble,")
    assert "temperature_c_3=22.55" in line
    assert "battery_pct=93i" in line
    assert "rssi_dbm=-60i" in line
    for hex_data in ("443a003a013a003a04", "443c0203", "403b0102ff"):
        event = BTHomeDecoder().decode("A4:C1:38:8D:18:B2", bytes.fromhex(hex_data)).events
        assert event, hex_data
        result = published(decoder, Reading(device_id="ble-1", ts=ts, metrics=event, kind="event"))
        assert isinstance(result, Accepted), (hex_data, result)
        assert result.lines[0].startswith("ble_event,")


def test_the_hub_refuses_what_a_thermometer_does_not_declare() -> None:
    # The schema check is real: a BTHome metric outside the pvvx type's rows is refused.
    decoder, _ = hub_for("thermometer")
    reading = Reading(device_id="ble-1", ts=datetime.now(UTC), metrics={"temperature_c_2": 1.0})
    result = published(decoder, reading)
    assert isinstance(result, Rejected)
    assert result.reason == "metric_not_in_type"
