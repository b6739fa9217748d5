"""Every contract violation goes to the dead-letter topic and measurement; ingest goes on."""

from __future__ import annotations

import json
import time
from collections import Counter

from tests.conftest import MqttClientFactory, RunningStack
from tests.ingest.conftest import HubFactory, device, payload, wait_until


def test_each_reason_reaches_topic_and_measurement(
    hubs: HubFactory,
    mqtt_client: MqttClientFactory,
    running_stack: RunningStack,
    influx_db: str,
    unique_id: str,
) -> None:
    gauge, retired, owned = f"{unique_id}-g1", f"{unique_id}-old", f"{unique_id}-owned"
    gateway = f"{unique_id}-gw"
    hubs.devices(
        device(gauge),
        device(retired, state="retired"),
        device(owned, gateway_id=gateway),
    )
    service = hubs.start()
    watcher = mqtt_client()
    watcher.keep_only(unique_id)
    watcher.subscribe("kota/v1/hub/deadletter")
    publisher = mqtt_client()
    now = time.time_ns() // 1_000_000
    dev = f"kota/v1/dev/{gauge}/telemetry"
    cases: list[tuple[str, str, bytes | str]] = [
        ("not_json", dev, b"\xff{not json"),
        ("not_object", dev, b"[1, 2, 3]"),
        ("wrong_type", dev, payload({"level_m": [1, 2]})),
        ("not_finite", dev, b'{"metrics": {"level_m": NaN}}'),
        ("not_finite", dev, b'{"metrics": {"level_m": 1e999}}'),
        ("unknown_device", f"kota/v1/dev/{unique_id}-nobody/telemetry", payload({"a": 1})),
        ("retired_device", f"kota/v1/dev/{retired}/telemetry", payload({"a": 1})),
        ("foreign_device", f"kota/v1/gw/{unique_id}-other/dev/{owned}/telemetry", payload({})),
        ("foreign_device", f"kota/v1/gw/{gateway}/dev/{gauge}/telemetry", payload({"a": 1})),
        ("ts_too_old", dev, payload({"a": 1}, ts=now - 8 * 24 * 3600 * 1000)),
        ("ts_in_future", dev, payload({"a": 1}, ts=now + 10 * 60 * 1000)),
        ("payload_too_large", dev, payload({"s": "x" * 200}) + " " * 70_000),
        ("too_many_metrics", dev, payload({f"m{i}": 1 for i in range(201)})),
        ("bad_metric_name", dev, payload({"Level": 1})),
        ("wrong_type", dev, payload({"level_m": "high"}, ts=now - 2000)),
        ("metric_not_in_type", dev, payload({"undeclared": 1.0}, ts=now - 1500)),
        ("bad_text", dev, b'{"metrics": {"level_m": 1.0}, "note": "\\ud800"}'),
        ("out_of_range", dev, payload({"level_m": 2**63})),
    ]
    for _, topic, body in cases:
        publisher.publish(topic, body)
    # Ingest goes on after all of that.
    publisher.publish(dev, payload({"level_m": 2.5}, ts=now - 1000))

    expected = Counter(reason for reason, _, _ in cases)
    messages = watcher.wait_for(len(cases), timeout_s=15)
    reports = [json.loads(m.payload) for m in messages]
    assert Counter(r["reason"] for r in reports) == expected
    for report, (reason, topic, _) in zip(reports, cases, strict=True):
        assert report["reason"] == reason
        assert report["topic"] == topic
        assert report["device"] == topic.split("/")[-2]
        assert report["detail"]
        assert "payload" in report or "payload_excerpt_b64" in report
    assert reports[0]["payload_excerpt_b64"]  # not UTF-8: sent as base64
    assert reports[1]["payload"] == "[1, 2, 3]"
    assert "payload" not in reports[11]  # 70 KB: only an excerpt

    def by_reason() -> Counter[str]:
        rows = running_stack.influx.rows(
            "SELECT count(payload_bytes) FROM deadletter GROUP BY reason", database=influx_db
        )
        return Counter({str(r["reason"]): int(r["count"]) for r in rows})

    # Two cases share reason and device (not_finite): each still has its own point.
    wait_until(lambda: sum(by_reason().values()) == len(cases), what="deadletter points")
    assert by_reason() == expected
    assert dict(service.stats.deadletters) == dict(expected)
    rows = running_stack.influx.rows("SELECT * FROM flood", database=influx_db)
    assert [r.get("level_m") for r in rows] == [2.5]
