"""Smoke run of the rollup cost benchmark at tiny size, as the user runs it."""

from __future__ import annotations

from tests.bench.run_bench import run_bench


def test_rollup_bench_times_each_level_against_every_field() -> None:
    lines, result = run_bench("rollups", "--hours", "2.2", "--scale", "0.002", "--repeats", "1")
    assert result["points"] > 1000
    assert result["rollup_1m_s_per_run"] > 0
    assert result["rollup_1h_s_per_run"] > 0
    # Tiny data: the loads may round to 0; they are there, and the old schedule's is there.
    assert result["cq_load_cores"] >= 0
    assert result["cq_load_cores_all_fields"] >= 0
    assert "cq_1m_load_cores_every_minute" in result
    assert any(line.startswith("every field: rollup_1m") for line in lines)
    assert any(line.startswith("continuous queries:") for line in lines)
