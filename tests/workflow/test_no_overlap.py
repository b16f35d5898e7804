"""Accepted failed registrations of unrelated inputs: a clear stop, not a PCA traceback."""

from __future__ import annotations

from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd

from spatialfuse.workflow._pipeline import MIN_SPOTS_WITH_MSI, _too_few_spots


def _result(n_with_msi: int, *, failed: bool):
    obs = pd.DataFrame({"has_msi": np.arange(40) < n_with_msi})
    record = SimpleNamespace(ok=not failed, registration=SimpleNamespace(name="he → visium"))
    return SimpleNamespace(msi_spots=ad.AnnData(obs=obs), registrations=[record])


def test_no_spot_with_msi_stops_the_joint_analysis_and_says_why():
    # Before: joint clustering ran on 0 spots and PCA raised "0 × 8399".
    why = _too_few_spots(_result(0, failed=True))
    assert why.startswith("only 0 of 40 Visium spots have MSI data")
    assert "he → visium failed its checks and was accepted" in why
    why = _too_few_spots(_result(MIN_SPOTS_WITH_MSI - 1, failed=False))
    assert f"only {MIN_SPOTS_WITH_MSI - 1} of 40" in why and "barely overlap" in why


def test_enough_spots_run_the_joint_analysis():
    assert _too_few_spots(_result(MIN_SPOTS_WITH_MSI, failed=True)) is None
