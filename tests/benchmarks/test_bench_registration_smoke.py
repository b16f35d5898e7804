"""Smoke test of benchmarks/bench_registration.py: the --quick run works end to end.

The quick run registers tiny synthetic inputs (2 seeds per part); its accuracy numbers mean nothing
for the targets, so only the structure of the results and their sanity are checked here.
"""

from __future__ import annotations

import math

import pytest

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow


@pytest.mark.slow
def test_quick_registration_benchmark_runs(tmp_path, run_quick_benchmark):
    data = tmp_path / "data"
    stdout, result = run_quick_benchmark("bench_registration.py", timeout=300)
    assert "REPORTED ok=True" in stdout
    for part in (
        "1. MSI ↔ H&E affine sweep",
        "2. MSI ↔ H&E nonrigid",
        "3. H&E ↔ serial",
        "4. speed",
    ):
        assert part in stdout, part

    assert result["quick"] is True and result["numbers_meaningful"] is False
    assert result["seeds"] == {"affine": 2, "nonrigid": 2, "serial": 2}
    assert 0 not in result["reg_seeds"]

    affine = result["affine"]
    assert len(affine["records"]) == 2
    for record in affine["records"]:
        assert 60 <= record["msi_pixel_um"] <= 80
        for run in record["spatialfuse"]:
            assert math.isfinite(run["tre_px"]) and run["tre_px"] >= 0
            assert math.isclose(run["tre_um"], run["tre_px"] * record["msi_pixel_um"])
            assert run["seconds"] > 0
            assert len(run["linear_error"]) == 4
        base = record["sitk"]
        assert base["error"] is not None or math.isfinite(base["tre_px"])
    summary = affine["spatialfuse"]
    assert summary["n"] == 2 * len(result["reg_seeds"])
    assert 0 <= summary["failed_but_ok"] <= summary["n"]
    assert affine["sitk"]["n"] == 2
    # The same inputs and a fixed non-zero seed give the same transform.
    assert result["determinism"][f"seed{result['reg_seeds'][0]}"]["identical"] is True

    for model in ("bspline", "affine"):
        assert result["nonrigid"][model]["n"] == 2
        assert math.isfinite(result["nonrigid"][model]["median_tre_px"])
    for record in result["nonrigid"]["records"]:
        assert record["warp_um"] == record["msi_pixel_um"]
    for model in ("affine", "bspline"):
        assert result["serial"][model]["n"] == 2
        assert math.isfinite(result["serial"][model]["median_tre_um"])
    assert all(r["n_points"] > 50 for r in result["serial"]["records"])

    speed = result["speed"]
    for name in ("small", "big"):
        timing = speed[name]["timing"]
        assert timing["n"] >= 1 and 0 < timing["min_s"] <= timing["median_s"]
    assert speed["big"]["he_shape_xy"][0] > speed["small"]["he_shape_xy"][0]
    assert speed["ratio"] > 0

    # Inputs went to the data folder (cached by parameters), not to the default location.
    assert any((data / "registration").glob("trio_s0_*/truth.json"))
    assert not (data / "results-registration-quick.json").exists()
