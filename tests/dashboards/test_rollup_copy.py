"""The query benchmark's copied history: the rolled-up day, the same each day before it."""

from __future__ import annotations

import dataclasses

import httpx

from bench.bulk_write import Target
from bench.rollup_copy import DAY_MS, copy_hour_rollups
from hub.influx_rollups import ROLLUP_LEVELS, RollupSetup, http_writer
from tests.conftest import RunningStack
from tests.test_influx_rollups import FIELDS  # the flood fields of every kind

HOUR_MS = 3_600_000
DAY0 = 1_796_000_000_000 - 1_796_000_000_000 % DAY_MS


def test_the_days_before_hold_the_rolled_up_day(
    running_stack: RunningStack, influx_db: str
) -> None:
    url = running_stack.settings.influx.url
    setup = RollupSetup(
        running_stack.influx,
        database=influx_db,
        raw_policy="autogen",
        write=http_writer(url),
        fields=FIELDS,
    )
    setup.apply(setup.plan())
    lines = [
        f"flood,device_id=g{g},kecamatan=Genuk level_m={1.5 + h},rain_mm=0.25,"
        f"pumps_running={h % 3}i,pump_on={'true' if h % 2 else 'false'},"
        f'sensor_status="ok" {DAY0 + h * HOUR_MS + g}'
        for h in range(24)
        for g in range(3)
    ]
    resp = httpx.post(
        f"{url}/write",
        params={"db": influx_db, "precision": "ms"},
        content="\n".join(lines).encode(),
    )
    assert resp.status_code == 204, resp.text
    hour = dataclasses.replace(ROLLUP_LEVELS[1], source=None)
    setup.backfill("flood", hour, DAY0, DAY0 + DAY_MS)
    copied = copy_hour_rollups(
        running_stack.influx,
        Target(url, influx_db, "autogen", batch_lines=50),
        FIELDS,
        day_start_ms=DAY0,
        copies=2,
        workers=2,
    )
    assert copied == 2 * 3 * 24

    def day(start: int) -> list[list[object]]:
        rows: list[list[object]] = []
        for series in running_stack.influx.query(
            'SELECT * FROM "rollup_1h"."flood" '
            f"WHERE time >= {start}ms AND time < {start + DAY_MS}ms GROUP BY *",
            database=influx_db,
        ):
            rows += [[series.tags["device_id"], row[0] - start, *row[1:]] for row in series.values]
        return rows

    original = day(DAY0)
    assert len(original) == 3 * 24
    assert day(DAY0 - DAY_MS) == original
    assert day(DAY0 - 2 * DAY_MS) == original
    assert day(DAY0 - 3 * DAY_MS) == []
    # The integer maximum stayed an integer (InfluxDB refuses a field's type changing).
    fields = running_stack.influx.query(
        'SHOW FIELD KEYS FROM "rollup_1h"."flood"', database=influx_db
    )
    types = {row[0]: row[1] for s in fields for row in s.values}
    assert types["pumps_running_max"] == "integer"
    assert types["pump_on"] == "boolean"
