"""Per-spectrum normalisation of MSI tables (TIC, RMS, median) for dense, sparse and dask ``X``."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._docs import copy_and_returns, fill_doc
from spatialfuse._logging import logger
from spatialfuse.core.adata import check_adata, is_dask
from spatialfuse.errors import DataWarning
from spatialfuse.pp._common import record

if TYPE_CHECKING:
    import anndata

__all__ = ["NORM_METHODS", "normalize_msi"]

NORM_METHODS = ("tic", "rms", "median", "none")


@fill_doc(copy=copy_and_returns())
def normalize_msi(
    adata: anndata.AnnData,
    *,
    method: str = "tic",
    log: bool = True,
    target: float | None = None,
    key_added: str = "norm_factor",
    copy: bool = False,
) -> anndata.AnnData | None:
    """Divide each spectrum by its own scale factor, then optionally take ``log1p``.

    Each spectrum (row) ``x`` is replaced by ``target · x / f(x)`` with

    - ``"tic"``: ``f`` = the total ion current, the sum of the intensities;
    - ``"rms"``: ``f`` = the root mean square of the intensities over all features;
    - ``"median"``: ``f`` = the median of the spectrum's *positive* intensities (centroided MSI
      tables are mostly zeros, whose median would be 0);
    - ``"none"``: no scaling (``log`` still applies).

    Rows made only of NaN, and rows with ``obs["has_msi"]`` false, are spots without MSI data
    (as :func:`spatialfuse.tl.map_to_spots` writes them): they are left as they are (NaN, or
    zeros with ``fill_value=0``) and out of every statistic. Isolated NaN values inside a
    spectrum are ignored by its factor and stay NaN. A spectrum whose factor is 0 (all zeros) is
    left at zero, with a :class:`~spatialfuse.errors.DataWarning`, rather than divided by zero.

    A dask-backed ``X`` (:func:`spatialfuse.io.read_msi_zarr`) stays lazy: one chunk-wise pass
    computes the per-spectrum factors (one number per row) and the scaled, logged table is a new
    dask array; nothing else is read until it is computed. Sparse ``X`` stays sparse (only the
    stored values change; ``log1p(0) = 0``).

    Parameters
    ----------
    adata
        Spectra × m/z features, e.g. from :func:`~spatialfuse.io.read_imzml` or spots × m/z from
        :func:`~spatialfuse.tl.map_to_spots`.
    method
        ``"tic"``, ``"rms"``, ``"median"`` or ``"none"`` (see above).
    log
        Apply ``log1p`` (natural log) after scaling.
    target
        Value of the factor after normalisation; None: the median factor over the spectra with
        data (so intensities keep their usual magnitude, as ``target_sum=None`` in scanpy).
    key_added
        Name of the ``obs`` column that receives each spectrum's factor.
    {copy}

        - ``X``: the normalised (and logged) intensities; float32 for float32 or integer input,
          else float64; a dask array for a dask ``X``;
        - ``obs[key_added]``: each spectrum's factor ``f`` (NaN for rows without data; absent
          for ``method="none"``);
        - ``uns["log1p"]`` (when ``log``), as scanpy writes it;
        - ``uns["spatialfuse"]["preprocessing"]["normalize_msi"]``: method, target, log.

    Raises
    ------
    TypeError
        ``adata`` is not an AnnData.
    ValueError
        Unknown ``method``, a non-positive ``target``, or negative intensities with ``log``.

    Warns
    -----
    DataWarning
        Some spectra are all zeros (left at zero), or no spectrum has data.
    """
    check_adata(adata)
    if method not in NORM_METHODS:
        raise ValueError(f"method must be one of {NORM_METHODS}, got {method!r}")
    if target is not None and not (np.isfinite(target) and target > 0):
        raise ValueError(f"target must be a positive number or None, got {target!r}")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}")

    x = adata.X
    factors, missing, minimum = _row_statistics(x, method)
    if log and minimum < 0:
        raise ValueError(
            f"the intensities contain negative values (minimum {minimum:g}); log1p needs "
            "non-negative data: clip them or pass log=False"
        )
    if "has_msi" in adata.obs:
        missing = missing | ~adata.obs["has_msi"].to_numpy(dtype=bool)
    has_data = ~missing
    if not has_data.any():
        warnings.warn("no spectrum has data (every row is NaN)", DataWarning, stacklevel=2)

    scale = None
    used_target = None
    if method != "none":
        zero = has_data & ~(factors > 0)
        if zero.any():
            warnings.warn(
                f"{int(zero.sum()):,} of {int(has_data.sum()):,} spectra have a {method} of 0 "
                "(all zeros); they are left at zero",
                DataWarning,
                stacklevel=2,
            )
        good = has_data & (factors > 0)
        used_target = (
            float(target)
            if target is not None
            else (float(np.median(factors[good])) if good.any() else 1.0)
        )
        scale = np.ones(len(factors))
        scale[good] = used_target / factors[good]

    adata = adata.copy() if copy else adata
    adata.X = _apply(x, scale, log)
    if method != "none":
        adata.obs[key_added] = np.where(missing, np.nan, factors)
    if log:
        adata.uns["log1p"] = {"base": None}
    record(
        adata,
        "normalize_msi",
        {
            "method": method,
            "target": used_target,
            "log": "log1p" if log else "none",
            "factor_key": key_added if method != "none" else None,
            "n_spectra_with_data": int(has_data.sum()),
        },
    )
    logger.info(
        "normalize_msi(%s, log=%s): %d of %d spectra with data",
        method,
        log,
        int(has_data.sum()),
        adata.n_obs,
    )
    return adata if copy else None


# -------------------------------------------------------------------------------------------------


def _row_statistics(x, method: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-row factor, per-row "all NaN" flag, and the smallest finite value of ``x``."""
    if is_dask(x):
        import dask.array as da

        full_rows = x.rechunk({1: -1})
        stats = full_rows.map_blocks(
            _block_statistics,
            method,
            chunks=(full_rows.chunks[0], (3,)),
            dtype=np.float64,
        )
        (stats,) = da.compute(stats)
    else:
        stats = _block_statistics(x, method)
    factors, missing = stats[:, 0], stats[:, 1] > 0
    finite_min = stats[:, 2][np.isfinite(stats[:, 2])]
    return factors, missing, float(finite_min.min()) if finite_min.size else 0.0


def _block_statistics(block, method: str) -> np.ndarray:
    """``(n_rows, 3)``: the factor, 1 if the row is all NaN, the row's smallest finite value."""
    from scipy import sparse

    if sparse.issparse(block):
        return _sparse_statistics(sparse.csr_matrix(block), method)
    block = np.asarray(block, dtype=np.float64)
    n, n_vars = block.shape
    out = np.zeros((n, 3))
    finite = np.isfinite(block)
    out[:, 1] = ~finite.any(axis=1) if n_vars else 1.0
    clean = np.where(finite, block, 0.0)
    if method == "tic":
        out[:, 0] = clean.sum(axis=1)
    elif method == "rms":
        n_finite = np.maximum(finite.sum(axis=1), 1)
        out[:, 0] = np.sqrt((clean * clean).sum(axis=1) / n_finite)
    elif method == "median":
        positive = np.where(clean > 0, clean, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rows without a positive value
            out[:, 0] = np.nan_to_num(np.nanmedian(positive, axis=1), nan=0.0) if n_vars else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out[:, 2] = np.nanmin(np.where(finite, block, np.nan), axis=1) if n_vars else np.nan
    return out


def _sparse_statistics(csr, method: str) -> np.ndarray:
    n, n_vars = csr.shape
    per_row = np.diff(csr.indptr)
    rows = np.repeat(np.arange(n), per_row)
    data = np.asarray(csr.data, dtype=np.float64)
    finite = np.isfinite(data)
    n_nan = np.bincount(rows[~finite], minlength=n)
    clean = np.where(finite, data, 0.0)
    out = np.zeros((n, 3))
    out[:, 1] = n_nan >= n_vars
    if method == "tic":
        out[:, 0] = np.bincount(rows, weights=clean, minlength=n)
    elif method == "rms":
        n_finite = np.maximum(n_vars - n_nan, 1)
        out[:, 0] = np.sqrt(np.bincount(rows, weights=clean * clean, minlength=n) / n_finite)
    elif method == "median":
        out[:, 0] = _sparse_positive_median(rows[clean > 0], clean[clean > 0], n)
    # implicit zeros count as values
    stored_min = np.full(n, np.inf)
    np.minimum.at(stored_min, rows[finite], data[finite])
    implicit = per_row < n_vars
    row_min = np.where(implicit, np.minimum(stored_min, 0.0), stored_min)
    out[:, 2] = np.where(np.isinf(row_min), np.nan, row_min)
    return out


def _sparse_positive_median(rows: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Median of ``values`` grouped by ``rows`` (0 where a row has none), without a row loop."""
    order = np.lexsort((values, rows))
    values = values[order]
    counts = np.bincount(rows, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    has = counts > 0
    lo = np.where(has, starts + (counts - 1) // 2, 0)
    hi = np.where(has, starts + counts // 2, 0)
    if not values.size:
        return np.zeros(n)
    return np.where(has, 0.5 * (values[lo] + values[hi]), 0.0)


def _apply(x, scale: np.ndarray | None, log: bool):
    """``log1p(scale[:, None] · x)`` for dense, sparse (stored values only) and dask ``x``."""
    from scipy import sparse

    dtype = np.float64 if np.dtype(x.dtype) == np.float64 else np.float32
    if is_dask(x):
        import dask.array as da

        out = x.astype(dtype)
        if scale is not None:
            out = out * scale.astype(dtype)[:, None]
        return da.log1p(out) if log else out
    if sparse.issparse(x):
        out = sparse.csr_matrix(x, dtype=dtype, copy=True)
        if scale is not None:
            out.data *= np.repeat(scale, np.diff(out.indptr)).astype(dtype)
        if log:
            np.log1p(out.data, out=out.data)
        return out
    out = np.array(x, dtype=dtype, copy=True)
    if scale is not None:
        out *= scale.astype(dtype)[:, None]
    if log:
        np.log1p(out, out=out)
    return out
