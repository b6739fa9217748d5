"""An SNMP target's config: address, version, credentials, timeout, retries, backoff."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from drivers.framework import DriverConfig

AuthProtocol = Literal["sha", "sha224", "sha256", "sha384", "sha512", "md5"]
PrivProtocol = Literal["aes", "aes192", "aes256", "des"]


class SnmpTargetConfig(DriverConfig):
    """How to reach one SNMP agent; keys and communities are secrets (never printed)."""

    address: str = Field(description="host or host:port (default port 161)")
    version: Literal["1", "2c", "3"] = "2c"
    community: SecretStr = Field(default=SecretStr("public"), description="v1/v2c community")
    user: str | None = Field(default=None, min_length=1, max_length=32, description="v3 user")
    auth_protocol: AuthProtocol = "sha"
    auth_key: SecretStr | None = Field(default=None, description="v3 auth passphrase")
    priv_protocol: PrivProtocol = "aes"
    priv_key: SecretStr | None = Field(default=None, description="v3 privacy passphrase")
    context: str = Field(default="", max_length=32, description="v3 context name")
    request_timeout_s: float = Field(default=1.5, gt=0, le=60, description="One attempt.")
    retries: int = Field(default=1, ge=0, le=5)
    backoff_s: float = Field(default=0.2, ge=0, le=10, description="Before retry n: x 2^(n-1).")
    max_repetitions: int = Field(default=24, ge=1, le=200, description="GETBULK rows per request")
    trap_port: int | None = Field(
        default=None, gt=0, lt=65536, description="Listen for this device's traps on this port"
    )
    trap_source: str | None = Field(
        default=None, description="IP the device's traps come from; unset: the address's host"
    )
    trap_engine_id: str | None = Field(
        default=None,
        pattern=r"^(0x)?[0-9a-fA-F]{10,64}$",
        description="v3 traps: the device's snmpEngineID (hex), which USM needs to verify them",
    )

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep:
            host, port = value, "161"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host or host:port")
        return value

    @model_validator(mode="after")
    def _v3_needs_user_and_keys(self) -> SnmpTargetConfig:
        if self.version == "3":
            if self.user is None:
                raise ValueError("version 3 needs user")
            for name in ("auth_key", "priv_key"):
                key = getattr(self, name)
                # authPriv only: an SNMP reading over the city's network is never plain text.
                if key is None or len(key.get_secret_value()) < 8:
                    raise ValueError(f"version 3 needs {name} of at least 8 characters")
        worst = self.request_timeout_s * (self.retries + 1) + self.backoff_s * (2**self.retries - 1)
        if worst > self.timeout_s * 0.95:
            raise ValueError(
                f"request_timeout_s x (retries + 1) plus backoff ({worst:g} s) must fit "
                f"in timeout_s ({self.timeout_s:g} s) for one request"
            )
        return self

    @property
    def host(self) -> str:
        """Host part of the address."""
        host, sep, _ = self.address.rpartition(":")
        return host if sep else self.address

    @property
    def trap_from(self) -> str:
        """The source IP the device's traps carry."""
        return self.trap_source or self.host

    @property
    def port(self) -> int:
        """Port part of the address (161 when absent)."""
        _, sep, port = self.address.rpartition(":")
        return int(port) if sep else 161
