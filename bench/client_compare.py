"""``--clients-compare``: drain the same backlog with other MQTT client set-ups.

The hub's MQTT client was chosen by measurement, not by reputation. Each set-up drains
a fresh backlog queued for its persistent session on the same broker:

* paho-mqtt with MQTT v5 (what the hub speaks: shared subscriptions, session expiry);
* paho-mqtt with MQTT 3.1.1 (no per-message v5 properties to decode);
* gmqtt (asyncio) with ``optimistic_acknowledgement=False``, i.e. PUBACK after the
  handler, the only way it can acknowledge after an fsync (skipped when not installed:
  ``pip install gmqtt==0.8.0``);
* ``mosquitto_sub`` (the C libmosquitto client): what the broker itself can deliver to
  one connection.

The reference of ``bench/ingest.py`` (``IntakeDrain``, the hub's own intake) is measured
there, not here.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from bench.bench_stack import BenchError, BenchStack
from bench.broker_drain import TELEMETRY_FILTER, DrainResult, PahoDrain, end_session
from hub.ingest.mqtt_intake import IntakeOptions

if TYPE_CHECKING:
    from bench.ingest import Options

COMPARE_ROUNDS = 4


def _mosquitto_sub_drain(stack: BenchStack, opts: Options, ts_base_ms: int) -> DrainResult:
    from bench.ingest import publish_backlog

    binary = shutil.which("mosquitto_sub")
    if binary is None:
        raise BenchError("mosquitto_sub not found: install the Debian package mosquitto-clients")
    base = [
        binary,
        *("-h", stack.mqtt_host, "-p", str(stack.mqtt_port)),
        *("-u", stack.username, "-P", stack.password, "-i", "bench-drain-c"),
        *("-q", "1", "-V", "mqttv5", "-t", TELEMETRY_FILTER),
    ]
    # First connect creates the persistent session (-c, expiry 1 h) and leaves.
    subprocess.run(
        [*base, "-c", "-x", "3600", "-W", "1"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    run = publish_backlog(stack, opts, ts_base_ms, "bench-pub-cmp-c", rounds=COMPARE_ROUNDS)
    start = time.perf_counter()
    subprocess.run(
        [*base, "-c", "-x", "3600", "-C", str(run.acked)],
        stdout=subprocess.DEVNULL,
        timeout=600,
        check=True,
    )
    seconds = time.perf_counter() - start
    # A clean connect with expiry 0 discards the session.
    subprocess.run([*base, "-x", "0", "-W", "1"], capture_output=True, timeout=30, check=False)
    return DrainResult(
        client="mosquitto_sub (C libmosquitto), QoS 1, MQTT v5",
        messages=run.acked,
        seconds=seconds,
    )


def compare_clients(stack: BenchStack, opts: Options, ts_base_ms: int) -> list[DrainResult]:
    """Drain rates of the other client set-ups, each on its own backlog."""
    from bench.ingest import publish_backlog

    results = []
    for protocol in (mqtt.MQTTv5, mqtt.MQTTv311):
        drain = PahoDrain(
            host=stack.mqtt_host,
            port=stack.mqtt_port,
            username=stack.username,
            password=stack.password,
            client_id=f"bench-drain-cmp-{int(protocol)}",
            protocol=protocol,
        )
        drain.open_session()
        run = publish_backlog(
            stack, opts, ts_base_ms, f"bench-pub-cmp-{int(protocol)}", rounds=COMPARE_ROUNDS
        )
        results.append(drain.drain(run.acked, timeout_s=600))
    gmqtt = _gmqtt_drain(stack, opts, ts_base_ms)
    if gmqtt is not None:
        results.append(gmqtt)
    results.append(_mosquitto_sub_drain(stack, opts, ts_base_ms))
    return results


def _gmqtt_drain(stack: BenchStack, opts: Options, ts_base_ms: int) -> DrainResult | None:
    """gmqtt 0.8, PUBACK after its (async) handler returns; None when gmqtt is missing."""
    try:
        import gmqtt  # type: ignore[import-untyped]
    except ImportError:  # installed by the dev extra; a bare install skips this client
        return None
    from bench.ingest import publish_backlog

    client_id = "bench-drain-cmp-gmqtt"

    async def session(expected: int) -> float:
        received = 0
        done = asyncio.Event()
        client = gmqtt.Client(
            client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=3600,
        )

        async def on_message(*_args: object) -> int:
            nonlocal received
            received += 1
            if received >= expected:
                done.set()
            return 0  # the PUBACK reason code: success

        client.on_message = on_message
        client.set_auth_credentials(stack.username, stack.password)
        start = time.perf_counter()
        await client.connect(stack.mqtt_host, stack.mqtt_port, version=gmqtt.constants.MQTTv311)
        if expected == 0:
            client.subscribe(TELEMETRY_FILTER, qos=1)
            await asyncio.sleep(1.0)  # the SUBACK
        else:
            await asyncio.wait_for(done.wait(), 600)
        seconds = time.perf_counter() - start
        await client.disconnect()
        return seconds

    asyncio.run(session(0))
    run = publish_backlog(stack, opts, ts_base_ms, "bench-pub-cmp-gmqtt", rounds=COMPARE_ROUNDS)
    seconds = asyncio.run(session(run.acked))
    end_session(
        IntakeOptions(
            host=stack.mqtt_host,
            port=stack.mqtt_port,
            client_id=client_id,
            username=stack.username,
            password=stack.password,
            topics=[],
        )
    )
    return DrainResult(
        client="gmqtt 0.8, QoS 1, MQTT 3.1.1, PUBACK after the handler",
        messages=run.acked,
        seconds=seconds,
    )
