"""The Modbus driver for flood gauges, rain gauges and pump stations.

Modbus TCP, or Modbus RTU framed over TCP for RS-485 gateways, with pymodbus. Each
device keeps its own connection so a dead device only ever costs its own timeout.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType

from drivers.flood.metrics import FLOOD_METRICS
from drivers.flood.rain_counter import TipCounter
from drivers.flood.register_map import (
    USER_DEFINED,
    RegisterField,
    RegisterMap,
    RegisterMapError,
    RegisterValues,
    WordOrder,
    decode_field,
    load_register_map,
    parse_register_map,
    plan_requests,
)
from drivers.framework import DeviceSpec, DriverConfig, DriverError, MetricValue, Reading, utc_now
from drivers.patient_timeout import patient_timeout

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
    11: "gateway target device failed to respond",
}
METRIC_TYPES = {m.key: m.type for m in FLOOD_METRICS}


class FloodGaugeConfig(DriverConfig):
    """A Modbus flood device's config (the registry's ``driver_config`` plus its address)."""

    address: str = Field(description="host:port of the device or its RS-485 gateway")
    framing: Literal["tcp", "rtu"] = Field(
        default="tcp", description="tcp: Modbus TCP; rtu: Modbus RTU framed over TCP"
    )
    unit_id: int | None = Field(default=None, ge=0, le=247, description="Unset: the map's default")
    word_order: WordOrder | None = Field(default=None, description="Unset: the map's default")
    mm_per_tip: float | None = Field(default=None, gt=0, le=10)
    max_tips_per_reading: int = Field(default=5000, gt=0)
    wake_delay_s: float = Field(
        default=0.0,
        ge=0,
        le=30,
        description="Sleeping sensors: read, wait this long, read again and keep the second.",
    )
    registers: tuple[RegisterField, ...] | None = Field(
        default=None, description="The user-defined map (device_type user_defined)"
    )

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port")
        return value

    @model_validator(mode="after")
    def _timeout_covers_wake(self) -> FloodGaugeConfig:
        if self.wake_delay_s >= self.timeout_s:
            raise ValueError("wake_delay_s must be shorter than timeout_s")
        return self

    @property
    def host(self) -> str:
        """Host part of the address."""
        return self.address.rpartition(":")[0]

    @property
    def port(self) -> int:
        """Port part of the address."""
        return int(self.address.rpartition(":")[2])


def register_map_for(spec: DeviceSpec, config: FloodGaugeConfig) -> RegisterMap:
    """The device's map: the shipped model file, or the user-defined map in its config."""
    try:
        if spec.device_type == USER_DEFINED:
            if not config.registers:
                raise RegisterMapError("device_type user_defined needs driver_config.registers")
            return parse_register_map(
                {"model": USER_DEFINED, "fields": [f.model_dump() for f in config.registers]},
                where="driver_config.registers",
            )
        return load_register_map(spec.device_type)
    except RegisterMapError as err:
        raise DriverError(spec.device_id, err) from err


class FloodGauge:
    """Polls one Modbus device and decodes its register map into a Reading."""

    def __init__(self, spec: DeviceSpec, config: FloodGaugeConfig) -> None:
        self.device_id = spec.device_id
        self.config = config
        self.register_map = register_map_for(spec, config)
        self.unit_id = (
            config.unit_id if config.unit_id is not None else self.register_map.default_unit_id
        )
        self.word_order: WordOrder = config.word_order or self.register_map.default_word_order
        self.fields = tuple(self._with_overrides(f) for f in self.register_map.fields)
        self.spans = plan_requests(self.fields, self.word_order)
        self.counters = {
            f.metric: TipCounter(max_tips_per_reading=config.max_tips_per_reading)
            for f in self.fields
            if f.type == "counter16"
        }
        self._client: AsyncModbusTcpClient | None = None
        self._seq = 0

    def _with_overrides(self, field: RegisterField) -> RegisterField:
        if field.type == "counter16" and self.config.mm_per_tip is not None:
            return field.model_copy(update={"scale": self.config.mm_per_tip})
        return field

    async def poll(self) -> list[Reading]:
        """Read every span; decode; one Reading. Raises DriverError naming the cause."""
        try:
            values = await self._read_all()
            if self.config.wake_delay_s:
                # The first answer of a sleeping sensor is the value from before it slept.
                await asyncio.sleep(self.config.wake_delay_s)
                values = await self._read_all()
        except DriverError:
            raise
        except (ModbusException, OSError, TimeoutError) as err:
            await self.close()
            raise DriverError(self.device_id, f"{type(err).__name__}: {err}") from err
        except BaseException:
            # Cancelled mid-request (the agent's timeout): the connection's state is unknown.
            await self.close()
            raise
        self._seq += 1
        return [
            Reading(
                device_id=self.device_id, ts=utc_now(), metrics=self.decode(values), seq=self._seq
            )
        ]

    def decode(self, values: RegisterValues) -> dict[str, MetricValue]:
        """Registers to metrics: flags, counters and the family's metric types applied."""
        metrics: dict[str, MetricValue] = {}
        invalid: set[str] = set()
        for field in self.fields:
            value = decode_field(field, values, self.word_order)
            if field.type == "invalid_flag":
                if value:
                    invalid.update(field.invalidates)
                continue
            if field.type == "counter16":
                assert isinstance(value, int)
                tips = self.counters[field.metric].increment(value)
                value = round(tips * field.scale, 6)
            metrics[field.metric] = _as_metric_type(field.metric, value)
        for metric in invalid:
            metrics.pop(metric, None)
        if invalid:
            metrics["sensor_status"] = "invalid"
        return metrics

    async def _read_all(self) -> RegisterValues:
        client = await self._connected()
        values = RegisterValues()
        for span in self.spans:
            read = (
                client.read_holding_registers
                if span.table == "holding"
                else client.read_input_registers
            )
            answer = await read(span.start, count=span.count, device_id=self.unit_id)
            if answer.isError():
                code = getattr(answer, "exception_code", None)
                name = EXCEPTION_NAMES.get(code or -1, "error")
                raise DriverError(
                    self.device_id,
                    f"Modbus exception {code} ({name}) reading {span.table} "
                    f"{span.start}..{span.start + span.count - 1} of unit {self.unit_id}",
                )
            values.add(span, list(answer.registers))
        return values

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        await self.close()
        client = AsyncModbusTcpClient(
            self.config.host,
            port=self.config.port,
            framer=FramerType.RTU if self.config.framing == "rtu" else FramerType.SOCKET,
            timeout=self.config.timeout_s,
            retries=0,
            # The agent owns reconnects and backoff; pymodbus must not retry in the background.
            reconnect_delay=0,
        )
        async with patient_timeout(self.config.timeout_s):
            connected = await client.connect()
        if not connected:
            client.close()
            raise DriverError(self.device_id, f"cannot connect to {self.config.address}")
        self._client = client
        return client

    async def close(self) -> None:
        """Close the connection; the next poll opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _as_metric_type(metric: str, value: float | int | bool | str) -> MetricValue:
    """Keep each metric's type for life (the contract), whatever the register held."""
    kind = METRIC_TYPES.get(metric)
    if kind == "bool":
        return bool(value)
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "int" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return value


def create_flood_gauge(spec: DeviceSpec, config: DriverConfig) -> FloodGauge:
    """The family's factory: a poller for one device."""
    assert isinstance(config, FloodGaugeConfig)
    return FloodGauge(spec, config)


def check_device(spec: DeviceSpec, config: DriverConfig) -> None:
    """Start-up check beyond the schema: the map exists and decodes (no network)."""
    assert isinstance(config, FloodGaugeConfig)
    register_map_for(spec, config)
