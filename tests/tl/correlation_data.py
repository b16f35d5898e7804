"""Builders shared by the correlation tests: hex grids and MuData in the joint_table layout."""

from __future__ import annotations

import warnings

import numpy as np


def hex_points(rows, cols, pitch=100.0):
    r, c = np.mgrid[0:rows, 0:cols]
    x = c * pitch + (r % 2) * pitch / 2
    return np.stack([x.ravel(), r.ravel() * pitch * np.sqrt(3) / 2], axis=1).astype(np.float64)


def make_mdata(x, y, coords, *, has_msi=None, mz=None, genes=None):
    """A MuData in the joint_table layout: 'rna' and 'msi' over the same spot names."""
    import anndata as ad
    import mudata as md
    import pandas as pd

    n = len(coords)
    names = pd.Index([f"S{i:04d}-1" for i in range(n)], dtype=str)
    genes = genes or [f"G{j}" for j in range(x.shape[1])]
    mz = np.linspace(300.0, 900.0, y.shape[1]) if mz is None else np.asarray(mz)
    rna = ad.AnnData(np.asarray(x), obs=pd.DataFrame(index=names), var=pd.DataFrame(index=genes))
    rna.obsm["spatial_um"] = np.asarray(coords, dtype=np.float64)
    obs = pd.DataFrame(index=names)
    if has_msi is not None:
        obs["has_msi"] = np.asarray(has_msi, dtype=bool)
    var = pd.DataFrame({"mz": mz}, index=pd.Index([f"mz-{m:.4f}" for m in mz], dtype=str))
    msi = ad.AnnData(np.asarray(y), obs=obs, var=var)
    msi.obsm["spatial_um"] = rna.obsm["spatial_um"].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return md.MuData({"rna": rna, "msi": msi})
