"""The city bench's children: one part of the demo each (hub, simulators, agents).

A child runs its part at real speed until SIGTERM, then writes what it counted to
``stats-NAME.json``. ``SNAPSHOT`` (SIGUSR1) makes the hub and the agents write their
counters at once (the measuring window's ends); ``GO_DARK`` (SIGUSR2) kills every device
of a simulator child on its fault board (the end of the window, so that no poll is cut
half-way when the simulators stop).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from drivers.simulation import failed_polls, produced_points
from hub.settings import load_settings

READY_TIMEOUT_S = 300.0
SNAPSHOT = signal.SIGUSR1  # hub, agents: write the counters now (the window's ends)
GO_DARK = signal.SIGUSR2  # simulators: every device dies (the end of the window)


def run_role(
    role: str,
    config: Path,
    out_dir: Path,
    fleet_file: Path | None,
    scale: str,
    speed: float,
    shard: tuple[int, int] = (0, 1),
) -> None:
    """A child process: one part of the demo (at real speed by default) until SIGTERM."""
    name = role if role == "hub" else f"{role}-{shard[0]}"
    import logging

    from hub.demo.runner import DemoOptions, DemoRunner

    settings = load_settings(config)
    logging.basicConfig(
        level=logging.WARNING,
        filename=str(out_dir / f"{name}.log"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    options = DemoOptions(
        speed=speed,
        scale=scale,  # type: ignore[arg-type]
        manage_stack=False,
        with_api=False,
        fleet_file=fleet_file,
        parts=frozenset({role}),
        sim_shard=shard,
        agent_shard=shard,
    )

    if role != "hub":
        # Started with the hub to import meanwhile; nothing is published before the hub's
        # persistent session exists (what comes before it would be lost, as it should).
        from hub.demo.fleet import all_simulators

        all_simulators()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (out_dir / "ready-hub").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    async def main() -> None:
        runner = DemoRunner(settings, options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        snapshots = iter(range(1_000_000))

        def snapshot() -> None:
            path = out_dir / f"snap-{name}-{next(snapshots)}.json"
            path.with_suffix(".tmp").write_text(json.dumps(role_stats(runner, role)))
            path.with_suffix(".tmp").rename(path)

        def go_dark() -> None:
            snapshot()  # the failed polls before the dark end: the window's own
            for device in runner.fleet.devices if runner.fleet else ():
                runner.board.device_dies(device.device_id)

        loop.add_signal_handler(SNAPSHOT, snapshot)
        loop.add_signal_handler(GO_DARK, go_dark)
        await runner.start()
        (out_dir / f"ready-{name}").write_text(str(os.getpid()))
        await stop.wait()
        if role != "simulators":
            stats = role_stats(runner, role)
        await runner.stop()
        if role == "simulators":
            stats = role_stats(runner, role)  # after the stop: the open polls are counted
        (out_dir / f"stats-{name}.json").write_text(json.dumps(stats))

    asyncio.run(main())


def _merged(counts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in counts:
        for key, count in part.items():
            out[key] = out.get(key, 0) + count
    return out


def role_stats(runner: Any, role: str) -> dict[str, Any]:
    """What a child reports at its end: readings produced, polled, written."""
    if role == "simulators":
        # By measurement: an ATCS controller's poll also makes its detectors' points.
        produced, by_device = produced_points(runner._simulators)
        return {
            "produced": produced,
            "by_device": by_device,
            # A family's own devices (an ATCS poll's detector points count apart, above).
            "by_family": {f: s.stats.by_device() for f, s in runner._simulators.items()},
            "polls_failed": failed_polls(runner._simulators),
        }
    if role == "agents":
        return {
            "readings": sum(a.stats.readings for a in runner._agents),
            "polls": sum(a.stats.polls for a in runner._agents),
            "polls_failed": sum(a.stats.failures for a in runner._agents),
            "late_polls": sum(a.stats.late_polls for a in runner._agents),
            "patient_polls": sum(a.stats.patient_polls for a in runner._agents),
            "failed_by": _merged([a.stats.failed_by for a in runner._agents]),
        }
    stats = runner._ingest.stats
    return {
        "messages_in": stats.messages_in,
        "lines_written": stats.lines_written,
        "deadletters": dict(stats.deadletters),
    }
