"""Smoke test of benchmarks/bench_cold.py: fresh processes per reader, the same ion image."""

from __future__ import annotations

import importlib.util


def test_quick_cold_benchmark_runs_every_reader_in_fresh_processes(run_quick_benchmark):
    _stdout, result = run_quick_benchmark("bench_cold.py", "--rounds", "2", timeout=300)

    expected = {"spatialfuse", "pyimzML"} | (
        {"m2aia"} if importlib.util.find_spec("m2aia") is not None else set()
    )
    assert set(result["runs"]) == expected
    assert result["quick"] is True and result["agree"] is True
    for which, rows in result["runs"].items():
        assert len(rows) == 2, which
        for row in rows:
            # Each phase was timed, inside a child whose whole life the parent timed.
            assert all(row[key] > 0 for key in ("import", "open", "image")), (which, row)
            assert row["process"] >= row["total"] >= row["import"] + row["open"], (which, row)
    sums = {which: rows[0]["sum"] for which, rows in result["runs"].items()}
    assert sums["spatialfuse"] > 0
    assert abs(sums["spatialfuse"] - sums["pyimzML"]) <= 1e-4 * sums["pyimzML"]
    assert result["ratios"]["import_open_vs_pyimzml"] > 0
