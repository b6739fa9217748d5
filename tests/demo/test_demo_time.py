"""Demo time: the hub and the agents see intervals divided by the speed, never under 1 s."""

from __future__ import annotations

from types import MappingProxyType

from hypothesis import given
from hypothesis import strategies as st

from device_registry.directory import DeviceRecord
from hub.demo.demo_time import MIN_INTERVAL_S, scaled_record

intervals = st.floats(min_value=0.1, max_value=86_400, allow_nan=False)


@given(intervals, st.floats(min_value=0.1, max_value=3600), st.one_of(st.none(), intervals))
def test_scaled_intervals(interval: float, speed: float, poll: float | None) -> None:
    """Interval and poll interval divided by speed (at least 1 s); nothing else changes."""
    config = {"unit_id": 3} | ({} if poll is None else {"poll_interval_s": poll})
    record = DeviceRecord(
        device_id="d1",
        family="flood",
        device_type="t",
        expected_interval_s=interval,
        driver_config=MappingProxyType(config),
    )
    scaled = scaled_record(record, speed)
    if speed == 1:
        assert scaled == record
        return
    assert scaled.expected_interval_s == max(MIN_INTERVAL_S, interval / speed)
    assert scaled.driver_config["unit_id"] == 3
    if poll is not None:
        assert scaled.driver_config["poll_interval_s"] == max(MIN_INTERVAL_S, poll / speed)
    assert (scaled.device_id, scaled.family, scaled.device_type) == ("d1", "flood", "t")
