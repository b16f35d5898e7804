"""Smoke test of benchmarks/bench_imzml.py: the --quick run works end to end and checks itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXPECTED = {
    "open_cold",
    "open_cached",
    "ion_image_continuous",
    "ion_image_processed",
    "ion_image_processed_small",
    "feature_table",
    "feature_table_memory",
    "feature_table_vs_pyimzml",
}
M2AIA = {
    "m2aia_open",
    "m2aia_ion_image_continuous",
    "m2aia_ion_image_processed",
    "m2aia_feature_table",
}
HAVE_M2AIA = importlib.util.find_spec("m2aia") is not None


def test_quick_benchmark_runs_and_checks_itself(tmp_path, run_quick_benchmark):
    data, cache = tmp_path / "data", tmp_path / "cache"
    _stdout, result = run_quick_benchmark(
        "bench_imzml.py", "--repeat", "1", timeout=120, env={"SPATIALFUSE_CACHE_DIR": str(cache)}
    )

    assert result["quick"] is True
    assert result["ratios_meaningful"] is False

    rows = {row["name"]: row for row in result["benchmarks"]}
    if "m2aia" in result["skipped"]:
        assert set(rows) == EXPECTED
        assert result["skipped"]["m2aia"], "a skip must say why"
        assert HAVE_M2AIA or "not installed" in result["skipped"]["m2aia"]
    else:
        assert set(rows) == EXPECTED | M2AIA
        assert result["baseline_versions"]["m2aia"]
        agreement = {c["name"].split(":")[0]: c for c in result["baseline_checks"]}
        assert len(agreement) == 3
        # The quick files are full grids: m2aia's image layout must match ours at every pixel.
        for name in ("m2aia ion image, continuous", "m2aia ion image, processed"):
            assert agreement[name]["passed"], agreement[name]
        # Where m2aia differs on the table, it is its last-peak behaviour (README), nothing else.
        table = next(c for n, c in agreement.items() if n.startswith("m2aia feature table"))
        assert table["extra"]["differing"] == table["extra"]["explained_by_last_peak_below_window"]
    for name, row in rows.items():
        if row["kind"] == "memory":
            assert row["ours"]["peak_bytes"] > 0, name
            assert row["baseline"]["output_bytes"] > 0, name
        else:
            for side in ("ours", "baseline"):
                timing = row[side]
                assert timing["n"] >= 1, (name, side)
                assert len(timing["times_s"]) == timing["n"], (name, side)
                assert all(t > 0 for t in timing["times_s"]), (name, side)
                assert 0 < timing["min_s"] <= timing["median_s"], (name, side)
        assert row["ratio"] > 0, name

    checks = result["checks"]
    assert len(checks) >= 6
    assert all(c["passed"] for c in checks), [c for c in checks if not c["passed"]]
    assert result["all_checks_passed"] is True

    # Inputs and the offset-table cache went to the temporary folders, not into the repository.
    assert sorted(p.suffix for p in data.glob("*.imzML")) == [".imzML"] * 3
    assert any(cache.rglob("*.npz"))
    for info in result["inputs"].values():
        assert Path(info["imzml"]).parent == data
