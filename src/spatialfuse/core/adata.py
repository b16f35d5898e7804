"""What every layer asks of an AnnData: is it one, which matrix, which rows hold data.

One place for the checks and accessors that ``pp``, ``tl``, ``pl`` and the exports share, so that
their messages and their handling of sparse, dense and dask-backed tables agree.
"""

from __future__ import annotations

import itertools

import numpy as np


def check_adata(
    adata, name: str = "adata", *, reader: str | None = None, need_x: bool = True
) -> None:
    """Raise unless ``adata`` looks like an AnnData (and, with ``need_x``, has an ``X``).

    Raises
    ------
    TypeError
        Not an AnnData; the message names ``sf.io.<reader>`` when given.
    ValueError
        ``need_x`` and ``adata.X`` is None.
    """
    if not all(hasattr(adata, attr) for attr in ("obs", "var", "obsm", "uns", "X")):
        made_by = f" (as returned by sf.io.{reader})" if reader else ""
        raise TypeError(f"{name} must be an AnnData{made_by}, got {type(adata).__name__}")
    if need_x and adata.X is None:
        raise ValueError(f"{name}.X is empty (None); there is nothing to preprocess")


def check_count(value, name: str, *, minimum: int = 1, optional: bool = False) -> None:
    """Raise ValueError unless ``value`` is an integer ``>= minimum`` (or None when optional)."""
    if optional and value is None:
        return
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        extra = " or None" if optional else ""
        raise ValueError(f"{name} must be an integer >= {minimum}{extra}, got {value!r}")


def is_dask(x) -> bool:
    """Whether ``x`` is a dask array (without importing dask when it was never loaded)."""
    return type(x).__module__.split(".")[0] == "dask"


def feature_matrix(adata, layer: str | None = None, name: str = "adata"):
    """``adata.X`` or ``adata.layers[layer]``, as stored (sparse, dense or dask).

    Raises
    ------
    ValueError
        The layer does not exist, or the matrix is None.
    """
    if layer is None:
        matrix = adata.X
    elif layer in adata.layers:
        matrix = adata.layers[layer]
    else:
        raise ValueError(f"{name} has no layer {layer!r} (layers: {list(adata.layers)})")
    if matrix is None:
        raise ValueError(f"{name}.X is empty (None); pass layer=")
    return matrix


def finite_rows(x, rows: np.ndarray | None = None) -> np.ndarray:
    """Which rows of ``x`` (or of ``x[rows]``) have only finite values; dask is computed.

    NaN rows are spots without data (``sf.tl.map_to_spots``).
    """
    from scipy import sparse

    if rows is not None:
        x = x[np.asarray(rows)]
    if is_dask(x):
        import dask.array as da

        return np.asarray(da.isfinite(x).all(axis=1).compute(), dtype=bool)
    if sparse.issparse(x):
        csr = sparse.csr_matrix(x)
        bad = ~np.isfinite(csr.data)
        row_of = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        return np.bincount(row_of[bad], minlength=csr.shape[0]) == 0
    return np.isfinite(np.asarray(x, dtype=np.float64)).all(axis=1)


def rows_with_data(adata, matrix=None) -> np.ndarray:
    """Rows that hold data: all values finite and, where the table says, ``obs["has_msi"]``.

    :func:`spatialfuse.tl.map_to_spots` marks spots without MSI with ``has_msi`` false; their
    rows are NaN by default but zeros with ``fill_value=0``, and must not count as spectra.
    ``matrix``: the table to check (default ``adata.X``).
    """
    rows = finite_rows(adata.X if matrix is None else matrix)
    if "has_msi" in adata.obs:
        rows &= adata.obs["has_msi"].to_numpy(dtype=bool)
    return rows


def dense_rows(x, rows: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """``x[rows][:, columns]`` as a dense float64 array (dask computed, sparse densified)."""
    from scipy import sparse

    sub = x[np.flatnonzero(rows)]
    if columns is not None:
        sub = sub[:, np.flatnonzero(columns)]
    if is_dask(sub):
        sub = sub.compute()
    if sparse.issparse(sub):
        sub = sub.toarray()
    return np.asarray(sub, dtype=np.float64)


#: Bytes of one block of rows that :func:`row_blocks` hands out (as float64 of ``row_bytes``).
ROW_BLOCK_BYTES = 64 << 20


def row_blocks(
    x,
    *,
    rows: np.ndarray | None = None,
    row_bytes: int | None = None,
    max_bytes: int = ROW_BLOCK_BYTES,
):
    """Blocks of rows of a dense, sparse or dask table, one at a time: bounded memory.

    Parameters
    ----------
    x
        ``(n, p)`` numpy array, scipy sparse matrix or dask array.
    rows
        Only these rows (a boolean mask or sorted integer indices); default: every row.
    row_bytes
        Bytes the caller's work needs per row (default: ``8 · p``, a dense float64 row); blocks
        hold about ``max_bytes / row_bytes`` rows.
    max_bytes
        Size of a block's work.

    Yields
    ------
    tuple[numpy.ndarray, object]
        The rows' indices in ``x`` (increasing) and the block: a float64 array, or a CSR matrix
        where ``x`` is sparse (a sparse one stays sparse).

    Notes
    -----
    A dask array is computed one band of its row chunks at a time (consecutive row chunks up to
    ``4 · max_bytes`` as stored and up to the ``max_block_bytes`` resource limit), and the band
    handed out in blocks: every stored chunk is read once per pass. A row of chunks larger than
    that (a store of few-column chunks spanning many rows, the layout for ion images) is
    computed in slices of rows within it, each slice decoding the row's chunks again.
    """
    n, p = x.shape
    index = np.arange(n)
    if rows is not None:
        rows = np.asarray(rows)
        index = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
    step = max(1, int(max_bytes // max(int(row_bytes or 8 * max(p, 1)), 1)))
    if is_dask(x):
        yield from _dask_row_blocks(x, index, step, max_bytes)
        return
    for a in range(0, index.size, step):
        which = index[a : a + step]
        yield which, _as_block(x[which[0] : which[-1] + 1] if rows is None else x[which])


def _as_block(block):
    """A block of rows as float64: CSR where sparse, else a dense array."""
    from scipy import sparse

    if sparse.issparse(block):
        return sparse.csr_matrix(block, dtype=np.float64)
    return np.asarray(block, dtype=np.float64)


def _dask_row_blocks(x, index: np.ndarray, step: int, max_bytes: int):
    """:func:`row_blocks` of a dask array: bands of whole row chunks, each computed once."""
    from spatialfuse._limits import current_limits

    bounds = np.cumsum((0, *x.chunks[0]))
    row_size = max(x.shape[1], 1) * np.dtype(x.dtype).itemsize
    band_bytes = min(4 * max_bytes, current_limits().max_block_bytes)
    edges = [0]
    for k in range(1, len(bounds)):
        too_big = (bounds[k] - edges[-1]) * row_size > band_bytes
        if too_big and bounds[k - 1] > edges[-1]:
            edges.append(int(bounds[k - 1]))
    edges.append(int(bounds[-1]))
    # A row of chunks larger than the limit is read in slices of rows (each of its chunks is then
    # decoded once per slice: more reading, bounded memory).
    rows = max(1, int(band_bytes // row_size))
    edges = sorted(
        {int(v) for lo, hi in itertools.pairwise(edges) for v in range(lo, hi, rows)}
        | {int(bounds[-1])}
    )
    for lo, hi in itertools.pairwise(edges):
        first, last = np.searchsorted(index, [lo, hi])
        if first == last:
            continue
        band = x[lo:hi].compute()
        for a in range(first, last, step):
            which = index[a : min(a + step, last)]
            yield which, _as_block(band[which - lo])
