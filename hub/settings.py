"""Kotahub settings: one ``kotahub.toml``, validated, with ``KOTAHUB_`` environment overrides.

Precedence, highest first: keyword arguments, environment (``KOTAHUB_MQTT__PORT=1884``),
the TOML file, then the defaults below.  A bad value stops start-up with a message that
names the key and the reason; secrets are ``SecretStr`` so they never reach a log.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from device_registry.registry_settings import RegistrySettings
from hub.alerts.alert_settings import AlertSettings

DEFAULT_CONFIG_FILE = Path("kotahub.toml")
CONFIG_ENV_VAR = "KOTAHUB_CONFIG"

Port = Annotated[int, Field(ge=1, le=65535)]


class ConfigError(Exception):
    """The configuration file or environment holds a value Kotahub cannot use."""


class _Section(BaseModel):
    """Base for settings sections: unknown keys are typos, so they are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StackSettings(_Section):
    """Where and how ``kotahub stack`` runs the local Mosquitto and InfluxDB."""

    mosquitto_bin: str = "mosquitto"
    mosquitto_ctrl_bin: str = "mosquitto_ctrl"
    influxd_bin: str = "influxd"
    dynsec_plugin: Path | None = Field(
        default=None,
        description="Path to mosquitto_dynamic_security.so; found in the usual places if unset.",
    )
    influx_rpc_port: Port = 18088
    # The broker's TLS listener (port: mqtt.tls_port). Off loopback every client uses it;
    # the plain listener stays on mqtt.host, which must be a loopback address.
    tls_bind: str = Field(default="0.0.0.0", description="Address of the TLS listener.")
    tls_cert_file: Path | None = Field(
        default=None, description="Operator's server certificate; unset: the local CA's."
    )
    tls_key_file: Path | None = Field(default=None, description="Key of tls_cert_file.")
    tls_names: list[str] = Field(
        default_factory=list,
        description="More names/addresses for the generated certificate (the hub's LAN name).",
    )
    # "control" (least privilege): the admin identity may use $CONTROL/dynamic-security/#
    # only; "full" also lets it read every topic and publish under kota/ (test and bench
    # stacks that watch everything ask for it). Applied when the broker is bootstrapped.
    admin_acl: Literal["full", "control"] = "control"
    start_timeout_s: float = Field(default=30.0, gt=0)
    stop_timeout_s: float = Field(default=15.0, gt=0)
    # A hub outage of 10 minutes at 10,000 msg/s queues 6 million messages for the hub's
    # persistent session; twice that leaves room for a slow restart.
    max_queued_messages: int = Field(default=12_000_000, ge=0)
    autosave_interval_s: int = Field(default=60, ge=1)


class MqttSettings(_Section):
    """How Kotahub's own services reach the broker."""

    host: str = "127.0.0.1"
    port: Port = 11883
    username: str = "kotahub-admin"
    password: SecretStr | None = Field(
        default=None,
        description="Unset: the password that `kotahub stack up` generated in the state folder.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    # The hub's own identity (created by `kotahub stack up`): it reads the contract's
    # topics and writes the dead-letter topic, nothing else.
    hub_username: str = "kotahub-hub"
    hub_password: SecretStr | None = Field(
        default=None, description="Unset: the one `kotahub stack up` generated."
    )
    tls: bool = Field(default=False, description="Connect to tls_port with TLS, verifying.")
    tls_port: Port | None = Field(default=None, description="Unset: port + 1.")
    ca_file: Path | None = Field(
        default=None, description="CA that signed the broker; unset: the local stack's CA."
    )

    @property
    def resolved_tls_port(self) -> int:
        """The TLS listener's port."""
        return self.tls_port if self.tls_port is not None else self.port + 1


class InfluxSettings(_Section):
    """Where the hub writes and what the local stack creates."""

    url: str = "http://127.0.0.1:18086"
    api: Literal["v1", "v2"] = "v1"
    database: str = Field(default="kotahub", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    retention_policy: str = Field(default="raw", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    retention: str = Field(default="30d", pattern=r"^(INF|[0-9]+[hdw])$")
    username: str | None = None
    password: SecretStr | None = None
    org: str | None = None
    bucket: str | None = None
    token: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0)

    @property
    def port(self) -> int:
        """TCP port taken from ``url``."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


class RegistryClientSettings(_Section):
    """How a process on another machine reads devices from the registry API (agent, hub)."""

    registry_url: str | None = Field(
        default=None, description="The registry API, e.g. https://hub.kota.example:8080"
    )
    registry_token: SecretStr | None = Field(default=None, description="An API token")
    registry_token_file: Path | None = Field(
        default=None, description="File holding the token (mode 0600), instead of the value"
    )
    registry_ca_file: Path | None = Field(
        default=None, description="CA of the registry's https certificate; unset: system CAs"
    )
    registry_refresh_s: float = Field(default=60.0, gt=0, le=86400)
    registry_timeout_s: float = Field(default=10.0, gt=0, le=300)
    device_cache_file: Path | None = Field(
        default=None, description="The last list fetched, for registry outages"
    )

    @field_validator(
        "registry_url",
        "registry_token_file",
        "registry_ca_file",
        "device_cache_file",
        mode="before",
    )
    @classmethod
    def _registry_empty_is_unset(cls, value: object) -> object:
        """TOML and the environment have no null: an empty string means unset."""
        return None if value == "" else value


class IngestSettings(RegistryClientSettings):
    """How the hub ingests MQTT into InfluxDB (see docs/ingest.md)."""

    # Where the hub's devices come from, first match: devices_file (a JSON file), the
    # registry API at registry_url (a worker on another machine, with a token that may
    # read), else the registry database (registry.database_url: PostgreSQL in production).
    devices_file: Path | None = Field(
        default=None,
        description="JSON device list (FileDeviceDirectory); unset: the registry.",
    )
    registry_refresh_s: float = Field(default=5.0, gt=0, le=86400)
    client_id: str = Field(default="kotahub-hub-1", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    # Unset: one worker on a plain persistent subscription, which Mosquitto keeps across
    # its own restart; scale-out sets a group (Mosquitto forgets $share over a restart).
    shared_group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    # 3.1.1 by measurement: paho drains it faster (no per-message v5 Properties).
    mqtt_protocol: Literal["3.1.1", "5"] = "3.1.1"
    wal_dir: Path | None = Field(
        default=None, description="Write-ahead log folder; unset: <state_dir>/wal/<client_id>."
    )
    batch_lines: int = Field(default=5000, ge=1, le=1_000_000)
    batch_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Catching up (the WAL holds two batches or more), the writer takes up to this many
    # lines at once and posts them grouped by series, which InfluxDB writes faster; they
    # are committed together. 0 (or at most batch_lines): batch by batch in WAL order.
    catchup_sort_lines: int = Field(default=100_000, ge=0, le=10_000_000)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9108, ge=0, le=65535, description="0 disables /metrics.")
    self_metrics_interval_s: float = Field(default=10.0, gt=0)
    # The boards read each hub's newest fleet_online point of the last 5 minutes.
    fleet_online_interval_s: float = Field(default=60.0, gt=0, le=120)
    wal_warn_fill: float = Field(default=0.8, gt=0, le=1)
    # One hour at 10,000 msg/s is about 36 million lines of ~200 bytes: 7 GB.
    wal_max_bytes: int = Field(default=16 * 1024**3, ge=1024 * 1024)
    max_clock_skew_s: float = Field(default=300.0, ge=0)
    max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    offline_factor: float = Field(default=3.0, gt=0)
    # A metric the device's type does not declare: refused (metric_not_in_type), or
    # accepted and remembered with its first type per measurement (sites that want it).
    unknown_metrics: Literal["reject", "learn"] = "reject"
    # Read each device's last device_status from InfluxDB (v1 API) at start, so that a
    # restart is not reported as thousands of devices coming online.
    restore_status: bool = True

    @field_validator("shared_group", "devices_file", "wal_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """TOML and the environment have no null: an empty string means unset."""
        return None if value == "" else value

    @field_validator("mqtt_protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: object) -> object:
        """TOML ``mqtt_protocol = 5`` (a number) means the same as ``"5"``."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class AgentSettings(RegistryClientSettings):
    """The field agent: the gateway it speaks for, its devices, MQTT identity, policies.

    With ``registry_url`` (a gateway on another machine) the devices come from the
    registry API with a token of role gateway; the last list is kept in
    ``device_cache_file`` (unset: buffer_dir/devices-<gateway>.json). See docs/operations.md.
    """

    gateway_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-.]{1,64}$")
    devices_file: Path | None = Field(
        default=None,
        description="Device list (until the registry serves it); unset: state_dir/devices.json",
    )
    buffer_dir: Path | None = Field(default=None, description="Unset: state_dir/agent")
    buffer_max_messages: int = Field(default=1_000_000, ge=1)
    mqtt_username: str | None = Field(default=None, description="Unset: mqtt.username")
    mqtt_password: SecretStr | None = Field(default=None, description="Unset: mqtt.password")
    offline_after_failures: int = Field(default=3, ge=1)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=60.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    refresh_interval_s: float = Field(default=5.0, gt=0)
    # `kotahub run`: the in-process agent's gateway password, made and kept here (0600).
    credential_file: Path | None = Field(
        default=None, description="Unset: state_dir/agent/gateway-<gateway>.secret"
    )

    @field_validator("credential_file", "devices_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """TOML and the environment have no null: an empty string means unset."""
        return None if value == "" else value


class Settings(BaseSettings):
    """All of Kotahub's settings."""

    model_config = SettingsConfigDict(
        env_prefix="KOTAHUB_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    state_dir: Path = Path(".kotahub")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    stack: StackSettings = StackSettings()
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    registry: RegistrySettings = RegistrySettings()
    agent: AgentSettings = AgentSettings()
    ingest: IngestSettings = IngestSettings()
    alerts: AlertSettings = AlertSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then environment, then the TOML file named in model_config."""
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"{source}: {err.error_count()} invalid setting(s)"]
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Read and validate settings; raise ConfigError naming the key and the reason.

    ``config_file`` falls back to ``$KOTAHUB_CONFIG`` and then ``./kotahub.toml``; only a
    file that was asked for explicitly must exist.
    """
    explicit = config_file is not None or CONFIG_ENV_VAR in os.environ
    path = config_file or Path(os.environ.get(CONFIG_ENV_VAR, str(DEFAULT_CONFIG_FILE)))
    if explicit and not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    if path.is_file():
        try:
            with path.open("rb") as handle:
                tomllib.load(handle)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from err
        except OSError as err:
            raise ConfigError(f"{path}: cannot read: {err.strerror}") from err

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path if path.is_file() else None)

    try:
        return _FromFile(**overrides)  # type: ignore[arg-type]
    except ValidationError as err:
        raise ConfigError(_format_errors(str(path), err)) from err


def redacted(settings: Settings) -> dict[str, object]:
    """Settings as a plain dict with every secret replaced by ``'**********'``."""
    return settings.model_dump(mode="json")
