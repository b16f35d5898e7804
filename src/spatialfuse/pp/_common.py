"""Helpers shared by the preprocessing functions: PCA on the rows with data, provenance.

Input checks and row masks are the data model's (:mod:`spatialfuse.core.adata`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._version import __version__
from spatialfuse.core.adata import check_count, dense_rows, is_dask, row_blocks
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

    if is_dask(adata.X):
        return _streamed_pca(
            adata,
            rows=rows,
            var_mask=var_mask,
            n_comps=n_comps,
            scale=scale,
            max_value=max_value,
            random_state=random_state,
            what=what,
        )
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
    params = {
        "n_comps": n,
        "scaled": bool(scale),
        "max_value": float(max_value) if max_value is not None else None,
        "svd_solver": "arpack",
        "random_state": int(random_state),
        "n_obs_used": int(rows.sum()),
        "n_vars_used": int(var_mask.sum()),
    }
    variance = (tmp.uns["pca"]["variance"], tmp.uns["pca"]["variance_ratio"])
    return _write_pca(adata, scores, tmp.varm["PCs"], variance, params, var_mask, mean, std)


def _write_pca(adata, scores, components, variance, params, var_mask, mean, std) -> dict:
    """Write a PCA's scores, loadings (zero for features not used), variances and moments."""
    loadings = np.zeros((adata.n_vars, scores.shape[1]))
    loadings[var_mask] = components
    adata.obsm["X_pca"] = scores
    adata.varm["PCs"] = loadings
    adata.uns["pca"] = {
        "variance": np.asarray(variance[0]),
        "variance_ratio": np.asarray(variance[1]),
        "params": {k: v for k, v in params.items() if v is not None},
    }
    feature_mean = np.full(adata.n_vars, np.nan)
    feature_std = np.full(adata.n_vars, np.nan)
    feature_mean[var_mask], feature_std[var_mask] = mean, std
    adata.var["pca_mean"] = feature_mean
    adata.var["pca_std"] = feature_std
    return params


def _streamed_pca(adata, *, rows, var_mask, n_comps, scale, max_value, random_state, what):
    """:func:`pca_on_rows` of a dask ``X`` in three passes over blocks of rows, never densified.

    The features' means and variances (merged block by block), then the covariance of the
    (z-scored and clipped, as scanpy's ``scale``) features from their Gram matrix, whose
    eigenvectors are the principal axes, then every row's scores. Holds one block of rows
    (:func:`~spatialfuse.core.adata.row_blocks`, within ``max_block_bytes``), the
    ``features × features`` Gram matrix (float64: 32 MB at 2,000 features, 800 MB at 10,000)
    and the scores; the same axes as ARPACK's up to sign (each axis's largest loading positive).
    """
    import dask.array as da

    columns = np.flatnonzero(var_mask)
    x = adata.X[:, columns] if columns.size < adata.n_vars else adata.X
    if not isinstance(x, da.Array):  # pragma: no cover - is_dask said so
        x = da.asarray(x)
    which = np.flatnonzero(rows)
    m, p = which.size, columns.size
    n = clip_n_comps(n_comps, m, p, what)
    # pass 1: means and variances (Chan et al.'s merge of block moments)
    mean, m2, count = np.zeros(p), np.zeros(p), 0
    low, high = np.full(p, np.inf), np.full(p, -np.inf)
    for _, block in row_blocks(x, rows=which):
        k = block.shape[0]
        block_mean = block.mean(axis=0)
        delta = block_mean - mean
        m2 += ((block - block_mean) ** 2).sum(axis=0) + delta**2 * count * k / (count + k)
        mean += delta * k / (count + k)
        count += k
        low, high = np.minimum(low, block.min(axis=0)), np.maximum(high, block.max(axis=0))
    if not np.any(high > low):
        raise ValueError(
            f"PCA of {what} needs features that vary: all {p} are constant over the {m} "
            "observations (all-zero data?)"
        )
    std = np.sqrt(m2 / (m - 1)) if m > 1 else np.zeros(p)
    divisor = np.where(std > 0, std, 1.0)

    def prepared(block):
        out = block - mean
        if scale:
            out /= divisor
            if max_value is not None:
                np.clip(out, -max_value, max_value, out=out)
        return out

    # pass 2: the covariance of the prepared features
    shift, gram = np.zeros(p), np.zeros((p, p))
    for _, block in row_blocks(x, rows=which):
        z = prepared(block)
        shift += z.sum(axis=0)
        gram += z.T @ z
    shift /= m
    covariance = (gram - m * np.outer(shift, shift)) / (m - 1)
    del gram
    values, vectors = np.linalg.eigh(covariance)
    total = float(np.trace(covariance))
    order = np.argsort(values)[::-1][:n]
    values, vectors = np.maximum(values[order], 0.0), vectors[:, order]
    biggest = np.argmax(np.abs(vectors), axis=0)
    vectors *= np.sign(vectors[biggest, np.arange(n)])
    # pass 3: every row's scores
    scores = np.full((adata.n_obs, n), np.nan)
    for index, block in row_blocks(x, rows=which):
        scores[index] = (prepared(block) - shift) @ vectors
    params = {
        "n_comps": n,
        "scaled": bool(scale),
        "max_value": float(max_value) if max_value is not None else None,
        "svd_solver": "covariance (streamed)",
        "random_state": int(random_state),
        "n_obs_used": m,
        "n_vars_used": p,
    }
    ratio = values / total if total > 0 else np.zeros_like(values)
    return _write_pca(adata, scores, vectors, (values, ratio), params, var_mask, mean, std)


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
