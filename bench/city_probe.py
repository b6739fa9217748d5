"""The city bench's latency probe: trackers publish stamped fixes, a poller finds them.

Each probe tracker publishes a fix stamped with its publish time; a poller asks InfluxDB
every 200 ms, so publish -> queryable is an upper bound (it includes up to one poll).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.city_influx import PROBE_PREFIX
from hub.influxql import InfluxQL
from hub.local_stack import mqtt_password
from hub.settings import Settings


class LatencyProbe:
    """Probe trackers publish stamped with the publish time; a poller finds them in InfluxDB."""

    def __init__(self, settings: Settings, probes: int) -> None:
        self.settings = settings
        self.ids = [f"{PROBE_PREFIX}-{i}" for i in range(probes)]
        self.sent: dict[int, float] = {}
        self.latencies_ms: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._influx = InfluxQL(settings.influx.url, timeout_s=10.0)
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="bench-city-probe",
            protocol=mqtt.MQTTv311,
        )
        self._client.username_pw_set(settings.mqtt.username, mqtt_password(settings))
        self._threads = [
            threading.Thread(target=self._publish, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]

    def start(self) -> None:
        """Connect and start both threads."""
        self._client.connect(self.settings.mqtt.host, self.settings.mqtt.port, keepalive=60)
        self._client.loop_start()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop publishing and polling."""
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        self._client.disconnect()
        self._client.loop_stop()
        self._influx.close()

    def _publish(self) -> None:
        last = 0
        index = 0
        while not self._stop.wait(1.0 / max(1, len(self.ids))):
            ts = max(int(time.time() * 1000), last + 1)
            last = ts
            device = self.ids[index % len(self.ids)]
            index += 1
            payload = json.dumps(
                {"ts": ts, "metrics": {"lat": -6.98, "lon": 110.41, "speed_kmh": 0.0}}
            )
            with self._lock:
                self.sent[ts] = time.time() * 1000
            self._client.publish(f"kota/v1/dev/{device}/telemetry", payload, qos=1)

    def _poll(self) -> None:
        database = self.settings.influx.database
        while not self._stop.wait(0.2):
            with self._lock:
                pending = sorted(self.sent)
            if not pending:
                continue
            try:
                series = self._influx.query(
                    f"SELECT lat FROM gps WHERE device_id =~ /^{PROBE_PREFIX}-/ "
                    f"AND time >= {pending[0]}ms",
                    database=database,
                )
            except Exception:  # a failed poll is retried at the next tick
                continue
            now = time.time() * 1000
            with self._lock:
                for item in series:
                    for row in item.values:
                        ts = _epoch_ms(row[0])
                        sent = self.sent.pop(ts, None)
                        if sent is not None:
                            self.latencies_ms.append(now - sent)


def _epoch_ms(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value)
    from datetime import datetime

    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)
