"""Helpers shared by the preprocessing functions: PCA on the rows with data, provenance.

Input checks and row masks are the data model's (:mod:`spatialfuse.core.adata`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._version import __version__
from spatialfuse.core.adata import check_count, dense_rows
from spatialfuse.errors import DataWarning

if TYPE_CHECKING:
    import anndata


def clip_n_comps(n_comps: int, n_obs: int, n_vars: int, what: str) -> int:
    """The number of principal components the data allow, warning when ``n_comps`` is reduced."""
    check_count(n_comps, "n_comps")
    limit = min(n_obs, n_vars) - 1
    if limit < 1:
        raise ValueError(
            f"PCA of {what} needs at least 2 observations and 2 features with data, got "
            f"{n_obs} × {n_vars}"
        )
    if n_comps > limit:
        warnings.warn(
            f"n_comps={n_comps} reduced to {limit}: the PCA of {n_obs} {what} × {n_vars} "
            f"features has at most {limit} components",
            DataWarning,
            stacklevel=3,
        )
        return limit
    return int(n_comps)


def pca_on_rows(
    adata: anndata.AnnData,
    *,
    rows: np.ndarray,
    var_mask: np.ndarray,
    n_comps: int,
    scale: bool,
    max_value: float | None,
    random_state: int,
    what: str,
) -> dict[str, Any]:
    """Scanpy's PCA (ARPACK) of ``X`` on ``rows`` × ``var_mask``, written into ``adata``.

    The features are optionally z-scored (scanpy's ``scale``, clipped at ``max_value``) on a
    temporary copy first; ``X`` itself is left as it is. Rows outside ``rows`` get NaN scores.
    Writes ``obsm["X_pca"]``, ``varm["PCs"]`` (zero loadings for features not used) and
    ``uns["pca"]`` (``variance``, ``variance_ratio``, ``params``); returns the parameters used.
    """
    import anndata as ad
    import scanpy as sc

    data = dense_rows(adata.X, rows, var_mask)
    n = clip_n_comps(n_comps, data.shape[0], data.shape[1], what)
    if not np.any(data.max(axis=0) > data.min(axis=0)):
        # ARPACK fails on a zero matrix with an error that names none of this
        raise ValueError(
            f"PCA of {what} needs features that vary: all {data.shape[1]} are constant over the "
            f"{data.shape[0]} observations (all-zero data?)"
        )
    tmp = ad.AnnData(data)
    mean = data.mean(axis=0)
    std = data.std(axis=0, ddof=1) if data.shape[0] > 1 else np.zeros(data.shape[1])
    if scale:
        with warnings.catch_warnings():
            # scanpy warns about constant features; they become zeros, which is what we want
            warnings.simplefilter("ignore", UserWarning)
            sc.pp.scale(tmp, max_value=max_value)
    sc.pp.pca(tmp, n_comps=n, svd_solver="arpack", random_state=random_state)

    scores = np.full((adata.n_obs, n), np.nan)
    scores[rows] = tmp.obsm["X_pca"]
    loadings = np.zeros((adata.n_vars, n))
    loadings[var_mask] = tmp.varm["PCs"]
    adata.obsm["X_pca"] = scores
    adata.varm["PCs"] = loadings
    params = {
        "n_comps": n,
        "scaled": bool(scale),
        "max_value": float(max_value) if max_value is not None else None,
        "svd_solver": "arpack",
        "random_state": int(random_state),
        "n_obs_used": int(rows.sum()),
        "n_vars_used": int(var_mask.sum()),
    }
    adata.uns["pca"] = {
        "variance": np.asarray(tmp.uns["pca"]["variance"]),
        "variance_ratio": np.asarray(tmp.uns["pca"]["variance_ratio"]),
        "params": {k: v for k, v in params.items() if v is not None},
    }
    feature_mean = np.full(adata.n_vars, np.nan)
    feature_std = np.full(adata.n_vars, np.nan)
    feature_mean[var_mask], feature_std[var_mask] = mean, std
    adata.var["pca_mean"] = feature_mean
    adata.var["pca_std"] = feature_std
    return params


def record(adata: anndata.AnnData, function: str, params: dict[str, Any]) -> None:
    """Store ``params`` under ``uns["spatialfuse"]["preprocessing"][function]`` (h5ad-writable)."""
    info = adata.uns.get("spatialfuse")
    info = dict(info) if info is not None else {}
    steps = dict(info.get("preprocessing", {}) or {})
    steps[function] = {
        **{k: v for k, v in params.items() if v is not None},
        "version": __version__,
    }
    info["preprocessing"] = steps
    adata.uns["spatialfuse"] = info
