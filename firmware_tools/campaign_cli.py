"""``kotahub firmware campaign create|start|pause|resume|status|rollback``.

``start`` and ``resume`` run the campaign in the foreground with a progress display until
it is done or paused (with ``--background`` they hand it to the daemon of ``kotahub run``);
``pause`` (from another terminal) makes a running one stop offering within a poll, and its
transfers resume where they were when it is resumed. Campaign state lives in
``campaigns.sqlite`` under the state folder, so a restarted hub (or a killed ``start``)
picks it up with ``resume``. The hub's CLI registers ``campaign_app`` under
``firmware`` and installs the runtime loader; exit status 1 with one line when refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.columns import Columns
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table

from firmware_tools.campaign_store import (
    CAMPAIGN_FILE,
    DEVICE_FINAL,
    Campaign,
    CampaignSettings,
    CampaignStore,
)
from firmware_tools.campaigns import (
    DEFAULT_WAVES,
    AlertGate,
    BrokerLogin,
    CampaignRunner,
    RegistryFleet,
    create_campaign,
)
from firmware_tools.campaigns import Progress as CampaignProgress
from firmware_tools.errors import FirmwareError
from firmware_tools.image_store import ImageStore
from firmware_tools.ota_sender import PreparedImage


@dataclass(frozen=True, slots=True, kw_only=True)
class CampaignRuntime:
    """What the campaign commands need from the settings."""

    store_dir: Path  # the image store
    state_dir: Path  # campaigns.sqlite lives here
    database_url: str  # the registry
    broker: BrokerLogin
    alerts: AlertGate | None = None  # the health gate's alerts (the hub's alert store)


CampaignRuntimeLoader = Callable[[Path | None], CampaignRuntime]
_loader: list[CampaignRuntimeLoader] = []

campaign_app = typer.Typer(
    help="OTA campaigns: staged waves with health gates, pause, resume, rollback.",
    no_args_is_help=True,
)
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Settings file.", envvar="KOTAHUB_CONFIG"),
]
CampaignArg = Annotated[str, typer.Argument(help="Campaign id.")]


def set_campaign_runtime_loader(loader: CampaignRuntimeLoader) -> None:
    """Install how ``--config`` becomes a CampaignRuntime (done by the hub's CLI)."""
    _loader[:] = [loader]


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


@contextmanager
def _refusals() -> Iterator[None]:
    """A FirmwareError is one red line and exit status 1, never a traceback."""
    try:
        yield
    except FirmwareError as error:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]refused[/red]: {error}")
        raise typer.Exit(1) from error


def _runtime(config: Path | None) -> CampaignRuntime:
    if not _loader:
        raise RuntimeError("no runtime loader installed (use the `kotahub` command)")
    return _loader[0](config)


@contextmanager
def _campaigns(runtime: CampaignRuntime) -> Iterator[CampaignStore]:
    store = CampaignStore(runtime.state_dir / CAMPAIGN_FILE)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _fleet(runtime: CampaignRuntime) -> Iterator[RegistryFleet]:
    from device_registry.database import open_database
    from device_registry.registry_service import RegistryService

    database = open_database(runtime.database_url)
    try:
        yield RegistryFleet(RegistryService(database))
    finally:
        database.close()


def _parse_waves(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as err:
        raise typer.BadParameter("waves are comma-separated percentages, e.g. 1,10,50,100") from err


@campaign_app.command("create")
def create(
    image: Annotated[str, typer.Argument(help="The image's SHA-256 (or a unique prefix).")],
    campaign_id: Annotated[str | None, typer.Option("--id", help="Campaign id.")] = None,
    waves: Annotated[
        str, typer.Option(help="Cumulative percentages of the fleet per wave.")
    ] = ",".join(f"{w:g}" for w in DEFAULT_WAVES),
    max_failure_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Pause within a wave above this.")
    ] = 0.2,
    min_success_rate: Annotated[
        float, typer.Option(min=0, max=1, help="The health gate after each wave.")
    ] = 0.9,
    online_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds a device has to come back on the new image.")
    ] = 60.0,
    devices_per_s: Annotated[float, typer.Option(min=0.01, help="New offers per second.")] = 20.0,
    max_concurrent: Annotated[int, typer.Option(min=1, help="Transfers at once.")] = 200,
    rate: Annotated[
        float, typer.Option(min=0, help="Bytes per second in all (0: no limit).")
    ] = 0.0,
    chunk_size: Annotated[int, typer.Option(min=256, max=262144)] = 16384,
    config: ConfigOption = None,
) -> None:
    """Make a campaign for every active device the image targets, split into waves."""
    runtime = _runtime(config)
    with _refusals(), _campaigns(runtime) as store, _fleet(runtime) as fleet:
        stored = ImageStore(runtime.store_dir).get(image)
        campaign = create_campaign(
            store,
            fleet,
            stored.manifest,
            campaign_id=campaign_id,
            waves=_parse_waves(waves),
            settings=CampaignSettings(
                max_failure_rate=max_failure_rate,
                min_success_rate=min_success_rate,
                online_timeout_s=online_timeout,
                devices_per_s=devices_per_s,
                max_concurrent=max_concurrent,
                rate_bytes_per_s=rate,
                chunk_size=chunk_size,
            ),
        )
        sizes = [len(store.devices(campaign.id, wave=w)) for w in range(len(campaign.waves))]
        _out().print(
            f"campaign {campaign.id}: version {campaign.version} to {sum(sizes)} devices,"
            f" waves of {', '.join(map(str, sizes))}; run it with"
            f" `kotahub firmware campaign start {campaign.id}`"
        )


def prepared_image(runtime: CampaignRuntime, campaign: Campaign) -> PreparedImage:
    """The campaign's image from the store, checked against a key the hub trusts, chunked."""
    images = ImageStore(runtime.store_dir)
    stored = images.get(campaign.image_sha256)
    images.verify(stored.path, stored.manifest)  # still signed by a key the hub trusts
    return PreparedImage.of(stored.manifest, stored.path.read_bytes(), campaign.settings.chunk_size)


def _check_startable(campaign: Campaign, *, resuming: bool) -> None:
    if resuming and campaign.state not in ("paused", "running"):
        raise FirmwareError(f"campaign {campaign.id} is {campaign.state}, not paused")
    if not resuming and campaign.state != "created":
        raise FirmwareError(
            f"campaign {campaign.id} is {campaign.state}: use resume to go on with it"
        )


def _hand_to_hub(store: CampaignStore, campaign: Campaign) -> None:
    """Mark it running for the campaign daemon of ``kotahub run``, and say so."""
    store.set_state(campaign.id, "running")
    _out().print(
        f"campaign {campaign.id} running: `kotahub run` carries it on"
        f" (watch it with `kotahub firmware campaign status {campaign.id}`)"
    )


def _run(campaign_id: str, config: Path | None, *, resuming: bool, background: bool) -> None:
    runtime = _runtime(config)
    with _refusals(), _campaigns(runtime) as store, _fleet(runtime) as fleet:
        campaign = store.get(campaign_id)
        _check_startable(campaign, resuming=resuming)
        prepared = prepared_image(runtime, campaign)
        if resuming and campaign.state == "paused":
            # The operator looked at what held it: alerts raised before now are accepted.
            store.restart_gate(campaign_id, campaign.current_wave)
        if background:
            _hand_to_hub(store, campaign)
            return
        holder = store.holder(campaign_id)
        if holder is not None:
            raise FirmwareError(f"campaign {campaign_id} is being run by {holder}")
        total = len(store.devices(campaign_id))
        console = _out()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task(f"{campaign_id}", total=total)

            def show(p: CampaignProgress) -> None:
                done = sum(n for state, n in p.counts.items() if state in DEVICE_FINAL)
                words = ", ".join(f"{n} {state}" for state, n in sorted(p.counts.items()))
                bar.update(
                    task,
                    completed=done,
                    description=f"{campaign_id} wave {p.wave + 1}/{len(p.campaign.waves)}: {words}",
                )

            runner = CampaignRunner(
                store, fleet, prepared, runtime.broker, progress=show, alerts=runtime.alerts
            )
            try:
                result = runner.run(campaign_id)
            except KeyboardInterrupt:
                runner.stop.set()
                store.set_state(campaign_id, "paused", reason="interrupted")
                result = store.get(campaign_id)
        _print_result(result)


def _print_result(campaign: Campaign) -> None:
    console = _out()
    if campaign.state == "done":
        console.print(f"campaign {campaign.id} [green]done[/green]")
    else:
        console.print(
            f"campaign {campaign.id} [yellow]{campaign.state}[/yellow]"
            + (f": {campaign.reason}" if campaign.reason else "")
        )


BackgroundOption = Annotated[
    bool,
    typer.Option(
        "--background",
        "-b",
        help="Leave it to the campaign daemon of `kotahub run` instead of this terminal.",
    ),
]


@campaign_app.command("start")
def start(
    campaign_id: CampaignArg, background: BackgroundOption = False, config: ConfigOption = None
) -> None:
    """Run a new campaign in the foreground until it is done or paused (or hand it to the hub)."""
    _run(campaign_id, config, resuming=False, background=background)


@campaign_app.command("resume")
def resume(
    campaign_id: CampaignArg, background: BackgroundOption = False, config: ConfigOption = None
) -> None:
    """Go on with a paused (or interrupted) campaign where it stopped."""
    _run(campaign_id, config, resuming=True, background=background)


@campaign_app.command("pause")
def pause(campaign_id: CampaignArg, config: ConfigOption = None) -> None:
    """Pause a campaign: a running ``start`` stops offering within a second."""
    runtime = _runtime(config)
    with _refusals(), _campaigns(runtime) as store:
        campaign = store.get(campaign_id)
        if campaign.state not in ("running", "created"):
            raise FirmwareError(f"campaign {campaign_id} is {campaign.state}")
        store.set_state(campaign_id, "paused", reason="paused by the operator")
        _out().print(f"campaign {campaign_id} paused")


@campaign_app.command("rollback")
def rollback(campaign_id: CampaignArg, config: ConfigOption = None) -> None:
    """Tell every device that installed the campaign's image to go back to its previous one."""
    runtime = _runtime(config)
    with _refusals(), _campaigns(runtime) as store, _fleet(runtime) as fleet:
        campaign = store.get(campaign_id)
        stored = ImageStore(runtime.store_dir).get(campaign.image_sha256)
        prepared = PreparedImage.of(
            stored.manifest, stored.path.read_bytes(), campaign.settings.chunk_size
        )
        result = CampaignRunner(store, fleet, prepared, runtime.broker).rollback(campaign_id)
        _print_result(result)


def _bar(counts: dict[str, int]) -> Columns:
    """A bar of the devices that finished, and how many of how many."""
    total = sum(counts.values())
    done = sum(n for state, n in counts.items() if state in DEVICE_FINAL)
    return Columns([ProgressBar(total=max(total, 1), completed=done, width=20), f"{done}/{total}"])


@campaign_app.command("status")
def status(
    campaign_id: Annotated[
        str | None, typer.Argument(help="Campaign id (all if left out).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """One campaign's waves and device states, or every campaign."""
    runtime = _runtime(config)
    with _refusals(), _campaigns(runtime) as store:
        campaigns = [store.get(campaign_id)] if campaign_id else store.all()
        table = Table("campaign", "version", "state", "wave", "progress", "devices", "reason")
        for c in campaigns:
            counts = store.counts(c.id)
            words = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
            wave = f"{min(c.current_wave + 1, len(c.waves))}/{len(c.waves)}"
            state = c.state + (f" ({store.holder(c.id)})" if store.holder(c.id) else "")
            table.add_row(c.id, c.version, state, wave, _bar(counts), words, c.reason or "")
        _out().print(table)
        if campaign_id:
            waves = Table("wave", "share", "progress", "devices", "states")
            campaign = campaigns[0]
            for index, share in enumerate(campaign.waves):
                devices = store.devices(campaign.id, wave=index)
                states: dict[str, int] = {}
                for d in devices:
                    states[d.state] = states.get(d.state, 0) + 1
                words = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
                waves.add_row(
                    str(index + 1), f"{share:g} %", _bar(states), str(len(devices)), words
                )
            _out().print(waves)
