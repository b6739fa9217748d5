"""Smoke run of the alert benchmark at tiny scale: its phases run and its JSON line is sane."""

from __future__ import annotations

from tests.bench.run_bench import run_bench

KEYS = {"page_p50_ms", "page_p99_ms", "rules", "evals_per_s", "ingest_slowdown_pct"}


def test_alert_bench_quick_run_ends_with_its_json_line() -> None:
    _lines, result = run_bench("alerts", "--quick")
    assert set(result) >= KEYS
    assert result["rules"] == 100
    assert result["evals_per_s"] > 0
    assert result["consumer_steady_readings_per_s"] > 0  # the live spacing's phase ran
    assert result["readings"] == 600
    # Every trial's page reached the webhook (a lost one would have timed out the run).
    assert result["page_trials"] == 3
    assert 0 < result["page_p50_ms"] <= result["page_p99_ms"]
    assert result["ingest_slowdown_pct"] is None  # --quick skips the two ingest runs
