"""``peak_cells`` looks peaks up in slices (issue 17): the same cells whatever the slice size."""

from __future__ import annotations

import numpy as np
import pytest

from spatialfuse.io.imzml import _kernels


@pytest.mark.parametrize("slice_size", [1, 7, 1000, 1 << 17])
def test_peak_cells_are_the_same_in_slices_of_any_size(monkeypatch, slice_size):
    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 40, 300)
    mz = np.concatenate([np.sort(rng.uniform(100, 1000, n)) for n in lengths])
    intensity = rng.uniform(0, 10, mz.size).astype(np.float32)
    centres = np.sort(rng.uniform(100, 1000, 50))
    lo, hi = centres - 2.0, centres + 2.0  # overlapping windows: more than one layer
    lookups = _kernels.window_lookups(lo, hi)
    expected = _kernels.peak_cells(mz, intensity, lengths, lookups, centres.size)
    monkeypatch.setattr(_kernels, "LOOKUP_SLICE", slice_size)
    got = _kernels.peak_cells(mz, intensity, lengths, lookups, centres.size)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # and against a direct count: each peak in each window it falls in
    cells = sorted(
        (int(np.searchsorted(np.cumsum(lengths), p, side="right")) * centres.size + f)
        for p in range(mz.size)
        for f in np.flatnonzero((lo <= mz[p]) & (mz[p] <= hi))
    )
    assert sorted(got[0].tolist()) == cells
