"""The registry's settings section: database, API listener and MQTT identities.

``hub/settings.py`` embeds this model as ``[registry]``; the registry itself never reads
hub settings, so it stays importable on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

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
    mqtt_identities: bool = Field(
        default=True,
        description="Create per-device MQTT identities in Mosquitto's dynamic security.",
    )
    dynsec_timeout_s: float = Field(default=10.0, gt=0)
    dynsec_batch: int = Field(default=50, ge=1, le=1000)

    def resolved_database_url(self, state_dir: Path) -> str:
        """The configured URL, or the SQLite file under the state folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(state_dir / DATABASE_FILE).resolve()}"
