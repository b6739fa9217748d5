"""A flood of unknown device ids cannot make the hub hammer the registry.

The hub reloads its device list on a clock (about once a second, cheap when nothing changed),
never because a message named an id it does not know: junk ids are dead-lettered and cost
no reload, and a device registered meanwhile is accepted without a restart.
"""

from __future__ import annotations

import time

from tests.conftest import MqttClientFactory
from tests.ingest.conftest import HubFactory, device, payload, wait_until


def test_unknown_ids_cost_no_reload_and_a_new_device_is_taken_up(
    hubs: HubFactory, mqtt_client: MqttClientFactory, unique_id: str
) -> None:
    known = f"{unique_id}-g1"
    hubs.devices(device(known))
    service = hubs.start()
    real_refresh = service.directory.refresh
    refreshes = 0

    def counting_refresh() -> bool:
        nonlocal refreshes
        refreshes += 1
        return real_refresh()

    service.directory.refresh = counting_refresh  # type: ignore[method-assign]
    publisher = mqtt_client()
    started = time.monotonic()
    flood = 3000
    for n in range(flood):
        publisher.publish(f"kota/v1/dev/{unique_id}-junk{n}/telemetry", payload({"a": 1}))
    wait_until(lambda: service.stats.deadletters["unknown_device"] >= flood, timeout_s=30)
    elapsed = time.monotonic() - started
    # The clock's reloads only: one a second (and one spare), whatever the flood's size.
    assert refreshes <= elapsed + 2, (refreshes, elapsed)

    newcomer = f"{unique_id}-new"
    hubs.devices(device(known), device(newcomer))
    accepted = service.stats.messages_accepted

    def newcomer_taken() -> bool:
        publisher.publish(f"kota/v1/dev/{newcomer}/telemetry", payload({"level_m": 1.0}))
        return service.stats.messages_accepted > accepted

    wait_until(newcomer_taken, timeout_s=15)
