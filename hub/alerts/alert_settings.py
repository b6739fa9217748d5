"""The ``[alerts]`` settings section (environment ``KOTAHUB_ALERTS__<KEY>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class AlertSettings(BaseModel):
    """Rules, routing and paging of the alert engine (docs/alerting.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Path] = Field(
        default_factory=list,
        description="Rule files or folders of *.yaml; empty: the hub runs no alert engine.",
    )
    routing: Path | None = Field(default=None, description="Teams and escalations (YAML).")
    # process: evaluation has an interpreter of its own, so rules never slow ingest (GIL).
    engine: Literal["process", "thread"] = Field(
        default="process", description="process: a child of the hub; thread: in the hub"
    )
    # On a saturated machine ingest must come first (nothing lost) and the engine catch up
    # after; with spare CPU niceness changes nothing. At 0 on a busy machine the engine
    # slowed a drain 18.8 % and still paged late (docs/alerting.md, "The engine's process").
    engine_nice: int = Field(
        default=10, ge=0, le=19, description="The engine process's niceness (0-19)."
    )
    database: Path | None = Field(
        default=None, description="Alert state; unset: <state_dir>/alerts/alerts.sqlite3."
    )
    retry_min_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=12, ge=1)
    send_timeout_s: float = Field(default=10.0, gt=0)
    # One-tap acknowledgement links in pages: signed with link_secret, served on ack_port.
    link_secret: SecretStr | None = None
    link_base_url: str = Field(default="", description="e.g. https://hub.example/ ; unset: no link")
    link_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    ack_host: str = "127.0.0.1"
    ack_port: int = Field(
        default=0, ge=0, le=65535, description="The links' and the JSON API's port; 0: off."
    )
    # The JSON API (alert_api.py) takes this bearer token, and the registry's API tokens
    # when the hub reads the registry database.
    api_token: SecretStr | None = None
    # The technician page (registry /app/) calls the API from another origin (page_cors.py).
    page_url: str = Field(
        default="", description="The alert server as the page reaches it; unset: link_base_url"
    )
    page_origins: list[str] = Field(
        default_factory=list, description="Pages allowed by CORS; empty: the registry API's"
    )

    # Alertmanager output (docs/alerting.md): every firing alert posted to each URL.
    alertmanager_urls: list[str] = Field(
        default_factory=list, description="e.g. http://127.0.0.1:9093 ; empty: no output."
    )
    alertmanager_interval_s: float = Field(default=60.0, gt=0)
    # A camera offline because its parent NVR is down waits this long for the NVR's alert.
    parent_hold_s: float = Field(default=120.0, ge=0)

    @field_validator("rules", "alertmanager_urls", "page_origins", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        """A single path (the environment gives text) is a list of one; "" is none."""
        if isinstance(value, str):
            return [part for part in value.split(",") if part]
        return value

    @field_validator("routing", "database", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value
