"""Smoke test of benchmarks/bench_hd_bins.py: the --quick run works end to end."""

from __future__ import annotations


def test_quick_hd_bins_benchmark_runs(run_quick_benchmark):
    stdout, result = run_quick_benchmark("bench_hd_bins.py", timeout=180)
    assert result["quick"] is True
    kinds = [row["kind"] for row in result["rows"]]
    assert kinds == ["old", "new", "aggregate"]
    for row in result["rows"]:
        assert row["cpu_s"] > 0 and row["peak_rss_mib"] > 0
        assert row["bins_with_msi"] > 0
    aggregate = result["rows"][-1]
    assert aggregate["n_coarse"] == aggregate["n_bins"] // 16
    assert "vs old" in stdout
