"""What ``area_totals`` costs the hub per reading, and once a minute, at Semarang's size.

``AreaTotals.record`` runs on the intake thread for every reading; this times it for a
camera (10 declared metrics, 4 of them the NVRs'), an access point (4) and a family that
declares none, each the best of ``--repeats`` runs of ``--calls`` calls over the full-size
fleet, less the loop's own cost, then ``lines`` (the housekeeping thread's minute) over every
device.
Reference: the decoder's time for the same camera message (``ContractDecoder.decode``,
which every message already costs), measured the same way in the same run.
Last line: ``{"camera_ns": X, ..., "decode_camera_ns": R, "lines_ms": W}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import replace

from device_registry.directory import DeviceRecord, SnapshotDirectory
from drivers.cctv import FAMILY as CCTV
from drivers.wifi import FAMILY as WIFI
from hub.ingest.area_totals import AreaTotals
from hub.ingest.contract_decoder import ContractDecoder

KECAMATAN = 16
CAMERA: Mapping[str, object] = {
    "onvif_status": "ok",
    "stream_ok": True,
    "fps_measured": 20.0,
    "fps_ratio": 0.8,
    "frozen": False,
    "black": False,
    "blurred": False,
    "blur_var": 200.0,
    "people_count": 10,
    "zone_people": 5,
    "crowd_level": "medium",
    "parked_vehicles": 1,
}
ACCESS_POINT: Mapping[str, object] = {
    "up": True,
    "uptime_s": 1000.0,
    "clients": 20,
    "rx_bps": 2e6,
    "tx_bps": 8e6,
    "reboots": 3,
}


def _fleet(prefix: str, family: str, count: int, interval_s: float) -> list[DeviceRecord]:
    return [
        DeviceRecord(
            device_id=f"{prefix}-{n}",
            family=family,
            device_type="t",
            expected_interval_s=interval_s,
            tags={"kecamatan": f"kecamatan-{n % KECAMATAN}"},
        )
        for n in range(count)
    ]


def per_reading_ns(
    areas: AreaTotals,
    fleet: list[DeviceRecord],
    metrics: Mapping[str, object],
    *,
    calls: int,
    repeats: int,
) -> float:
    """Nanoseconds per ``record`` call, best of ``repeats``, the bare loop's cost taken off."""
    for device in fleet:
        areas.record(device, metrics, 0)  # each device known, as in a running hub
    order = [fleet[n % len(fleet)] for n in range(calls)]
    record = areas.record
    best = bare = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for device in order:
            record(device, metrics, 1)
        best = min(best, time.perf_counter() - began)
        began = time.perf_counter()
        for _device in order:
            pass
        bare = min(bare, time.perf_counter() - began)
    return (best - bare) / calls * 1e9


def decode_ns(camera: DeviceRecord, *, calls: int, repeats: int) -> float:
    """Nanoseconds the decoder takes for one camera message (the yardstick)."""
    record = replace(camera, metrics=CCTV.metric_schema())
    decoder = ContractDecoder(SnapshotDirectory([record]))
    topic = f"kota/v1/dev/{record.device_id}/telemetry"
    body = json.dumps({"ts": int(time.time() * 1000), "seq": 1, "metrics": CAMERA}).encode()
    decode = decoder.decode
    best = float("inf")
    for _ in range(repeats):
        now = int(time.time() * 1000)
        began = time.perf_counter()
        for _call in range(calls):
            decode(topic, body, now)
        best = min(best, time.perf_counter() - began)
    return best / calls * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000, help="calls per run (200,000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs, best taken (5)")
    args = parser.parse_args(argv)
    areas = AreaTotals([WIFI, CCTV])
    cameras = _fleet("cam", "cctv", 10_700, 300.0)
    aps = _fleet("ap", "wifi", 2_300, 120.0)
    gauges = _fleet("gauge", "flood", 100, 300.0)
    result = {
        "camera_ns": per_reading_ns(areas, cameras, CAMERA, calls=args.calls, repeats=args.repeats),
        "access_point_ns": per_reading_ns(
            areas, aps, ACCESS_POINT, calls=args.calls, repeats=args.repeats
        ),
        "undeclared_ns": per_reading_ns(
            areas, gauges, {"level_m": 1.0}, calls=args.calls, repeats=args.repeats
        ),
    }
    result["decode_camera_ns"] = decode_ns(cameras[0], calls=args.calls, repeats=args.repeats)
    began = time.perf_counter()
    lines = areas.lines("hub", 10_000)
    result["lines_ms"] = (time.perf_counter() - began) * 1000
    print(
        f"record(): camera {result['camera_ns']:.0f} ns, access point "
        f"{result['access_point_ns']:.0f} ns, undeclared family {result['undeclared_ns']:.0f} ns "
        f"per reading (the decoder: {result['decode_camera_ns']:.0f} ns for the camera's "
        f"message); lines(): {len(lines)} points for {len(cameras) + len(aps):,} devices "
        f"in {result['lines_ms']:.1f} ms"
    )
    print(json.dumps({key: round(value, 1) for key, value in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
