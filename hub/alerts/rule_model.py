"""Alert rules in YAML: the schema, validated at start-up with errors naming file, rule, key.

A rule file (``docs/alerting.md``) is a mapping with ``rules`` (a list) and optional
``defaults`` (``map_url``, ``runbook_url``: templates of the links in messages). Each rule
has an ``id``, a ``kind`` and the keys of its kind:

* ``threshold``: ``metric``, ``above`` or ``below``, optional ``clear`` (hysteresis);
* ``match``: ``metric`` and one of ``equals``, ``in``, ``not_equals``;
* ``rate``: ``metric``, ``rise`` or ``fall`` (an amount) ``within`` a duration;
* ``absence``: ``offline: true`` (the device's status) or a ``metric`` that stops coming,
  silent ``for`` a duration;
* ``stages``: ``metric``, ``direction``, a list of ``stages`` (each with a ``name``, a
  ``severity`` and a ``threshold``), and the ``hysteresis`` that clears each stage.

Common keys: ``name``, ``severity``, ``scope`` (families, device types, kecamatan,
teams, tags, devices), ``for`` and ``clear_for`` (durations on raise and on clear),
``flap`` (``changes`` within ``within``), ``message`` (a template), ``runbook``.
A threshold is a number or ``{attribute: NAME, default: NUMBER}``: the device's value of
that attribute in the registry (its tag ``NAME``, or ``driver_config["alert"][NAME]``).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
RULE_ID = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# What a message template may name (docs/alerting.md lists them).
TEMPLATE_FIELDS = frozenset(
    {
        "rule",
        "rule_name",
        "device_id",
        "device_name",
        "device_type",
        "family",
        "location",
        "site",
        "kecamatan",
        "kelurahan",
        "team",
        "metric",
        "value",
        "threshold",
        "stage",
        "severity",
        "state",
        "time",
        "map_link",
        "runbook_link",
        "cause",  # an offline rule's status reason ("" otherwise)
    }
)
DEFAULT_MESSAGE = "[{severity}] {rule_name}: {device_name} ({location}) {metric}={value}"


class RuleError(Exception):
    """A rule file Kotahub cannot use; the message names the file, the rule and the key."""


def seconds_of(value: object) -> float:
    """A duration as seconds: a number of seconds or text like ``30s``, ``15m``, ``2h``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 30s, 15m, 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError("a duration is a number of seconds or text like 30s, 15m, 2h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, Field(ge=0)]


def _check_template(text: str) -> str:
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            raise ValueError(
                f"unknown field {{{name}}} (known: {', '.join(sorted(TEMPLATE_FIELDS))})"
            )
        if conversion or (spec and not re.fullmatch(r"[0-9.,+\- ]*[fdgeE%]?", spec)):
            raise ValueError(f"field {{{name}}}: only number formats like {{value:.2f}}")
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttributeThreshold(_Strict):
    """A threshold read from the device's attribute in the registry."""

    attribute: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
    default: float | None = None


Threshold = float | AttributeThreshold


class Scope(_Strict):
    """Which devices a rule watches; every key given must match (empty: all devices)."""

    families: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    kecamatan: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("families", "device_types", "kecamatan", "teams", "devices", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


class Flap(_Strict):
    """Flapping: this many raises and clears within this long."""

    changes: int = Field(ge=2, le=1000)
    within: Duration

    @field_validator("within", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return seconds_of(value)


class _Rule(_Strict):
    id: str = Field(pattern=RULE_ID)
    name: str = ""
    severity: Severity = "warning"
    scope: Scope = Scope()
    for_s: Duration = Field(default=0.0, alias="for")
    clear_for_s: Duration = Field(default=0.0, alias="clear_for")
    flap: Flap | None = None
    message: str = DEFAULT_MESSAGE
    runbook: str = ""
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("for_s", "clear_for_s", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return seconds_of(value)

    @field_validator("message")
    @classmethod
    def _template(cls, value: str) -> str:
        return _check_template(value)

    @property
    def title(self) -> str:
        """The rule's name, or its id."""
        return self.name or self.id


class ThresholdRule(_Rule):
    """A metric above (or below) a threshold; cleared at ``clear`` (hysteresis)."""

    kind: Literal["threshold"]
    metric: str
    above: Threshold | None = None
    below: Threshold | None = None
    clear: Threshold | None = None

    @model_validator(mode="after")
    def _one_side(self) -> ThresholdRule:
        if (self.above is None) == (self.below is None):
            raise ValueError("give exactly one of 'above' and 'below'")
        return self


Scalar = float | bool | str


class MatchRule(_Rule):
    """A metric (often of an event) equal to a value, in a set, or not equal to one."""

    kind: Literal["match"]
    metric: str
    equals: Scalar | None = None
    in_: tuple[Scalar, ...] | None = Field(default=None, alias="in")
    not_equals: Scalar | None = None

    @model_validator(mode="after")
    def _one_test(self) -> MatchRule:
        given = [k for k in ("equals", "in_", "not_equals") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'equals', 'in' and 'not_equals'")
        return self


class RateRule(_Rule):
    """A metric rising (or falling) by at least an amount within a duration."""

    kind: Literal["rate"]
    metric: str
    rise: float | None = Field(default=None, gt=0)
    fall: float | None = Field(default=None, gt=0)
    within: Duration
    clear: float | None = Field(default=None, ge=0)

    @field_validator("within", mode="before")
    @classmethod
    def _within(cls, value: object) -> float:
        return seconds_of(value)

    @model_validator(mode="after")
    def _one_way(self) -> RateRule:
        if (self.rise is None) == (self.fall is None):
            raise ValueError("give exactly one of 'rise' and 'fall'")
        if self.within <= 0:
            raise ValueError("'within' must be longer than 0 s")
        return self


class AbsenceRule(_Rule):
    """The device is offline, or a metric has not come for ``for``."""

    kind: Literal["absence"]
    offline: bool = False
    metric: str | None = None

    @model_validator(mode="after")
    def _what(self) -> AbsenceRule:
        if self.offline == (self.metric is not None):
            raise ValueError("give either 'offline: true' or a 'metric'")
        if self.metric is not None and self.for_s <= 0:
            raise ValueError("'for' must say how long the metric may be silent")
        return self


class Stage(_Strict):
    """One stage of a multi-stage alert (e.g. Siaga 3)."""

    name: str = Field(min_length=1, max_length=64)
    severity: Severity
    threshold: Threshold
    clear: Threshold | None = None


class StagesRule(_Rule):
    """One alert that escalates and de-escalates through ordered stages."""

    kind: Literal["stages"]
    metric: str
    direction: Literal["above", "below"] = "above"
    hysteresis: float = Field(default=0.0, ge=0)
    stages: tuple[Stage, ...] = Field(min_length=1, max_length=16)


Rule = Annotated[
    ThresholdRule | MatchRule | RateRule | AbsenceRule | StagesRule, Field(discriminator="kind")
]


class Defaults(_Strict):
    """Links shared by the rules of a file."""

    map_url: str = ""
    runbook_url: str = ""

    @field_validator("map_url", "runbook_url")
    @classmethod
    def _template(cls, value: str) -> str:
        text = value.replace("{runbook}", "")
        _check_template(text)
        return value


class RuleFile(_Strict):
    """The top level of a rule file."""

    version: Literal[1] = 1
    defaults: Defaults = Defaults()
    rules: tuple[Any, ...] = ()


_RULE = TypeAdapter(Rule)


def _location(loc: tuple[int | str, ...]) -> str:
    if loc and loc[0] in RULE_KINDS:
        loc = loc[1:]  # the discriminated union's tag, not a key of the rule
    parts = [str(p) for p in loc]
    return ".".join(parts).replace("for_s", "for").replace("clear_for_s", "clear_for") or "(rule)"


RULE_KINDS = ("threshold", "match", "rate", "absence", "stages")


def _problem(item: Mapping[str, Any]) -> str:
    key = _location(tuple(item["loc"]))
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] == "union_tag_invalid":
        key, message = "kind", f"must be one of {', '.join(RULE_KINDS)}"
    elif item["type"] == "union_tag_not_found":
        key, message = "kind", f"missing (one of {', '.join(RULE_KINDS)})"
    return f"key '{key}': {message}"


def parse_rules(text: str, source: str) -> tuple[Defaults, list[Rule]]:
    """The defaults and rules of one file's text; RuleError names file, rule and key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "unreadable"
        raise RuleError(f"{source}: not valid YAML{where}: {problem}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RuleError(f"{source}: a rule file is a mapping with a 'rules' list")
    try:
        top = RuleFile.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        raise RuleError(f"{source}: {_problem(first)}") from err
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(top.rules):
        label = f"rule {index + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            label = f"rule '{raw['id']}'"
        if not isinstance(raw, dict):
            raise RuleError(f"{source}: {label}: a rule is a mapping")
        try:
            rule = _RULE.validate_python(raw)
        except ValidationError as err:
            problems = "; ".join(_problem(item) for item in err.errors()[:3])
            raise RuleError(f"{source}: {label}: {problems}") from err
        if rule.id in seen:
            raise RuleError(f"{source}: {label}: key 'id': used twice in this file")
        seen.add(rule.id)
        rules.append(rule)
    return top.defaults, rules


def load_rule_files(paths: list[Path]) -> list[tuple[Defaults, Rule]]:
    """Every rule of the files (a folder: its ``*.yaml`` files, sorted); ids unique overall."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
        else:
            files.append(path)
    loaded: list[tuple[Defaults, Rule]] = []
    origin: dict[str, Path] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise RuleError(f"{file}: cannot read the rule file: {err}") from err
        defaults, rules = parse_rules(text, str(file))
        for rule in rules:
            if rule.id in origin:
                raise RuleError(
                    f"{file}: rule '{rule.id}': key 'id': already used in {origin[rule.id]}"
                )
            origin[rule.id] = file
            loaded.append((defaults, rule))
    return loaded
