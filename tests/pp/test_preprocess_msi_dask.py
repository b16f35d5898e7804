"""``preprocess_msi`` of a dask-backed X (a zarr store's pixels, issue 17): streamed, same PCA.

The in-memory table goes through scanpy's ARPACK PCA; a dask table through a streamed one (the
features' moments, then their covariance, then the scores, block of rows by block of rows). The
two agree up to the sign of each axis, and no task of the streamed one computes more of the table
than the ``max_block_bytes`` limit allows.
"""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import anndata as ad  # noqa: E402
from dask.callbacks import Callback  # noqa: E402

import spatialfuse as sf  # noqa: E402
from spatialfuse._limits import limits  # noqa: E402


def _table(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n, p = 3000, 60
    region = (np.arange(n) // 500) % 3
    x = rng.gamma(2.0, 1.0, (n, p)) * (1 + 3 * (region[:, None] == np.arange(p)[None] % 3))
    x[rng.random((n, p)) < 0.3] = 0
    x[:40] = 0  # spectra without data: NaN scores
    return x.astype(np.float32)


@pytest.mark.parametrize("scale", [True, False])
def test_dask_table_gives_the_in_memory_pca_without_computing_it_whole(scale):
    x = _table()
    memory = ad.AnnData(x.copy())
    lazy = ad.AnnData(da.from_array(x, chunks=(200, 16)))
    largest = [0]

    def posttask(key, result, dsk, state, worker_id):
        if hasattr(result, "nbytes"):
            largest[0] = max(largest[0], int(result.nbytes))

    sf.pp.preprocess_msi(memory, scale=scale)
    with limits(max_block_bytes=100_000), Callback(posttask=posttask):
        sf.pp.preprocess_msi(lazy, scale=scale)
    assert type(lazy.X).__module__.startswith("dask")  # still lazy
    assert 0 < largest[0] <= 100_000 < x.size * 4
    a, b = memory.obsm["X_pca"], lazy.obsm["X_pca"]
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a[:, 0])
    sign = np.sign((a[ok] * b[ok]).sum(axis=0))
    np.testing.assert_allclose(b[ok] * sign, a[ok], atol=1e-5 * np.abs(a[ok]).max())
    np.testing.assert_allclose(lazy.varm["PCs"] * sign, memory.varm["PCs"], atol=1e-8)
    np.testing.assert_allclose(
        lazy.uns["pca"]["variance_ratio"], memory.uns["pca"]["variance_ratio"], rtol=1e-6
    )
    np.testing.assert_allclose(lazy.var["pca_std"], memory.var["pca_std"], rtol=1e-9)
    assert lazy.uns["pca"]["params"]["svd_solver"] == "covariance (streamed)"
