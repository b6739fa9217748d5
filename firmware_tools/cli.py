"""``kotahub firmware``: make the signing key, sign images, trust keys, store and list images.

Signing happens on the operator's workstation, where the private key lives (``keygen``,
``sign``); the hub's store only ever sees public keys (``trust``) and signed images
(``upload``). The hub's CLI registers ``firmware_app`` and installs a loader that turns
``--config`` into a ``FirmwareRuntime``; firmware_tools never imports the hub. Exit codes:
2 for invalid input, 1 when the store refuses an image (the reason is one line).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from firmware_tools.errors import FirmwareError
from firmware_tools.image_manifest import manifest_path_for, sign_image
from firmware_tools.image_store import ImageStore
from firmware_tools.signing import load_private_key, make_key_pair

DEFAULT_KEY_FOLDER = Path("~/.config/kotahub/firmware")


@dataclass(frozen=True, slots=True, kw_only=True)
class FirmwareRuntime:
    """What the firmware commands need from the settings."""

    store_dir: Path
    database_url: str
    max_image_bytes: int = 64 << 20


RuntimeLoader = Callable[[Path | None], FirmwareRuntime]
_loader: list[RuntimeLoader] = []

firmware_app = typer.Typer(
    help="Firmware images: signing key, signed images, the hub's image store.",
    no_args_is_help=True,
)


def add_subcommands() -> None:
    """Campaigns and BLE provisioning join ``kotahub firmware`` (their modules are heavier)."""
    from firmware_tools.campaign_cli import campaign_app
    from firmware_tools.provisioning_cli import provision_command

    firmware_app.add_typer(campaign_app, name="campaign")
    firmware_app.command("provision")(provision_command)


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file.", envvar="KOTAHUB_CONFIG"),
]


def set_runtime_loader(loader: RuntimeLoader) -> None:
    """Install how ``--config`` becomes a FirmwareRuntime (done by the hub's CLI)."""
    _loader[:] = [loader]


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def _refusals() -> Iterator[None]:
    """A FirmwareError is one red line and exit status 1, never a traceback."""
    try:
        yield
    except FirmwareError as error:
        _err().print(f"[red]refused[/red]: {error}")
        raise typer.Exit(1) from error


def _store(config: Path | None) -> tuple[ImageStore, FirmwareRuntime]:
    if not _loader:
        raise RuntimeError("no runtime loader installed (use the `kotahub` command)")
    runtime = _loader[0](config)
    return ImageStore(runtime.store_dir, max_image_bytes=runtime.max_image_bytes), runtime


def _registry_types(database_url: str) -> list[str]:
    from device_registry.database import open_database
    from device_registry.registry_service import RegistryService

    database = open_database(database_url)
    try:
        return [t.name for t in RegistryService(database).list_types()]
    finally:
        database.close()


@firmware_app.command("keygen")
def keygen(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the key pair.")
    ] = DEFAULT_KEY_FOLDER,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Make the operator's Ed25519 signing key pair (the private half 0600, never printed)."""
    with _refusals():
        pair = make_key_pair(out.expanduser(), overwrite=force)
    console = _out()
    console.print(f"private key: {pair.private_path} (mode 600: keep it on this machine only)")
    console.print(f"public key:  {pair.public_path}")
    console.print(f"key id:      {pair.key_id}")
    console.print(f"on the hub:  kotahub firmware trust {pair.public_path}")


@firmware_app.command("sign")
def sign(
    image: Annotated[Path, typer.Argument(help="The firmware image file.")],
    version: Annotated[str, typer.Option("--version", help="e.g. 2.4.1")],
    device_type: Annotated[
        list[str], typer.Option("--device-type", help="A target device type; repeatable.")
    ],
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Only these models; repeatable.")
    ] = None,
    key: Annotated[Path, typer.Option("--key", help="The private key.")] = DEFAULT_KEY_FOLDER
    / "kotahub-firmware.key",
    out: Annotated[
        Path | None, typer.Option("--out", help="Manifest file (default: IMAGE.kfw.json).")
    ] = None,
) -> None:
    """Sign an image for its target device types: writes its manifest beside it."""
    with _refusals():
        private_key = load_private_key(key.expanduser())
        manifest = sign_image(
            image, private_key, version=version, device_types=device_type, models=model or ()
        )
        target = out or manifest_path_for(image)
        try:
            target.write_bytes(manifest.to_json())
        except OSError as err:
            raise FirmwareError(f"cannot write {target}: {err.strerror}") from err
    _out().print(
        f"signed {image.name} {manifest.version} for {', '.join(manifest.device_types)} "
        f"(sha256 {manifest.sha256[:12]}..., key {manifest.key_id}): {target}"
    )


@firmware_app.command("trust")
def trust(
    public_key: Annotated[Path, typer.Argument(help="A public key file (.pub).")],
    config: ConfigOption = None,
) -> None:
    """Trust a public key's signatures in the hub's image store."""
    store, _runtime = _store(config)
    with _refusals():
        name = store.trust(public_key)
    _out().print(f"trusted key {name} ({public_key})")


@firmware_app.command("upload")
def upload(
    image: Annotated[Path, typer.Argument(help="The signed image.")],
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Default: IMAGE.kfw.json beside it.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Verify a signed image (hash, signature, targets) and store it by content hash."""
    store, runtime = _store(config)
    with _refusals():
        known = _registry_types(runtime.database_url)
        result = store.add(image, manifest, known_device_types=known)
    stored = result.image.manifest
    verb = "stored" if result.created else "already stored"
    _out().print(
        f"{verb}: {stored.version} for {', '.join(stored.device_types)}, "
        f"{stored.size} bytes, sha256 {stored.sha256}"
    )


@firmware_app.command("list")
def list_images(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """The images in the hub's store."""
    store, _runtime = _store(config)
    with _refusals():
        images = store.list()
    if as_json:
        rows = [image.manifest.model_dump(mode="json") for image in images]
        _out().print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode(), markup=False)
        return
    if not images:
        _out().print("no images stored yet: kotahub firmware upload IMAGE")
        return
    table = Table("version", "device types", "models", "bytes", "sha256", "key")
    for image in images:
        m = image.manifest
        table.add_row(
            m.version,
            ", ".join(m.device_types),
            ", ".join(m.models) or "any",
            str(m.size),
            m.sha256[:16],
            m.key_id,
        )
    _out().print(table)
