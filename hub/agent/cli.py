"""``kotahub agent`` and ``kotahub run``: start the agent for one gateway until interrupted.

A fatal task failure (see ``hub.agent.task_supervisor``) ends the process with status 1
after an orderly stop, so a service manager restarts it; start-up errors say why.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from pathlib import Path

from device_registry.directory import DeviceDirectory, DirectoryError, FileDeviceDirectory
from hub.agent.agent import Agent, AgentFatalError
from hub.agent.registry_feed import RegistryFeedDirectory, feed_config
from hub.settings import ConfigError, Settings


class AgentStartError(Exception):
    """The agent cannot start: the message says why."""


def devices_file(settings: Settings) -> Path:
    """The device list the agent reads when ``agent.registry_url`` is not set."""
    return settings.agent.devices_file or settings.state_dir / "devices.json"


def build_agent(settings: Settings, gateway_id: str | None) -> Agent:
    """An agent for the gateway, over the file directory; errors name the cause."""
    gateway = gateway_id or settings.agent.gateway_id
    if not gateway:
        raise AgentStartError("no gateway: pass --gateway or set agent.gateway_id")
    directory: DeviceDirectory
    try:
        if settings.agent.registry_url is not None:
            # A gateway on another machine: the registry API, with the list cached on disk.
            directory = RegistryFeedDirectory(feed_config(settings, gateway))
        else:
            directory = FileDeviceDirectory(devices_file(settings))
    except (DirectoryError, ConfigError) as err:
        raise AgentStartError(str(err)) from err
    try:
        agent = Agent(settings=settings, gateway_id=gateway, directory=directory)
    except sqlite3.DatabaseError as err:
        # The outbox file: damaged, or its folder not writable. Name it, do not guess.
        buffer_dir = settings.agent.buffer_dir or settings.state_dir / "agent"
        outbox = Path(buffer_dir) / f"outbox-{gateway}.sqlite3"
        raise AgentStartError(
            f"outbox {outbox} cannot be opened ({err}); if it is damaged, move it aside"
        ) from err
    return agent


async def run_until_signal(agent: Agent) -> None:
    """Run the agent until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_agent(settings: Settings, gateway_id: str | None) -> Agent:
    """Build the agent, log to stderr, run it until interrupted; return it for its stats.

    Exits the process with status 1 when a task failed fatally (the log says which, why).
    """
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    agent = build_agent(settings, gateway_id)
    devices = agent.directory.devices_for_gateway(agent.gateway_id)
    logging.getLogger(__name__).info(
        "agent %s: %d device(s) assigned, broker %s:%d%s",
        agent.gateway_id,
        len(devices),
        agent.publisher.host,
        agent.publisher.port,
        " (TLS)" if settings.mqtt.tls else "",
    )
    try:
        asyncio.run(run_until_signal(agent))
    except AgentFatalError as err:
        logging.getLogger(__name__).critical("%s; exiting with status 1", err)
        raise SystemExit(1) from err
    finally:
        if isinstance(agent.directory, RegistryFeedDirectory):
            agent.directory.close()
    return agent
