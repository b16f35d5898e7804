"""Smoke test of benchmarks/bench_mapping.py: the --quick run works end to end and checks itself."""

from __future__ import annotations

EXPECTED = {
    "radius_coarse",
    "radius_full",
    "area_full",
    "memory_area",
    "memory_radius",
    "area_nonrigid_full",
}


def test_quick_mapping_benchmark_runs_and_checks_itself(tmp_path, run_quick_benchmark):
    stdout, result = run_quick_benchmark("bench_mapping.py", "--repeat", "1", timeout=120)
    assert "EXTRAPOLATED" in stdout

    assert result["quick"] is True and result["ratios_meaningful"] is False
    rows = {row["name"]: row for row in result["benchmarks"]}
    assert set(rows) == EXPECTED
    for name, row in rows.items():
        if row["kind"] == "memory":
            assert len(row["ours"]["peak_bytes"]) == 2, name
            assert all(v > 0 for v in row["ours"]["peak_bytes"].values()), name
            continue
        timing = row["ours"]
        assert timing["n"] >= 1 and len(timing["times_s"]) == timing["n"], name
        assert 0 < timing["min_s"] <= timing["median_s"], name
        if row["baseline"] is not None:
            assert row["ratio"] > 0, name
    assert rows["radius_full"]["baseline"]["extrapolation_factor"] > 1
    assert "EXTRAPOLATED" in rows["radius_full"]["measured"]
    assert rows["radius_coarse"]["baseline"]["extrapolation_factor"] == 1

    accuracy = result["quadrature_accuracy"]
    assert set(accuracy) == {"256", "512", "1024", "2048", "4096"}
    assert accuracy["1024"]["max"] <= 0.01
    checks = result["checks"]
    assert len(checks) >= 8
    assert all(c["passed"] for c in checks), [c for c in checks if not c["passed"]]
    assert result["all_checks_passed"] is True
    # The default JSON location (the data folder) was not used.
    assert not (tmp_path / "data" / "results-mapping-quick.json").exists()
