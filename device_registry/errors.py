"""The registry's exception root and the errors its API turns into problem details."""

from __future__ import annotations


class RegistryError(Exception):
    """Root of every error the registry raises on purpose."""


class FieldError(RegistryError):
    """Input is invalid; ``field`` names the field at fault (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(RegistryError):
    """The named device, type, site, team or token does not exist."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key!r} not found")
        self.kind = kind
        self.key = key


class ConflictError(RegistryError):
    """The change clashes with the current state (duplicate id, retired device...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CredentialsError(RegistryError):
    """The broker did not create, rotate or revoke an MQTT identity."""
