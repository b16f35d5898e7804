"""Smoke test of benchmarks/bench_imzml.py: the --quick run works end to end and checks itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_imzml.py"

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


def test_quick_benchmark_runs_and_checks_itself(tmp_path):
    data, cache, out = tmp_path / "data", tmp_path / "cache", tmp_path / "results.json"
    env = {**os.environ, "SPATIALFUSE_CACHE_DIR": str(cache), "SPATIALFUSE_BENCH_DATA": str(data)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--repeat", "1", "--json", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert elapsed < 20, f"--quick took {elapsed:.1f} s"
    assert "MEANINGLESS" in proc.stdout

    result = json.loads(out.read_text())
    assert result["quick"] is True
    assert result["ratios_meaningful"] is False

    rows = {row["name"]: row for row in result["benchmarks"]}
    assert set(rows) == EXPECTED
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
