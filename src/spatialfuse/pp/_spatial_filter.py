"""Keep the features that form spatial patterns: Moran's I through squidpy."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._docs import copy_and_returns, fill_doc
from spatialfuse._logging import logger
from spatialfuse.core.adata import check_adata, check_count, dense_rows, rows_with_data
from spatialfuse.errors import DataWarning
from spatialfuse.pp._common import record

if TYPE_CHECKING:
    import anndata

__all__ = ["filter_ions_spatial"]


@fill_doc(copy=copy_and_returns())
def filter_ions_spatial(
    adata: anndata.AnnData,
    *,
    min_moran: float = 0.1,
    max_fdr: float | None = 0.05,
    n_top: int | None = None,
    n_neighs: int | None = None,
    spatial_key: str = "spatial",
    key_added: str = "spatially_variable",
    subset: bool = False,
    copy: bool = False,
) -> anndata.AnnData | None:
    """Score each feature's spatial autocorrelation (Moran's I) and flag the patterned ones.

    A k-nearest-neighbour graph of the observations' positions
    (squidpy's kNN spatial graph) and Moran's I of every feature over it
    (``squidpy.gr.spatial_autocorr``, analytic p-values under normality, Benjamini–Hochberg FDR)
    are computed on a temporary table, so ``adata.obsp`` is left untouched. Rows with NaN values
    or ``obs["has_msi"]`` false (spots without MSI data) are left out. Noise ions and matrix ions
    spread evenly over the slide score near 0; ions that follow tissue structure score high.

    Parameters
    ----------
    adata
        Observations × features with positions in ``obsm[spatial_key]``: MSI pixels (µm) or
        spots × m/z from :func:`spatialfuse.tl.map_to_spots` (full-res pixels; the graph only
        depends on who neighbours whom, not on the unit).
    min_moran
        Smallest Moran's I of a kept feature.
    max_fdr
        Largest FDR-corrected p-value of a kept feature; None to ignore p-values.
    n_top
        Keep the ``n_top`` features with the highest Moran's I instead (thresholds ignored).
    n_neighs
        Neighbours per observation; None: 4 for an MSI pixel raster (``obs["imzml_x"]`` present),
        else 6 (the Visium hexagonal grid).
    spatial_key
        Key of the positions in ``obsm``.
    key_added
        Name of the boolean ``var`` column of kept features.
    subset
        Drop the features not kept.
    {copy}

        - ``var["moranI"]``: Moran's I (NaN for constant features);
        - ``var["moranI_pval"]``, ``var["moranI_fdr"]``: p-value and BH-corrected p-value;
        - ``var[key_added]``: whether the feature is kept;
        - ``uns["spatialfuse"]["preprocessing"]["filter_ions_spatial"]``: the parameters;
        - with ``subset``, only the kept features remain.

    Raises
    ------
    TypeError
        ``adata`` is not an AnnData.
    ValueError
        No positions, fewer than three observations with data, bad parameters, or ``subset``
        with no feature passing.

    Warns
    -----
    DataWarning
        No feature passes the thresholds (without ``subset``).
    """
    import anndata as ad
    import pandas as pd
    import squidpy as sq

    from spatialfuse._spatial_graph import spatial_knn_graph

    check_adata(adata)
    if spatial_key not in adata.obsm:
        raise ValueError(f"adata.obsm has no {spatial_key!r} positions (spatial_key)")
    if max_fdr is not None and not 0 < max_fdr <= 1:
        raise ValueError(f"max_fdr must lie in (0, 1] or be None, got {max_fdr!r}")
    check_count(n_top, "n_top", optional=True)
    if n_neighs is None:
        n_neighs = 4 if "imzml_x" in adata.obs else 6
    check_count(n_neighs, "n_neighs")

    rows = rows_with_data(adata)
    if rows.sum() < 3:
        raise ValueError(
            f"Moran's I needs at least 3 observations with data, got {int(rows.sum())}"
        )
    positions = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[rows]
    tmp = ad.AnnData(dense_rows(adata.X, rows))
    tmp.var_names = [f"f{i}" for i in range(adata.n_vars)]
    tmp.obsm["spatial"] = positions
    k = int(min(n_neighs, rows.sum() - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant features: 0 / 0
        spatial_knn_graph(tmp, spatial_key="spatial", n_neighs=k)
        table = sq.gr.spatial_autocorr(
            tmp, mode="moran", n_perms=None, copy=True, n_jobs=1, show_progress_bar=False
        )
    table = table.reindex(tmp.var_names)
    moran = table["I"].to_numpy(dtype=np.float64)
    pval = table["pval_norm"].to_numpy(dtype=np.float64)
    fdr = table["pval_norm_fdr_bh"].to_numpy(dtype=np.float64)
    moran[~np.isfinite(moran)] = np.nan

    if n_top is not None:
        keep = np.zeros(adata.n_vars, dtype=bool)
        order = np.argsort(-np.nan_to_num(moran, nan=-np.inf), kind="stable")
        keep[order[: min(int(n_top), int(np.isfinite(moran).sum()))]] = True
    else:
        keep = np.nan_to_num(moran, nan=-np.inf) >= float(min_moran)
        if max_fdr is not None:
            keep &= np.nan_to_num(fdr, nan=1.0) <= float(max_fdr)
    if not keep.any():
        best = float(np.nanmax(moran)) if np.isfinite(moran).any() else float("nan")
        message = (
            f"no feature passes the spatial filter (min_moran={min_moran}, max_fdr={max_fdr}, "
            f"n_top={n_top}); the highest Moran's I is {best:.3g}"
        )
        if subset:
            raise ValueError(message)
        warnings.warn(message, DataWarning, stacklevel=2)

    adata = adata.copy() if copy else adata
    adata.var["moranI"] = pd.Series(moran, index=adata.var_names)
    adata.var["moranI_pval"] = pval
    adata.var["moranI_fdr"] = fdr
    adata.var[key_added] = keep
    record(
        adata,
        "filter_ions_spatial",
        {
            "min_moran": float(min_moran) if n_top is None else None,
            "max_fdr": float(max_fdr) if (max_fdr is not None and n_top is None) else None,
            "n_top": int(n_top) if n_top is not None else None,
            "n_neighs": k,
            "spatial_key": spatial_key,
            "key_added": key_added,
            "n_kept": int(keep.sum()),
            "subset": bool(subset),
        },
    )
    logger.info("filter_ions_spatial: %d of %d features kept", int(keep.sum()), adata.n_vars)
    if subset:
        adata._inplace_subset_var(keep)
    return adata if copy else None
