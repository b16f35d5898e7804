"""Smoke test of benchmarks/bench_elastix.py: the --quick run works end to end.

Its accuracy numbers mean nothing on 2 tiny seeds; what is checked is that the transform conversion
self-check passed (elastix recovered a known affine and its result image matches ours through the
converted transform) and that the results are complete and sane.
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, version

import pytest

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

try:  # the distribution, not ``import itk``: loading ITK takes seconds and warns a lot
    version("itk-elastix")
except PackageNotFoundError:
    pytest.skip(
        "itk-elastix is not installed (pip install 'spatialfuse[bench]')", allow_module_level=True
    )

METHODS = ("spatialfuse", "elastix_default", "elastix_moments")


@pytest.mark.slow
def test_quick_elastix_benchmark_runs(tmp_path, run_quick_benchmark):
    stdout, result = run_quick_benchmark("bench_elastix.py", timeout=300)
    assert "conversion self-check PASSED" in stdout

    check = result["self_check"]
    assert check["passed"] is True
    assert check["tre_moving_px"] < 0.1
    assert check["result_image_max_rel_difference"] < 1e-3
    assert result["n_seeds"] == 2 and result["versions"]["itk-elastix"]

    sweep = result["sweep"]
    assert [r["seed"] for r in sweep["records"]] == [0, 1]
    for record in sweep["records"]:
        for method in METHODS:
            run = record[method]
            assert run["seconds"] > 0
            if math.isfinite(run["tre_px"]):
                assert math.isclose(run["tre_um"], run["tre_px"] * record["msi_pixel_um"])
            else:
                assert run.get("error"), (method, run)
        assert (
            record["elastix_default"]["working_shape"] == record["elastix_moments"]["working_shape"]
        )
    for method in METHODS:
        summary = sweep[method]
        assert summary["n"] == 2 and 0 <= summary["successes"] <= 2
        assert summary["time_ratio"] > 0
    assert sweep["spatialfuse"]["time_ratio"] == 1.0
