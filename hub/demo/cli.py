"""``kotahub demo``: run the simulated city; ``kotahub demo fault ...`` / ``heal`` act on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live

from hub.demo.control import ControlError, FaultRequest, parse_fault, send_command
from hub.settings import ConfigError, Settings, load_settings

demo_app = typer.Typer(
    help="A simulated Semarang: stack, fleet, simulators, agents, hub and a live summary.",
    invoke_without_command=True,
)
console = Console()
err_console = Console(stderr=True)
REFRESH_S = 1.0
PLAIN_EVERY_S = 10.0

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Settings file (default: $KOTAHUB_CONFIG, else ./kotahub.toml if present).",
        envvar="KOTAHUB_CONFIG",
        show_envvar=False,
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[red]error[/red]: {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as err:
        raise _fail(f"configuration: {err}") from err


@demo_app.callback()
def demo(
    ctx: typer.Context,
    speed: Annotated[
        float, typer.Option("--speed", min=0.1, max=3600, help="Simulated time x real time.")
    ] = 60.0,
    scale: Annotated[
        str, typer.Option("--scale", help="sample (a few hundred devices) or city (full size).")
    ] = "sample",
    keep_stack: Annotated[
        bool, typer.Option("--keep-stack", help="Leave Mosquitto and InfluxDB running at exit.")
    ] = False,
    fleet_file: Annotated[
        Path | None, typer.Option("--fleet-file", help="A fleet data file of your own.")
    ] = None,
    first_port: Annotated[
        int | None,
        typer.Option(
            "--first-port", min=1024, max=65000, help="First port of the simulated servers."
        ),
    ] = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="A summary line every 10 s instead of the live view.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run the demo until Ctrl-C; stops everything it started (the stack unless --keep-stack)."""
    if ctx.invoked_subcommand is not None:
        return
    if scale not in ("sample", "city"):
        raise _fail(f"--scale: {scale!r} is not sample or city")
    from hub.demo.runner import DemoOptions

    settings = _settings(config)
    options = DemoOptions(
        speed=speed,
        scale=scale,  # type: ignore[arg-type]
        keep_stack=keep_stack,
        fleet_file=fleet_file,
        first_port=first_port,
    )
    # The log goes to a file: lines on the terminal would tear the live summary.
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        filename=str(settings.state_dir / "demo.log"),
    )
    code = asyncio.run(_run(settings, options, plain=plain))
    if code:
        raise typer.Exit(code)


async def _run(settings: Settings, options: Any, *, plain: bool) -> int:
    from hub.demo.runner import DemoRunner
    from hub.demo.summary import render

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    status = console.status("starting the demo...")
    status.start()
    runner = DemoRunner(settings, options, progress=lambda msg: status.update(f"{msg}..."))
    start = asyncio.create_task(runner.start())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({start, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            start.cancel()
            with _quiet():
                await start
            return 130
        try:
            start.result()
        except Exception as err:
            status.stop()
            err_console.print(
                f"[red]kotahub demo cannot start[/red]: {_one_line(err)}",
                highlight=False,
                soft_wrap=True,
            )
            return 2
        status.stop()
        fleet = runner.fleet
        if fleet is not None:
            how = "registered now" if fleet.registered_now else "already registered, kept"
            areas = len({d.kecamatan for d in fleet.devices})
            console.print(
                f"fleet: {len(fleet.devices):,} devices in {areas} areas, "
                f"{len(fleet.gateways)} gateways ({how})",
                highlight=False,
            )
        if runner.sign_in_link:
            console.print(f"technician page sign-in: {runner.sign_in_link}", soft_wrap=True)
        console.print("Ctrl-C stops the demo.", style="dim")
        if plain:
            while not stop.is_set():
                console.print(_plain_line(runner.snapshot()), highlight=False, soft_wrap=True)
                with _quiet():
                    await asyncio.wait_for(stop.wait(), PLAIN_EVERY_S)
        else:
            with Live(render(runner.snapshot()), console=console, auto_refresh=False) as live:
                while not stop.is_set():
                    with _quiet():
                        await asyncio.wait_for(stop.wait(), REFRESH_S)
                    live.update(render(runner.snapshot()), refresh=True)
        return 0
    finally:
        status.stop()
        stopper.cancel()
        console.print("stopping the demo...", style="dim")
        await runner.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stopped = ", ".join(runner.stopped_parts) or "nothing of the stack (kept or not ours)"
        console.print(f"demo stopped; stack parts stopped: {stopped}", highlight=False)


def _quiet() -> contextlib.suppress:
    """Suppress the timeouts and cancellations of the waits above."""
    return contextlib.suppress(TimeoutError, asyncio.CancelledError)


def _one_line(err: BaseException) -> str:
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(_one_line(e) for e in err.exceptions)
    text = " ".join(str(err).split()) or type(err).__name__
    return text


def _plain_line(snap: Any) -> str:
    return (
        f"in {snap.messages_in_per_s:.1f}/s written {snap.written_per_s:.1f}/s "
        f"online {snap.devices_online}/{snap.devices_total} "
        f"dead-letters {snap.deadletters} WAL {snap.wal_depth_bytes} B "
        f"faults: {'; '.join(snap.faults) or 'none'}"
    )


def _send(config: Path | None, message: dict[str, Any]) -> dict[str, Any]:
    settings = _settings(config)
    try:
        return send_command(settings.state_dir, message)
    except ControlError as err:
        raise _fail(str(err)) from err


@demo_app.command("fault")
def fault(
    name: Annotated[
        str,
        typer.Argument(
            help="device-dies ID, gateway-cut GW, flood-rises AREA, broker-restart, "
            "influx-outage DURATION"
        ),
    ],
    argument: Annotated[str | None, typer.Argument(help="What the fault acts on.")] = None,
    config: ConfigOption = None,
) -> None:
    """Inflict a fault on the running demo (exit 2 with one line when it cannot)."""
    try:
        request: FaultRequest = parse_fault(name, argument)
    except ControlError as err:
        raise _fail(str(err)) from err
    reply = _send(config, request.as_message())
    console.print(reply.get("message", "done"), highlight=False, soft_wrap=True)


@demo_app.command("heal")
def heal(config: ConfigOption = None) -> None:
    """End every fault of the running demo."""
    reply = _send(config, {"command": "heal"})
    console.print(reply.get("message", "healed"), highlight=False, soft_wrap=True)


@demo_app.command("status")
def status(
    as_json: Annotated[bool, typer.Option("--json", help="The whole summary as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Print the running demo's summary once."""
    reply = _send(config, {"command": "status"})
    snap = reply.get("snapshot", {})
    if as_json:
        print(json.dumps(snap))
        return
    console.print(
        f"in {snap.get('messages_in_per_s', 0):.1f}/s, "
        f"written {snap.get('written_per_s', 0):.1f}/s, "
        f"online {snap.get('devices_online', 0)}/{snap.get('devices_total', 0)}, "
        f"faults: {'; '.join(snap.get('faults', [])) or 'none'}",
        highlight=False,
    )
