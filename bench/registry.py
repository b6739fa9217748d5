"""Registry benchmark: import 10,700 cameras, then time a filtered API list of 100 devices.

Semarang's shape: 10,293 RT cameras behind 4-slot NVRs plus 407 ATCS and corporate
cameras; the NVRs are registered first (not timed), giving about 13,300 devices. The
import is a CSV file through ``parse_csv`` + ``import_devices`` on SQLite (the default
backend). The API is served by a real uvicorn on a free port and asked, over HTTP with a
token, for 100 active cameras of one kecamatan. References measured in the same run:
the dry run of the same file, the idempotent re-import, and the same query in-process.

Last line: {"import_rows": N, "import_s": X, "api_p99_ms": Y, ...}
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from device_registry.api_tokens import create_token
from device_registry.bulk_import import import_devices, parse_csv
from device_registry.database import open_database
from device_registry.registry_service import RegistryService
from device_registry.schemas import DeviceQuery, DeviceTypeCreate, TeamCreate
from device_registry.web_api import create_app

KECAMATAN = [
    "Banyumanik",
    "Candisari",
    "Gajahmungkur",
    "Gayamsari",
    "Genuk",
    "Gunungpati",
    "Mijen",
    "Ngaliyan",
    "Pedurungan",
    "Semarang Barat",
    "Semarang Selatan",
    "Semarang Tengah",
    "Semarang Timur",
    "Semarang Utara",
    "Tembalang",
    "Tugu",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def csv_rows(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    out.write(",".join(header) + "\n")
    for row in rows:
        out.write(",".join(row) + "\n")
    return out.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cameras", "--rows", type=int, default=10_700, help="rows to import")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 300 rows and 30 requests"
    )
    args = parser.parse_args()
    if args.quick:
        args.cameras, args.requests = 300, 30
    rt_cameras = min(args.cameras, args.cameras * 10_293 // 10_700)
    nvr_count = (rt_cameras + 3) // 4

    with tempfile.TemporaryDirectory() as tmp:
        database = open_database(f"sqlite:///{Path(tmp) / 'registry.sqlite3'}")
        service = RegistryService(database)
        for name, family in (("cctv-rt", "cctv"), ("nvr-4ch", "cctv"), ("cctv-atcs", "cctv")):
            service.create_type(
                DeviceTypeCreate(
                    name=name, family=family, protocol="onvif", expected_interval_s=60
                ),
                actor="bench",
            )
        for index, kecamatan in enumerate(KECAMATAN):
            service.create_team(TeamCreate(id=f"team-{index}", name=f"Tim {kecamatan}"), actor="b")
        header = [
            "id",
            "device_type",
            "state",
            "parent_id",
            "kota",
            "kecamatan",
            "kelurahan",
            "rw",
            "rt",
            "team_id",
            "owner_kind",
            "latitude",
            "longitude",
            "serial",
        ]
        nvrs = []
        for n in range(nvr_count):
            k = n % len(KECAMATAN)
            nvrs.append(
                [
                    f"nvr-{n:05}",
                    "nvr-4ch",
                    "active",
                    "",
                    "Semarang",
                    KECAMATAN[k],
                    f"Kel-{k}-{n % 7}",
                    str(n % 12 + 1),
                    "",
                    f"team-{k}",
                    "city",
                    f"{-6.95 - (n % 100) / 1000:.5f}",
                    f"{110.40 + (n % 90) / 1000:.5f}",
                    f"NVR{n:06}",
                ]
            )
        nvr_report = import_devices(service, parse_csv(csv_rows(header, nvrs)), actor="bench")
        assert not nvr_report.errors, nvr_report.errors[:3]
        cameras = []
        for c in range(args.cameras):
            behind_nvr = c < rt_cameras
            nvr = nvrs[c // 4] if behind_nvr else None
            k = c % len(KECAMATAN)
            cameras.append(
                [
                    f"cam-{c:05}",
                    "cctv-rt" if behind_nvr else "cctv-atcs",
                    "active" if c % 10 else "maintenance",
                    nvr[0] if nvr else "",
                    "Semarang",
                    nvr[5] if nvr else KECAMATAN[k],
                    nvr[6] if nvr else f"Kel-{k}-0",
                    nvr[7] if nvr else "1",
                    str(c % 4 + 1) if nvr else "",
                    nvr[9] if nvr else f"team-{k}",
                    "community" if c % 3 == 0 else "city",
                    f"{-6.95 - (c % 300) / 10000:.5f}",
                    f"{110.40 + (c % 200) / 10000:.5f}",
                    f"SN{c:08}",
                ]
            )
        text = csv_rows(header, cameras)

        started = time.perf_counter()
        dry = import_devices(service, parse_csv(text), actor="bench", dry_run=True)
        dry_s = time.perf_counter() - started
        started = time.perf_counter()
        report = import_devices(service, parse_csv(text), actor="bench")
        import_s = time.perf_counter() - started
        assert report.applied, report
        assert not report.errors, report.errors[:3]
        assert report.created == args.cameras, report
        started = time.perf_counter()
        again = import_devices(service, parse_csv(text), actor="bench")
        reimport_s = time.perf_counter() - started
        assert again.unchanged == args.cameras
        total = service.list_devices(DeviceQuery(limit=1)).total
        print(f"devices in registry: {total} ({nvr_count} NVRs, {args.cameras} cameras)")
        print(
            f"import {args.cameras} rows: {import_s:.2f} s (dry run {dry_s:.2f} s, "
            f"idempotent re-import {reimport_s:.2f} s); dry run errors {len(dry.errors)}"
        )

        token = create_token(database, name="bench", role="viewer", actor="bench").token
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        params = {"family": "cctv", "kecamatan": "Gayamsari", "state": "active", "limit": "100"}
        # What each page must hold (100 at full scale; fewer in a --quick run).
        page_sizes = {
            offset: len(
                service.list_devices(DeviceQuery.model_validate({**params, "offset": offset})).items
            )
            for offset in range(0, 500, 100)
        }
        api_ms: list[float] = []
        local_ms: list[float] = []
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                timeout=10,
                headers={"Authorization": f"Bearer {token}"},
            ) as client:
                for i in range(args.requests + 20):
                    offset = str((i % 5) * 100)
                    started = time.perf_counter()
                    response = client.get("/api/v1/devices", params={**params, "offset": offset})
                    elapsed = (time.perf_counter() - started) * 1000
                    response.raise_for_status()
                    assert len(response.json()["items"]) == page_sizes[int(offset)]
                    if i >= 20:  # the first requests warm caches and the connection
                        api_ms.append(elapsed)
            query = DeviceQuery.model_validate({**params, "limit": 100})
            for _ in range(args.requests):
                started = time.perf_counter()
                service.list_devices(query)
                local_ms.append((time.perf_counter() - started) * 1000)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            database.close()
        api_p99 = percentile(api_ms, 0.99)
        print(
            f"API list of {page_sizes[0]} filtered devices over HTTP: "
            f"p50 {statistics.median(api_ms):.1f} ms, "
            f"p99 {api_p99:.1f} ms; same query in-process p99 "
            f"{percentile(local_ms, 0.99):.1f} ms"
        )
        print(
            json.dumps(
                {
                    "import_rows": args.cameras,
                    "import_s": round(import_s, 2),
                    "api_p99_ms": round(api_p99, 1),
                    "dry_run_s": round(dry_s, 2),
                    "reimport_s": round(reimport_s, 2),
                    "inprocess_p99_ms": round(percentile(local_ms, 0.99), 1),
                    "devices_total": total,
                    "api_page_items": page_sizes[0],
                }
            )
        )


if __name__ == "__main__":
    main()
