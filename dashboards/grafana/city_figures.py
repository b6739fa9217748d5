"""The city's figures the boards need: indicator denominators, map centre, flood stages.

They live on the registry side (``device_registry/data/city_figures.json``), not in code,
so another city regenerates its boards from its own file.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIGURES = PROJECT_ROOT / "device_registry" / "data" / "city_figures.json"


class FiguresError(ValueError):
    """The figures file is missing or invalid; the message names the file and the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloodStages(_Model):
    """Flood stage levels (metres, same datum as ``level_m``), Siaga 4 (lowest) to 1.

    The names are the registry device tags the alert rule ``flood-stage`` reads
    (``hub/alerts/rules/semarang.yaml``), so the board's lines and the pages agree.
    """

    siaga4_m: float
    siaga3_m: float
    siaga2_m: float
    siaga1_m: float

    @model_validator(mode="after")
    def _ordered(self) -> FloodStages:
        if not self.siaga4_m < self.siaga3_m < self.siaga2_m < self.siaga1_m:
            raise ValueError("stages must rise: siaga4_m < siaga3_m < siaga2_m < siaga1_m")
        return self

    def steps(self) -> list[tuple[float | None, str]]:
        """Grafana threshold steps: normal, then Siaga 4, 3, 2 and 1."""
        return [
            (None, "green"),
            (self.siaga4_m, "yellow"),
            (self.siaga3_m, "orange"),
            (self.siaga2_m, "red"),
            (self.siaga1_m, "purple"),
        ]


class PublicTransport(_Model):
    """The public-transport fleet: its registry team and how many vehicles it runs."""

    team: str = Field(min_length=1)
    vehicles: int = Field(gt=0)


class CityFigures(_Model):
    """One city's figures (see docs/indicators.md for where each comes from)."""

    comment: str = Field(default="", alias="_comment")
    city: str = Field(min_length=1)
    year: int
    population: int = Field(gt=0)
    area_km2: float = Field(gt=0)
    kecamatan_count: int = Field(gt=0)
    kelurahan_count: int = Field(gt=0)
    signalised_intersections: int = Field(gt=0)
    public_transport: PublicTransport
    flood_gauges: int = Field(gt=0)
    map_center: tuple[float, float]
    kecamatan: dict[str, tuple[float, float]]
    # The city's default stages, drawn on the panels of all gauges at once. A gauge's own
    # stages are registry attributes (what the alert rule reads), never copied here.
    flood_stages: FloodStages
    tide_gauges: list[str] = Field(default_factory=list)


def load_figures(path: Path = DEFAULT_FIGURES) -> CityFigures:
    """Read and check a figures file; FiguresError names the file and what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FiguresError(f"{path}: {err}") from err
    try:
        figures = CityFigures.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FiguresError(f"{path}: {where}: {first['msg']}") from err
    return figures
