"""sf.pp.spatial_chaos: structured vs scattered ion images (synthetic and the real bladder)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf
from spatialfuse.pp._chaos import chaos_score


def _grid_table(images: list[np.ndarray]) -> ad.AnnData:
    ny, nx = images[0].shape
    yy, xx = np.mgrid[1 : ny + 1, 1 : nx + 1]
    obs = pd.DataFrame(
        {"imzml_x": xx.ravel(), "imzml_y": yy.ravel()},
        index=[f"{x}_{y}" for x, y in zip(xx.ravel(), yy.ravel(), strict=True)],
    )
    x = np.stack([im.ravel() for im in images], axis=1).astype(np.float32)
    return ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"f{i}" for i in range(len(images))]))


def test_structure_scores_high_and_noise_low():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:50, :70]
    blob = np.exp(-((xx - 35) ** 2 + (yy - 25) ** 2) / 150.0)
    noise = rng.random(blob.shape)
    sparse_noise = noise * (rng.random(blob.shape) < 0.1)
    scores = [chaos_score(im) for im in (blob, blob + rng.normal(0, 0.05, blob.shape), noise)]
    assert scores[0] > 0.95 and scores[1] > 0.8 and scores[2] < 0.1
    assert chaos_score(sparse_noise) < 0.1
    assert chaos_score(np.zeros((5, 5))) == 0.0
    adata = _grid_table([blob, noise, sparse_noise])
    sf.pp.spatial_chaos(adata)
    assert adata.var["spatial_chaos_ok"].tolist() == [True, False, False]
    np.testing.assert_allclose(adata.var["spatial_chaos"].iloc[0], scores[0])
    with pytest.raises(ValueError, match="imzml_x"):
        sf.pp.spatial_chaos(ad.AnnData(np.ones((3, 2))))
    with pytest.raises(ValueError, match="n_levels"):
        sf.pp.spatial_chaos(adata, n_levels=1)


def test_real_bladder_chaos_agrees_with_morans_i(shared_data):
    path = shared_data / "paired" / "bladder_spamtp" / "mouse_bladder_79peaks.imzML"
    if not path.exists():
        pytest.skip(f"{path} not in the shared data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sf.io.read_imzml(path)
        sf.pp.spatial_chaos(adata)
        sf.pp.filter_ions_spatial(adata)
    chaos, moran = adata.var["spatial_chaos"], adata.var["moranI"]
    # Two different measures of structure (object counts vs autocorrelation) rank the 79 real
    # ion images alike (measured r = 0.80).
    assert np.corrcoef(chaos, moran)[0, 1] > 0.6
    assert chaos.between(0, 1).all() and chaos.max() > 0.8
    lowest = chaos.sort_values().index[:4]
    assert (moran[lowest] < moran.median()).all()
