"""What the agent publishes is the contract's, and the hub accepts it against the type schema."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from device_registry.directory import DeviceRecord, SnapshotDirectory
from drivers.contract import epoch_ms, parse_status
from drivers.framework import Reading, discover_families
from hub.agent.mqtt_publisher import agent_status_topic, gateway_topic, status_payload
from hub.ingest.contract_decoder import Accepted, ContractDecoder


def test_status_messages_carry_epoch_ms_and_parse_back() -> None:
    before = time.time_ns() // 1_000_000
    body = json.loads(status_payload("offline", "agent stopped"))
    assert set(body) == {"ts", "online", "reason"}
    assert isinstance(body["ts"], int)
    assert before <= body["ts"] <= time.time_ns() // 1_000_000
    parsed = parse_status(status_payload("online"))
    assert (parsed.online, parsed.reason) == (True, None)
    assert agent_status_topic("gw1") == "kota/v1/gw/gw1/status"


def test_a_pump_station_reading_is_accepted_by_the_hub_with_its_types_schema() -> None:
    flood = discover_families()["flood"]
    plc = flood.device_type("pump_station_plc")
    record = DeviceRecord(
        device_id="plc-1",
        family="flood",
        device_type=plc.name,
        gateway_id="gw1",
        metrics=flood.metric_schema(plc.metrics),
    )
    decoder = ContractDecoder(SnapshotDirectory([record]))
    ts = datetime.now(UTC)
    reading = Reading(
        device_id="plc-1",
        ts=ts,
        seq=3,
        metrics={"pump_on": True, "pumps_running": 2, "basin_level_m": 1.5, "sensor_status": "ok"},
    )
    result = decoder.decode(
        gateway_topic("gw1", "plc-1", "telemetry"), reading.payload(), epoch_ms(ts)
    )
    assert isinstance(result, Accepted), result
    assert result.time_ms == epoch_ms(ts)
    (line,) = result.lines
    fields = line.split(" ")[1]
    # The count stays an integer (2i), the level a float: the family's table says so.
    assert fields == 'pump_on=true,pumps_running=2i,basin_level_m=1.5,sensor_status="ok"'
