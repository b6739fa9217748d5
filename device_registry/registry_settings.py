"""The registry's settings section: database, API listener, MQTT identities, map tiles.

``hub/settings.py`` embeds this model as ``[registry]``; the registry itself never reads
hub settings, so it stays importable on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from device_registry.technician_page import TileSettings

Port = Annotated[int, Field(ge=1, le=65535)]
DATABASE_FILE = "registry.sqlite3"


class RegistrySettings(BaseModel):
    """Where the registry keeps its data and how it serves its API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL; unset means a SQLite file in the state folder. "
            "PostgreSQL: postgresql+psycopg://user:password@host:5432/kotahub"
        ),
    )
    api_host: str = "127.0.0.1"
    api_port: Port = 18090
    # kotahub run: https with the broker's certificate (the local CA's, or stack.tls_cert_file),
    # so that field agents trust one CA file for both (agent.registry_ca_file).
    api_tls: bool = Field(default=False, description="Serve the API over https (kotahub run).")
    mqtt_identities: bool = Field(
        default=True,
        description="Create per-device MQTT identities in Mosquitto's dynamic security.",
    )
    dynsec_timeout_s: float = Field(default=10.0, gt=0)
    dynsec_batch: int = Field(default=50, ge=1, le=1000)
    map_tile_url: str = Field(
        default="",
        max_length=500,
        description=(
            "Tile URL template for the technician page's map, with {z}, {x} and {y}, e.g. the "
            "city's tile server. Empty: the page draws a grid with the registry's sites, "
            "kecamatan and devices, and loads nothing from elsewhere."
        ),
    )
    map_tile_attribution: str = Field(default="", max_length=300)
    # Request limits of the API (web_api.BodyLimit): 413 past them, before the body is read
    # whole. Imports are bounded by rows too: bytes alone do not bound memory.
    max_body_bytes: int = Field(
        default=1048576, gt=0, description="Largest request body except imports and bulk routes."
    )
    max_import_bytes: int = Field(
        default=10485760,
        gt=0,
        description="Largest body of a file import, a bulk upsert and a status push.",
    )
    max_import_rows: int = Field(default=20000, gt=0, description="Most rows of one file import.")

    @field_validator("map_tile_url")
    @classmethod
    def _tile_template(cls, value: str) -> str:
        # The page's own rules, so a bad template stops start-up naming this setting.
        value = value.strip()
        if value:
            from pydantic import ValidationError

            from device_registry.technician_page import TileSettings

            try:
                TileSettings(url=value)
            except ValidationError as err:
                raise ValueError(err.errors()[0]["msg"].removeprefix("Value error, ")) from err
        return value

    def tile_settings(self) -> TileSettings | None:
        """The page's map tiles; None when unset (then KOTAHUB_TECHNICIAN_TILE_URL, or none)."""
        from device_registry.technician_page import TileSettings

        if not self.map_tile_url:
            return None
        return TileSettings(url=self.map_tile_url, attribution=self.map_tile_attribution)

    def resolved_database_url(self, state_dir: Path) -> str:
        """The configured URL, or the SQLite file under the state folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(state_dir / DATABASE_FILE).resolve()}"
