"""Reading MSI zarr stores: a dask-backed AnnData, ion images, and sparse products chunk-wise."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from spatialfuse.core.mz import mz_windows
from spatialfuse.errors import DataWarning, FileFormatError, MissingFileError
from spatialfuse.io.imzml._finite import nonfinite_message, zeroed
from spatialfuse.io.imzml._reader import check_grid_size
from spatialfuse.io.zarr_msi._check import check_store, chunk_error
from spatialfuse.io.zarr_msi._convert import STORE_FORMAT, _require_zarr


def open_msi_store(path: str | os.PathLike):
    """The root group of a store written by :func:`convert_imzml` (read-only), checked.

    Raises
    ------
    MissingFileError
        There is nothing at ``path``.
    FileFormatError
        ``path`` is not such a store, or it is damaged: an array missing or of the wrong kind,
        shape or dtype, shapes that disagree, chunks of ``X`` missing, or a declared size that
        the stored bytes cannot hold (refused before anything is allocated).
    """
    return _open_checked(path)[0]


def _open_checked(path: str | os.PathLike):
    """``(root, layout)`` of the store at ``path``, checked (see :func:`open_msi_store`)."""
    zarr = _require_zarr()
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "no such MSI zarr store")
    try:
        root = zarr.open_group(path, mode="r")
    except Exception as exc:
        raise FileFormatError(path, f"is not a zarr store ({exc})") from exc
    info = root.attrs.get("spatialfuse_store")
    if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
        raise FileFormatError(path, "is not an MSI store written by spatialfuse.io.convert_imzml")
    return root, check_store(path, root)


def _warn_nonfinite(path, layout) -> None:
    n_values, n_spectra = layout.nonfinite
    if n_values:
        source = layout.provenance.get("file", "its imzML")
        warnings.warn(
            nonfinite_message(f"{path} (converted from {source})", n_values, n_spectra),
            DataWarning,
            stacklevel=3,
        )


class _CheckedX:
    """``X`` of a store as dask reads it: NaN/±inf read as 0, a damaged chunk a FileFormatError.

    (Stores written by :func:`convert_imzml` hold no NaN/±inf; older ones may.)
    """

    def __init__(self, array, path: Path):
        self.array = array
        self.path = path
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = array.ndim

    def __getitem__(self, key):
        try:
            block = self.array[key]
        except Exception as exc:  # codecs raise many types for corrupt bytes
            raise chunk_error(self.path, exc, f"at {key}") from exc
        return zeroed(block)


def read_msi_zarr(path: str | os.PathLike, *, chunks=None):
    """Open a store written by :func:`convert_imzml` as an AnnData whose ``X`` is a dask array.

    Nothing of ``X`` is read until it is computed; ``obs``, ``var``, ``obsm`` and ``uns`` (small)
    are read at once and laid out as by :func:`~spatialfuse.io.read_imzml`.

    Parameters
    ----------
    path
        The store.
    chunks
        dask chunks of ``X``; by default the stored chunks (best: multiples of them).
        ``"shards"``: one dask chunk per shard of a sharded store (a row of stored chunks side
        by side, up to ~128 MB), which whole-table passes read faster (one read per shard);
        a store without shards keeps its chunks.

    Returns
    -------
    anndata.AnnData
        AnnData with a lazy ``X`` (float32, pixels × features). Per-pixel work runs chunk-wise:
        ``adata.X.sum(axis=1)``, ``adata.X / adata.obs["tic"].to_numpy()[:, None]``; for a sparse
        weight matrix ``W`` (e.g. spots × pixels) use :func:`sparse_matmul` — ``W @ adata.X`` with
        a scipy ``W`` would load all of ``X``.

    Raises
    ------
    MissingFileError, FileFormatError
        As :func:`open_msi_store`; computing ``X`` raises FileFormatError for a chunk that cannot
        be decoded.

    Warns
    -----
    DataWarning
        The imzML held NaN or infinite intensities, which the conversion stored as 0.
    """
    import anndata as ad
    import dask.array as da
    from anndata.io import read_elem
    from dask.base import tokenize

    path = Path(path)
    root, layout = _open_checked(path)
    try:
        obs = read_elem(root["obs"])
        var = read_elem(root["var"])
        spatial = np.asarray(root["obsm"]["spatial"][:], dtype=np.float64)
    except Exception as exc:  # anndata and zarr raise many types for damaged metadata
        problem = f"{type(exc).__name__}: {exc}"
        raise FileFormatError(
            path, f"damaged MSI store: obs, var or obsm cannot be read ({problem})"
        ) from exc
    x = root["X"]
    if isinstance(chunks, str) and chunks == "shards":
        chunks = getattr(x, "shards", None) or x.chunks
    chunks = x.chunks if chunks is None else chunks
    X = da.from_array(
        _CheckedX(x, path),
        chunks=chunks,
        name="from-zarr-" + tokenize(str(path.absolute()), x.shape, x.dtype.str, chunks),
        inline_array=True,
        meta=np.empty((0, 0), dtype=x.dtype),
    )
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["spatial"] = spatial
    adata.uns["spatialfuse"] = dict(layout.provenance)
    _warn_nonfinite(path, layout)
    return adata


def ion_image_from_zarr(
    store,
    mz: float,
    *,
    tol: float | None = None,
    ppm: float | None = None,
    fill: float = np.nan,
) -> np.ndarray:
    """Ion image from a converted store: the features with m/z in ``mz ± tol`` (or ``± ppm``).

    Reads only the chunks that hold those columns, one band of chunk rows at a time. For a
    continuous file stored on its own axis this equals :meth:`ImzMLReader.ion_image` (same window
    rule, float32 intensities); for binned stores it sums the features whose centre falls in the
    window.

    Parameters
    ----------
    store
        Path of the store (or its open root group from :func:`open_msi_store`).
    mz
        Centre of the window.
    tol, ppm
        Half-width in m/z units or in parts per million; with neither, 10 ppm.
    fill
        Value of grid positions without a spectrum.

    Returns
    -------
    numpy.ndarray
        float64 image of the bounding box of the pixel grid: row ``r``, column ``c`` is position
        ``(x0 + c, y0 + r)``, as :meth:`ImzMLReader.to_image`.

    Raises
    ------
    MissingFileError, FileFormatError
        As :func:`open_msi_store`; also for positions spanning an implausibly large grid and for
        a chunk that cannot be decoded.

    Warns
    -----
    DataWarning
        The imzML held NaN or infinite intensities, which the conversion stored as 0.
    """
    if hasattr(store, "attrs") and hasattr(store, "members"):
        root = store
        path = Path(getattr(root.store, "root", "") or "MSI store")
        layout = check_store(path, root)
    else:
        path = Path(store)
        root, layout = _open_checked(path)
    _, lo, hi = mz_windows([mz], tol=tol, ppm=ppm)
    n = layout.n
    obs = root["obs"]
    xs = np.asarray(obs["imzml_x"][:], dtype=np.int64)
    ys = np.asarray(obs["imzml_y"][:], dtype=np.int64)
    if n == 0:
        return np.full((0, 0), fill, dtype=np.float64)
    x0, y0 = int(xs.min()), int(ys.min())
    rows, cols = int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1
    check_grid_size(path, rows, cols, n)
    centres = np.asarray(root["var"]["mz"][:], dtype=np.float64)
    values = _column_sums(_CheckedX(root["X"], path), (centres >= lo[0]) & (centres <= hi[0]))
    image = np.full((rows, cols), fill, dtype=np.result_type(np.float64, np.asarray(fill).dtype))
    image[ys - y0, xs - x0] = values
    _warn_nonfinite(path, layout)
    return image


def _column_sums(x: _CheckedX, chosen: np.ndarray) -> np.ndarray:
    """Per-row float64 sums of the ``chosen`` columns of ``x``, one band of chunk rows at a time."""
    n = x.shape[0]
    values = np.zeros(n, dtype=np.float64)
    columns = np.flatnonzero(chosen)
    if columns.size == 0:
        return values
    first, last = int(columns[0]), int(columns[-1]) + 1
    contiguous = last - first == columns.size
    step = int(x.array.chunks[0])
    for a in range(0, n, step):
        b = min(n, a + step)
        block = x[a:b, first:last]
        if not contiguous:
            block = block[:, columns - first]
        values[a:b] = block.sum(axis=1, dtype=np.float64)
    return values


def _left_product(w, x):
    """One block of ``W @ X``, with a length-1 axis for the blocks to be summed over."""
    return np.asarray(w @ x)[:, None, :]


def sparse_matmul(weights, X):
    """``weights @ X`` for a (sparse) weight matrix and a dask ``X``, chunk by chunk, lazily.

    Parameters
    ----------
    weights
        ``(m, n_pixels)`` scipy sparse matrix or array (e.g. spots × pixels), or a dense array.
    X
        ``(n_pixels, n_features)`` dask array (``read_msi_zarr(...).X``); numpy arrays and scipy
        matrices are multiplied at once.

    Returns
    -------
    dask.array.Array
        ``(m, n_features)`` dask array of ``result_type(weights, X)``: each block of ``X`` rows is
        multiplied by the matching columns of ``weights`` and the products summed; row blocks that
        ``weights`` does not touch are never read.
    """
    from scipy import sparse

    try:
        import dask.array as da
    except ImportError:  # pragma: no cover - dask is optional for in-memory inputs
        da = None
    if da is None or not isinstance(X, da.Array):
        return weights @ X
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}")
    w = sparse.csc_matrix(weights)
    if w.shape[1] != X.shape[0]:
        raise ValueError(f"weights has {w.shape[1]} columns, X has {X.shape[0]} rows")
    dtype = np.result_type(w.dtype, X.dtype)
    m = w.shape[0]
    bounds = np.cumsum((0, *X.chunks[0]))
    used = [i for i in range(len(X.chunks[0])) if w.indptr[bounds[i + 1]] > w.indptr[bounds[i]]]
    if not used:
        return da.zeros((m, X.shape[1]), chunks=((m,), X.chunks[1]), dtype=dtype)
    if len(used) < len(X.chunks[0]):
        X = X.blocks[used]
        columns = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in used])
        w = w[:, columns]
    w = sparse.csr_matrix(w)
    w_blocks = da.from_array(w, chunks=((m,), X.chunks[0]), asarray=False, meta=w[:0, :0])
    parts = da.blockwise(
        _left_product,
        "ikj",
        w_blocks,
        "ik",
        X,
        "kj",
        adjust_chunks={"k": 1},
        dtype=dtype,
        meta=np.empty((0, 0, 0), dtype=dtype),
    )
    return parts.sum(axis=1, dtype=dtype)
