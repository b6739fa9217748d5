"""The city bench's disk figures: what is counted as TSM, WAL and index, and the replay."""

from __future__ import annotations

from pathlib import Path

from bench.city_influx import HISTORY_POINTS, disk_use, history_lines


def test_disk_use_tells_tsm_wal_and_index_apart(tmp_path: Path) -> None:
    shard = tmp_path / "data" / "kota" / "autogen" / "7"
    (shard / "index" / "0").mkdir(parents=True)
    (shard / "000000001-000000001.tsm").write_bytes(b"x" * 1000)
    (shard / "fields.idx").write_bytes(b"x" * 10)
    (shard / "index" / "0" / "L0-00000001.tsl").write_bytes(b"x" * 100)
    (tmp_path / "data" / "kota" / "_series" / "00").mkdir(parents=True)
    (tmp_path / "data" / "kota" / "_series" / "00" / "0000").write_bytes(b"x" * 200)
    (tmp_path / "wal" / "kota" / "autogen" / "7").mkdir(parents=True)
    (tmp_path / "wal" / "kota" / "autogen" / "7" / "_00001.wal").write_bytes(b"x" * 50)
    (tmp_path / "data" / "other" / "autogen" / "8").mkdir(parents=True)
    (tmp_path / "data" / "other" / "autogen" / "8" / "1.tsm").write_bytes(b"x" * 9999)
    use = disk_use(tmp_path, "kota")
    assert (use.tsm, use.wal, use.index, use.data) == (1000, 50, 310, 1050)


def test_history_replays_real_rows_as_full_blocks_with_typed_fields() -> None:
    rows = [
        {
            "time": 1,
            "device_id": f"cam {n}",
            "kecamatan": "Tugu",
            "fps": 24.5 + n,
            "ok": n % 2,
            "up": True,
            "status": 'say "ok"',
        }
        for n in range(3)
    ]
    kinds = {"fps": "float", "ok": "integer", "up": "boolean", "status": "string"}
    lines = history_lines("cctv", rows, {"device_id", "kecamatan"}, kinds, 300_000, 10**12, 5)
    assert len(lines) == 3 * HISTORY_POINTS  # no more series than real devices
    first = lines[0]
    assert first.startswith("cctv,device_id=cam\\ 0,kecamatan=Tugu ")
    assert 'fps=24.5,ok=0i,up=true,status="say \\"ok\\""' in first
    stamps = [int(line.rsplit(" ", 1)[1]) for line in lines[:HISTORY_POINTS]]
    assert stamps == sorted(stamps)
    assert stamps[-1] < 10**12
    # Consecutive points of one series take different devices' values.
    assert "fps=25.5" in lines[1]
