"""The registry commands' options derived from the pydantic models, and their values parsed.

The options of ``devices add|update|list|export`` (and of sites and types) come from the
models (``DeviceCreate``, ``DeviceUpdate``, ``DeviceQuery``...), so a field added to a model
is a CLI option at once, and pydantic validates every value: the CLI has no second copy of
the rules. A validation error names the option that sets the field (``--lat (latitude)``).
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

F = TypeVar("F", bound=Callable[..., Any])

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Settings file.", envvar="KOTAHUB_CONFIG", show_envvar=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


# -- options derived from the pydantic models --------------------------------------------
# Short spellings kept from the first CLI (and easier to type in the field).
OPTION_ALIASES: dict[str, str] = {
    "device_type": "--type",
    "gateway_id": "--gateway",
    "parent_id": "--parent",
    "site_id": "--site",
    "team_id": "--team",
    "latitude": "--lat",
    "longitude": "--lon",
    "firmware_version": "--firmware",
    "owner_kind": "--owner",
    "expected_interval_s": "--interval",
}
BOOL_FLAGS: dict[str, str] = {
    "online": "--online/--offline",
    "is_gateway": "--gateway/--no-gateway",
}
# Fields with an option of their own shape (KEY=VALUE, JSON) or given as an argument.
SPECIAL_FIELDS = frozenset({"id", "tags", "driver_config", "metrics"})
# Field -> the option that sets it, for error messages ("--lat (latitude): ...").
_FIELD_OPTIONS: dict[str, str] = {}


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """``Annotated[X, ...] | None`` -> ``X`` and the constraints found on the way."""
    metadata: list[Any] = []
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else str
    if typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            metadata += getattr(item, "metadata", [item])
    return annotation, metadata


# Help for fields whose type alone says little.
FIELD_HELP: dict[str, str] = {
    "q": "substring of id, serial, vendor or model",
    "gateway_id": "id of the gateway or agent it reports through",
    "parent_id": "id of its parent device (camera -> NVR, AP -> switch)",
    "site_id": "id of a registered site",
    "team_id": "id of the owning team",
    "device_type": "name of a device type (`kotahub registry types list`)",
    "rw": "RW number (1-3 digits); needs --kelurahan",
    "rt": "RT number (1-3 digits); needs --rw",
    "kecamatan": "needs --kota",
    "kelurahan": "needs --kecamatan",
    "family": "e.g. cctv, flood, gateway",
    "protocol": "e.g. mqtt, onvif, modbus",
    "is_gateway": "a gateway or agent: gets an MQTT identity, devices report through it",
    "expected_interval_s": "seconds between two reports",
}


def _describe(name: str, info: FieldInfo) -> tuple[Any, str]:
    """The Python type of a field's option and a short help text."""
    bare, metadata = _unwrap(info.annotation)
    metadata += info.metadata
    extra = FIELD_HELP.get(name, "")
    if typing.get_origin(bare) is Literal:
        return str, "one of: " + ", ".join(str(a) for a in typing.get_args(bare))
    if bare in (float, int):
        limits = {k: getattr(m, k) for m in metadata for k in ("ge", "gt", "le") if hasattr(m, k)}
        low = f"{limits['ge']}" if "ge" in limits else f">{limits['gt']}" if "gt" in limits else ""
        text = "number" if bare is float else "integer"
        text = f"{extra}: {text}" if extra else text
        if low or "le" in limits:
            text += f" {low}..{limits.get('le', '')}"
        return bare, text
    if bare is bool:
        return bool, extra
    if bare is dt.date:
        return str, "date YYYY-MM-DD"
    return str, extra


def model_options(
    model: type[BaseModel],
    *,
    skip: frozenset[str] = frozenset(),
    notes: dict[str, str] | None = None,
) -> Callable[[F], F]:
    """Add one ``--option`` per field of ``model`` to a command taking ``**fields``.

    Every option defaults to None (not given); the command passes the given ones to the
    model, which validates them. ``device_type`` becomes ``--type`` and so on
    (OPTION_ALIASES) next to its long name ``--device-type``. ``notes`` adds a command's
    own words to a field's help (a default that the command, not the model, sets).
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        explicit = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        # Arguments first, then the model's options (most used first), then the rest.
        params = [p for p in explicit if p.default is p.empty]
        taken = {p.name for p in explicit}
        first = ("device_type", "state")
        names = sorted(model.model_fields, key=lambda n: first.index(n) if n in first else 9)
        for name in names:
            info = model.model_fields[name]
            if name in SPECIAL_FIELDS or name in skip or name in taken:
                continue
            python_type, text = _describe(name, info)
            if notes and name in notes:
                text = f"{text}; {notes[name]}" if text else notes[name]
            if python_type is bool:
                declarations: tuple[str, ...] = (BOOL_FLAGS.get(name, f"--{name}/--no-{name}"),)
                _FIELD_OPTIONS[name] = declarations[0].split("/")[0]
            else:
                long_name = "--" + name.replace("_", "-")
                alias = OPTION_ALIASES.get(name)
                declarations = (alias, long_name) if alias else (long_name,)
                _FIELD_OPTIONS[name] = declarations[0]
            option = typer.Option(*declarations, help=text, show_default=False)
            params.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=None,
                    annotation=Annotated[python_type | None, option],
                )
            )
        params += [p.replace(kind=p.KEYWORD_ONLY) for p in explicit if p.default is not p.empty]
        setattr(func, "__signature__", signature.replace(parameters=params))  # noqa: B010
        return func

    return decorate


def given_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The options that were given (a None option was not)."""
    return {k: v for k, v in fields.items() if v is not None}


def field_location(loc: tuple[int | str, ...]) -> str:
    """Where a validation error is, named by the option that sets it (``--lat (latitude)``)."""
    path = ".".join(str(part) for part in loc)
    if not path:
        return "(input)"
    head = str(loc[0])
    if head == "body":  # the service's name for "the device as a whole"
        return "(device)"
    option = _FIELD_OPTIONS.get(head)
    return f"{option} ({path})" if option else path


def key_values(items: list[str] | None, option: str) -> dict[str, str]:
    """``KEY=VALUE`` option values as a dict (a bad one is refused, naming ``option``)."""
    result: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=option)
        result[key.strip()] = value.strip()
    return result


def json_object(text: str | None, option: str) -> dict[str, Any] | None:
    """A JSON object option's value, or None when the option was not given."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as error:
        raise typer.BadParameter(f"not valid JSON: {error}", param_hint=option) from error
    if not isinstance(value, dict):
        raise typer.BadParameter("expected a JSON object {...}", param_hint=option)
    return value


def cleared_fields(
    fields: list[str] | None, model: type[BaseModel], created: type[BaseModel]
) -> dict[str, Any]:
    """``--clear`` values: None, or "" for a text field that is never null (an address)."""
    values: dict[str, Any] = {}
    for item in fields or []:
        name = field_of_option(item, model)
        info = created.model_fields.get(name)
        values[name] = "" if info is not None and info.default == "" else None
    return values


def field_of_option(text: str, model: type[BaseModel]) -> str:
    """``--lat``, ``lat``, ``latitude`` or ``--site-id`` -> the model field name."""
    bare = text.lstrip("-").replace("-", "_")
    by_alias = {alias.lstrip("-"): field for field, alias in OPTION_ALIASES.items()}
    field = by_alias.get(bare, bare)
    if field not in model.model_fields:
        known = ", ".join(sorted(model.model_fields))
        raise typer.BadParameter(f"{text!r} is not a field; fields: {known}", param_hint="--clear")
    return field
