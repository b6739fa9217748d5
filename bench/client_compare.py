"""``--clients-compare``: drain the same backlog with other MQTT client set-ups.

The hub's MQTT client was chosen by measurement, not by reputation. Each set-up drains
a fresh backlog queued for its persistent session on the same broker:

* paho-mqtt with MQTT v5 (what the hub speaks: shared subscriptions, session expiry);
* paho-mqtt with MQTT 3.1.1 (no per-message v5 properties to decode);
* ``mosquitto_sub`` (the C libmosquitto client): what the broker itself can deliver to
  one connection, i.e. the ceiling that no Python client reaches.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from bench.bench_stack import BenchError, BenchStack
from bench.broker_drain import TELEMETRY_FILTER, DrainResult, PahoDrain

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
    results.append(_mosquitto_sub_drain(stack, opts, ts_base_ms))
    return results
