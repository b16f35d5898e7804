"""Helpers shared by the preprocessing functions: PCA on the rows with data, provenance.

Input checks and row masks are the data model's (:mod:`spatialfuse.core.adata`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

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


class _Fit(NamedTuple):
    """A PCA of the used rows × features: full-height scores (NaN rows where unused)."""

    scores: np.ndarray
    components: np.ndarray
    variance: np.ndarray
    variance_ratio: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    solver: str


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
    A dask ``X`` is not densified: its PCA is streamed (:func:`_streamed_pca`).
    Writes ``obsm["X_pca"]``, ``varm["PCs"]`` (zero loadings for features not used),
    ``uns["pca"]`` (``variance``, ``variance_ratio``, ``params``) and ``var["pca_mean"]``,
    ``var["pca_std"]`` (NaN for features not used); returns the parameters used.
    """
    n_obs, n_vars = int(rows.sum()), int(var_mask.sum())
    n = clip_n_comps(n_comps, n_obs, n_vars, what)
    compute = _streamed_pca if is_dask(adata.X) else _arpack_pca
    fit = compute(adata.X, rows, var_mask, n, scale, max_value, random_state, what)
    params = {
        "n_comps": n,
        "scaled": bool(scale),
        "max_value": float(max_value) if max_value is not None else None,
        "svd_solver": fit.solver,
        "random_state": int(random_state),
        "n_obs_used": n_obs,
        "n_vars_used": n_vars,
    }
    loadings = np.zeros((adata.n_vars, n))
    loadings[var_mask] = fit.components
    adata.obsm["X_pca"] = fit.scores
    adata.varm["PCs"] = loadings
    adata.uns["pca"] = {
        "variance": np.asarray(fit.variance),
        "variance_ratio": np.asarray(fit.variance_ratio),
        "params": {k: v for k, v in params.items() if v is not None},
    }
    feature_mean = np.full(adata.n_vars, np.nan)
    feature_std = np.full(adata.n_vars, np.nan)
    feature_mean[var_mask], feature_std[var_mask] = fit.mean, fit.std
    adata.var["pca_mean"] = feature_mean
    adata.var["pca_std"] = feature_std
    return params


def _require_variation(low: np.ndarray, high: np.ndarray, n_obs: int, what: str) -> None:
    """ARPACK fails on a zero matrix with an error that names none of this: say it first."""
    if not np.any(high > low):
        raise ValueError(
            f"PCA of {what} needs features that vary: all {low.size} are constant over the "
            f"{n_obs} observations (all-zero data?)"
        )


def _arpack_pca(x, rows, var_mask, n, scale, max_value, random_state, what) -> _Fit:
    """Scanpy's ``scale`` (optional) and ARPACK PCA of the dense ``rows`` × ``var_mask``."""
    import anndata as ad
    import scanpy as sc

    data = dense_rows(x, rows, var_mask)
    _require_variation(data.min(axis=0), data.max(axis=0), data.shape[0], what)
    tmp = ad.AnnData(data)
    mean = data.mean(axis=0)
    std = data.std(axis=0, ddof=1) if data.shape[0] > 1 else np.zeros(data.shape[1])
    if scale:
        with warnings.catch_warnings():
            # scanpy warns about constant features; they become zeros, which is what we want
            warnings.simplefilter("ignore", UserWarning)
            sc.pp.scale(tmp, max_value=max_value)
    sc.pp.pca(tmp, n_comps=n, svd_solver="arpack", random_state=random_state)
    scores = np.full((x.shape[0], n), np.nan)
    scores[rows] = tmp.obsm["X_pca"]
    pca = tmp.uns["pca"]
    return _Fit(
        scores, tmp.varm["PCs"], pca["variance"], pca["variance_ratio"], mean, std, "arpack"
    )


def _streamed_pca(x, rows, var_mask, n, scale, max_value, random_state, what) -> _Fit:
    """:func:`pca_on_rows` of a dask ``x`` in three passes over blocks of rows, never densified.

    The features' means and variances (merged block by block), then the covariance of the
    (z-scored and clipped, as scanpy's ``scale``) features from their Gram matrix, whose
    eigenvectors are the principal axes, then every row's scores. Holds one block of rows
    (:func:`~spatialfuse.core.adata.row_blocks`, within ``max_block_bytes``), the
    ``features × features`` Gram matrix (float64: 32 MB at 2,000 features, 800 MB at 10,000)
    and the scores; the same axes as ARPACK's up to sign (each axis's largest loading positive).
    Deterministic: ``random_state`` is unused (recorded all the same).
    """
    import dask.array as da

    n_total = x.shape[0]
    columns = np.flatnonzero(var_mask)
    x = x[:, columns] if columns.size < x.shape[1] else x
    if not isinstance(x, da.Array):  # pragma: no cover - is_dask said so
        x = da.asarray(x)
    which = np.flatnonzero(rows)
    m, p = which.size, columns.size
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
    _require_variation(low, high, m, what)
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
    scores = np.full((n_total, n), np.nan)
    for index, block in row_blocks(x, rows=which):
        scores[index] = (prepared(block) - shift) @ vectors
    ratio = values / total if total > 0 else np.zeros_like(values)
    return _Fit(scores, vectors, values, ratio, mean, std, "covariance (streamed)")


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
