"""``kotahub firmware provision ADDRESS``: a new device's WiFi and MQTT settings over BLE.

Reads the device's id over the provisioning GATT service, registers it (a known id gets a
new MQTT secret), writes the settings (sealed to the device's key when it has one) and
reports the device's answer. The WiFi password comes from ``--wifi-password-env`` or a
hidden prompt, never the command line. The hub's CLI registers ``provision_command`` as
``firmware provision`` (``provision_app`` is that one command on its own) and installs the
runtime loader; exit status 1 with one line when refused.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from bleak.backends.client import BaseBleakClient
from rich.console import Console

from device_registry.registry_service import RegistryService
from firmware_tools.ble_provisioning import NetworkSettings, provision
from firmware_tools.errors import FirmwareError


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvisioningRuntime:
    """What provisioning needs from the settings."""

    # The registry, creating broker identities (the process ends after one command).
    make_service: Callable[[], RegistryService]
    mqtt_host: str  # what the device is told to connect to
    mqtt_port: int
    mqtt_tls: bool


ProvisioningRuntimeLoader = Callable[[Path | None], ProvisioningRuntime]
_loader: list[ProvisioningRuntimeLoader] = []
# bleak's platform backend unless set: the tests plug a fake client backend in here.
_backend: list[type[BaseBleakClient]] = []

provision_app = typer.Typer(help="Provision a new device over BLE.", no_args_is_help=True)


def set_provisioning_runtime_loader(loader: ProvisioningRuntimeLoader) -> None:
    """Install how ``--config`` becomes a ProvisioningRuntime (done by the hub's CLI)."""
    _loader[:] = [loader]


def set_ble_backend(backend: type[BaseBleakClient] | None) -> None:
    """Use this bleak client backend instead of the platform's (None: the platform's)."""
    _backend[:] = [backend] if backend is not None else []


@provision_app.command("provision")
def provision_command(
    address: Annotated[str, typer.Argument(help="The device's BLE address.")],
    device_type: Annotated[str, typer.Option("--device-type", help="Registry device type.")],
    wifi_ssid: Annotated[str, typer.Option("--wifi-ssid")],
    wifi_password_env: Annotated[
        str | None,
        typer.Option("--wifi-password-env", help="Environment variable holding the password."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds per BLE step.")] = 20.0,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Settings file.", envvar="KOTAHUB_CONFIG"),
    ] = None,
) -> None:
    """Register a new device and write its WiFi and MQTT settings over BLE."""
    if not _loader:
        raise RuntimeError("no runtime loader installed (use the `kotahub` command)")
    runtime = _loader[0](config)
    if wifi_password_env is not None:
        password = os.environ.get(wifi_password_env)
        if password is None:
            raise typer.BadParameter(
                f"${wifi_password_env} is not set", param_hint="--wifi-password-env"
            )
    else:
        password = typer.prompt("WiFi password", hide_input=True)
    network = NetworkSettings(
        wifi_ssid=wifi_ssid,
        wifi_password=password,
        mqtt_host=runtime.mqtt_host,
        mqtt_port=runtime.mqtt_port,
        mqtt_tls=runtime.mqtt_tls,
    )
    service = runtime.make_service()
    try:
        done = asyncio.run(
            provision(
                address,
                network,
                service,
                device_type=device_type,
                timeout_s=timeout,
                backend=_backend[0] if _backend else None,
            )
        )
    except FirmwareError as error:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]refused[/red]: {error}")
        raise typer.Exit(1) from error
    how = "sealed to its key" if done.encrypted else "in clear (the device has no key)"
    Console(highlight=False, soft_wrap=True).print(
        f"device {done.device_id} registered; WiFi and MQTT settings written {how}"
    )
