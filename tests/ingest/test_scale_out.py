"""Two hub workers share one shared subscription: every message is written exactly once."""

from __future__ import annotations

import time

import pytest

from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, level_points, payload, wait_until


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_two_workers_write_every_message_exactly_once(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
    protocol: str,
) -> None:
    gauges = [f"{unique_id}-g{i}" for i in range(20)]
    hubs.devices(*(device(g) for g in gauges))
    group = f"g{unique_id}"
    workers = [
        hubs.start(name, shared_group=group, mqtt_protocol=protocol) for name in ("w1", "w2")
    ]
    publisher = mqtt_client()
    base = time.time_ns() // 1_000_000 - 300_000
    sent = 0
    for seq in range(30):
        for index, gauge in enumerate(gauges):
            # Distinct series and times: an overwrite could not hide a lost message.
            body = payload({"level_m": float(seq), "n": float(index)}, ts=base + seq, seq=seq)
            publisher.client.publish(f"kota/v1/dev/{gauge}/telemetry", body, qos=1)
            sent += 1
    publisher.publish(f"kota/v1/dev/{gauges[0]}/event", payload({"done": True}))

    wait_until(lambda: sum(w.stats.messages_in for w in workers) == sent + 1, what="all in")

    wait_until(lambda: level_points(running_stack, influx_db) == sent, what="every point written")
    # Each message went to exactly one worker: the counters add up to what was sent,
    # and both workers took part.
    accepted = [w.stats.messages_accepted for w in workers]
    assert sum(accepted) == sent + 1
    assert min(accepted) > 0
    assert sum(w.stats.deadletters.total() for w in workers) == 0
    per_device = running_stack.influx.rows(
        "SELECT count(level_m) FROM flood GROUP BY device_id", database=influx_db
    )
    assert sorted(r["count"] for r in per_device) == [30] * len(gauges)
