"""Register maps as data: one TOML file per model, or a user-defined map in the device config.

A map lists fields; each field reads one or two registers and turns them into one metric.
The decoder is pure (registers in, metrics out) so it is tested without a network; the
driver groups the fields' registers into as few Modbus requests as it can.
"""

from __future__ import annotations

import struct
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
FieldType = Literal[
    "float32", "int16", "uint16", "uint32", "bit", "bit_count", "counter16", "enum", "invalid_flag"
]
Table = Literal["holding", "input"]
MAPS_DIR = Path(__file__).with_name("register_maps")
USER_DEFINED = "user_defined"
WIDTH = {"float32": 2, "uint32": 2}


class RegisterMapError(Exception):
    """A register map file or a user-defined map is invalid."""


class RegisterField(BaseModel):
    """One metric read from one or two registers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    type: FieldType
    address: int = Field(ge=0, le=65535)
    table: Table = "holding"
    # Devices such as the VEGAPULS C 21 expose the same float at one address per byte order.
    address_by_word_order: dict[WordOrder, int] | None = None
    word_order: WordOrder | None = Field(
        default=None, description="Fixed order; unset: the device config's word_order."
    )
    scale: float = 1.0
    offset: float = 0.0
    decimals_address: int | None = Field(default=None, ge=0, le=65535)
    bit: int | None = Field(default=None, ge=0, le=15)
    mask: int = Field(default=0xFFFF, ge=0, le=0xFFFF)
    states: dict[int, str] | None = None
    invalidates: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check_type_fields(self) -> RegisterField:
        if self.type in ("bit", "invalid_flag") and self.bit is None:
            raise ValueError(f"field {self.metric}: type {self.type} needs 'bit'")
        if self.type == "enum" and not self.states:
            raise ValueError(f"field {self.metric}: type enum needs 'states'")
        if self.type == "invalid_flag" and not self.invalidates:
            raise ValueError(f"field {self.metric}: type invalid_flag needs 'invalidates'")
        return self

    def resolved_address(self, word_order: WordOrder) -> int:
        """The register to read for the device's word order."""
        if self.address_by_word_order and word_order in self.address_by_word_order:
            return self.address_by_word_order[word_order]
        return self.address

    @property
    def width(self) -> int:
        """Registers the value occupies."""
        return WIDTH.get(self.type, 1)


class RegisterMap(BaseModel):
    """A model's register map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    description: str = ""
    default_unit_id: int = Field(default=1, ge=0, le=247)
    default_word_order: WordOrder = "ABCD"
    fields: tuple[RegisterField, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class RegisterSpan:
    """A contiguous run of registers read with one request."""

    table: Table
    start: int
    count: int


def words_to_bytes(registers: Iterable[int], word_order: WordOrder) -> bytes:
    """Reorder two 16-bit registers into big-endian ABCD bytes."""
    regs = list(registers)
    if word_order in ("CDAB", "DCBA"):
        regs.reverse()
    raw = b"".join(r.to_bytes(2, "big") for r in regs)
    if word_order in ("BADC", "DCBA"):
        raw = bytes(b for pair in zip(raw[1::2], raw[0::2], strict=True) for b in pair)
    return raw


def float_to_registers(value: float, word_order: WordOrder) -> list[int]:
    """Encode a float32 into two registers in a word order (for simulators and tests)."""
    raw = struct.pack(">f", value)
    if word_order in ("BADC", "DCBA"):
        raw = bytes(b for pair in zip(raw[1::2], raw[0::2], strict=True) for b in pair)
    regs = [int.from_bytes(raw[0:2], "big"), int.from_bytes(raw[2:4], "big")]
    if word_order in ("CDAB", "DCBA"):
        regs.reverse()
    return regs


def plan_requests(
    fields: Iterable[RegisterField],
    word_order: WordOrder,
    *,
    max_gap: int = 8,
    max_count: int = 120,
) -> list[RegisterSpan]:
    """Group the registers the fields need into few requests (Modbus allows 125 per read)."""
    needed: dict[Table, set[int]] = {"holding": set(), "input": set()}
    for f in fields:
        start = f.resolved_address(word_order)
        needed[f.table].update(range(start, start + f.width))
        if f.decimals_address is not None:
            needed[f.table].add(f.decimals_address)
    spans: list[RegisterSpan] = []
    for table, addresses in needed.items():
        ordered = sorted(addresses)
        if not ordered:
            continue
        start = prev = ordered[0]
        for addr in ordered[1:]:
            if addr - prev > max_gap or addr - start + 1 > max_count:
                spans.append(RegisterSpan(table, start, prev - start + 1))
                start = addr
            prev = addr
        spans.append(RegisterSpan(table, start, prev - start + 1))
    return spans


class RegisterValues:
    """Registers read in one poll, looked up by table and address."""

    def __init__(self) -> None:
        self._values: dict[tuple[Table, int], int] = {}

    def add(self, span: RegisterSpan, registers: list[int]) -> None:
        """Record a request's answer."""
        for i, value in enumerate(registers[: span.count]):
            self._values[(span.table, span.start + i)] = value

    def get(self, table: Table, address: int) -> int:
        """One register; KeyError if it was not read."""
        return self._values[(table, address)]


def decode_field(
    field: RegisterField, values: RegisterValues, word_order: WordOrder
) -> float | int | bool | str:
    """One field's raw value (before counters turn into increments)."""
    order = field.word_order or word_order
    addr = field.resolved_address(order)
    first = values.get(field.table, addr)
    if field.type == "float32":
        pair = [first, values.get(field.table, addr + 1)]
        raw = struct.unpack(">f", words_to_bytes(pair, order))[0]
        # A float32 holds about 7 significant digits; more would be noise from the cast.
        return float(f"{raw * field.scale + field.offset:.7g}")
    if field.type == "uint32":
        pair = [first, values.get(field.table, addr + 1)]
        raw_int = int.from_bytes(words_to_bytes(pair, order), "big")
        return _scaled(raw_int, field)
    if field.type == "int16":
        signed = first - 0x10000 if first & 0x8000 else first
        return _scaled(signed, field, values)
    if field.type in ("uint16", "counter16"):
        return _scaled(first, field, values) if field.type == "uint16" else first
    if field.type in ("bit", "invalid_flag"):
        assert field.bit is not None  # checked by the model validator
        return bool((first >> field.bit) & 1)
    if field.type == "bit_count":
        return (first & field.mask).bit_count()
    assert field.states is not None  # enum, checked by the model validator
    return field.states.get(first, f"code_{first}")


def _scaled(raw: int, field: RegisterField, values: RegisterValues | None = None) -> float | int:
    if field.decimals_address is not None and values is not None:
        decimals = values.get(field.table, field.decimals_address)
        return round(raw / float(10**decimals) * field.scale + field.offset, 6)
    if field.scale == 1.0 and field.offset == 0.0:
        return raw
    return round(raw * field.scale + field.offset, 6)


@cache
def load_register_map(model: str) -> RegisterMap:
    """The shipped map of a model, from ``register_maps/{model}.toml``."""
    path = MAPS_DIR / f"{model}.toml"
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as err:
        raise RegisterMapError(f"no register map for model {model!r}") from err
    except tomllib.TOMLDecodeError as err:
        raise RegisterMapError(f"{path}: not valid TOML: {err}") from err
    return parse_register_map(data, where=str(path))


def parse_register_map(data: Mapping[str, object], *, where: str) -> RegisterMap:
    """Validate a map (from a file or a device config); errors name the field."""
    try:
        return RegisterMap.model_validate(data)
    except ValidationError as err:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise RegisterMapError(f"{where}: {reasons}") from err


def shipped_models() -> tuple[str, ...]:
    """Models with a map file, plus the user-defined model."""
    return (*sorted(p.stem for p in MAPS_DIR.glob("*.toml")), USER_DEFINED)
