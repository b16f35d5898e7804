"""What mapping onto Visium spots (``_mapping``) and onto Visium HD bins (``_bins``) share.

Checks of the inputs, the feature matrix as mapping reads it, the record of the transform, and
the weighted sum of MSI rows (``weights @ matrix``) in bounded blocks, also for a store-backed
(dask) table.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._limits import current_limits
from spatialfuse.core.adata import feature_matrix, is_dask
from spatialfuse.reg import Transform

if TYPE_CHECKING:
    from scipy import sparse

_NNZ_PER_BLOCK = 1 << 16


def _check_transform(transform) -> None:
    if not isinstance(transform, Transform):
        hint = ""
        if isinstance(transform, np.ndarray | list | tuple):
            hint = "; wrap a 3 × 3 (or 2 × 3) matrix as sf.reg.AffineTransform(matrix)"
        raise TypeError(
            "transform must be a spatialfuse Transform mapping MSI µm → Visium µm "
            f"(sf.reg.AffineTransform, DisplacementField, ...), got {type(transform).__name__}"
            + hint
        )


def _positive(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return number


def _feature_matrix(adata, layer: str | None, name: str):
    from scipy import sparse

    matrix = feature_matrix(adata, layer, name)
    if sparse.issparse(matrix):
        return matrix.tocsr() if matrix.format != "csr" else matrix
    if is_dask(matrix):
        # A dask-backed table (``sf.io.read_msi_zarr``): keep it lazy; only the rows the weights
        # touch are read, block by block (see _weighted_rows).
        return matrix
    return np.asarray(matrix)


def _transform_record(transform: Transform) -> dict[str, Any]:
    record: dict[str, Any] = {"kind": transform.kind, "is_linear": bool(transform.is_linear)}
    matrix = _affine_matrix(transform)
    if matrix is not None:
        record["matrix"] = matrix.copy()
    record["description"] = repr(transform)
    return record


def _affine_matrix(transform: Transform) -> np.ndarray | None:
    """The 3 × 3 matrix of a linear transform, else None."""
    if not transform.is_linear:
        return None
    return np.asarray(transform.as_affine().matrix, dtype=np.float64)


def _used_columns(weights: sparse.csr_matrix) -> np.ndarray:
    """Sorted distinct column indices of a CSR matrix (a presence mask: O(columns + nnz))."""
    used = np.zeros(weights.shape[1], dtype=bool)
    used[weights.indices] = True
    return np.flatnonzero(used)


def _weighted_rows(weights: sparse.csr_matrix, matrix, has_rows: np.ndarray, fill_value: float):
    """``weights @ matrix`` using only the columns ``weights`` touches; empty rows filled."""
    from scipy import sparse

    n_rows, n_vars = weights.shape[0], matrix.shape[1]
    dtype = np.result_type(matrix.dtype, np.float32)
    if is_dask(matrix):
        result = _streamed_product(weights, matrix, current_limits().max_block_bytes)
        result[~has_rows] = fill_value
        return result.astype(dtype, copy=False)
    columns = _used_columns(weights)
    compact = sparse.csr_matrix(
        (weights.data, np.searchsorted(columns, weights.indices), weights.indptr),
        shape=(n_rows, columns.size),
    )
    if sparse.issparse(matrix):
        sub = matrix[columns].astype(np.float64)
        result = sparse.csr_matrix(compact @ sub)
        result.eliminate_zeros()
        if fill_value != 0 and (~has_rows).any():
            missing = np.flatnonzero(~has_rows)
            filler = sparse.csr_matrix(
                (
                    np.full(missing.size * n_vars, fill_value, dtype=np.float64),
                    (np.repeat(missing, n_vars), np.tile(np.arange(n_vars), missing.size)),
                ),
                shape=(n_rows, n_vars),
            )
            result = (result + filler).tocsr()
        result.sort_indices()
        return result.astype(dtype)
    result = np.empty((n_rows, n_vars), dtype=dtype)
    # Rows in blocks of bounded weight count, so the float64 copy of the rows of ``matrix`` that a
    # block touches stays small (tens of MB) whatever the number of spots.
    indptr = weights.indptr
    start = 0
    while start < n_rows:
        stop = int(np.searchsorted(indptr, indptr[start] + _NNZ_PER_BLOCK, side="right")) - 1
        stop = min(max(stop, start + 1), n_rows)
        block = compact[start:stop]
        cols = _used_columns(block) if block.shape[1] <= 4 * block.nnz else np.unique(block.indices)
        small = sparse.csr_matrix(
            (block.data, np.searchsorted(cols, block.indices), block.indptr),
            shape=(stop - start, cols.size),
        )
        result[start:stop] = small @ np.asarray(matrix[columns[cols]], dtype=np.float64)
        start = stop
    result[~has_rows] = fill_value
    return result


def _streamed_product(weights: sparse.csr_matrix, matrix, max_bytes: int) -> np.ndarray:
    """``weights @ matrix`` (float64) for a dask ``matrix``, one block of its chunks at a time.

    Every chunk of ``matrix`` in a band of rows that ``weights`` touches is computed once, in
    blocks of one row chunk × as many column chunks as ``max_bytes`` allows (at least one):
    the block as stored, its rows the weights use in float64 and their product. Nothing else of
    ``matrix`` is held; the result (rows of ``weights`` × features) is.
    """
    n_rows, n_vars = weights.shape[0], matrix.shape[1]
    result = np.zeros((n_rows, n_vars), dtype=np.float64)
    by_pixel = weights.tocsc()
    row_bounds = np.cumsum((0, *matrix.chunks[0]))
    col_bounds = np.cumsum((0, *matrix.chunks[1]))
    itemsize = np.dtype(matrix.dtype).itemsize
    for a, b in itertools.pairwise(int(v) for v in row_bounds):
        if by_pixel.indptr[b] == by_pixel.indptr[a]:
            continue  # no spot uses these pixels: never read
        part = by_pixel[:, a:b]
        used = np.flatnonzero(np.diff(part.indptr))
        w = part[:, used].tocsr()
        per_column = (b - a) * itemsize + 8 * (used.size + n_rows)
        width = max(1, int(max_bytes) // per_column)
        c = 0
        while c < n_vars:
            # whole column chunks up to ``width`` columns, at least one
            k = int(np.searchsorted(col_bounds, c, side="right"))
            d = int(col_bounds[k])
            while k + 1 < len(col_bounds) and col_bounds[k + 1] - c <= width:
                k += 1
                d = int(col_bounds[k])
            block = np.asarray(matrix[a:b, c:d].compute())
            result[:, c:d] += w @ np.asarray(block[used], dtype=np.float64)
            del block
            c = d
    return result


def _new_anndata(values, obs, var):
    import anndata as ad

    with warnings.catch_warnings():
        # anndata warns when it turns a non-string index into strings; ours are strings already.
        warnings.simplefilter("ignore", category=UserWarning)
        return ad.AnnData(X=values, obs=obs, var=var)
