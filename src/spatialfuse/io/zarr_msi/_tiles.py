"""Worker side of a conversion: fill one chunk-aligned tile of ``X`` and write it to the store.

Everything a tile needs travels in a :class:`TileSpec` of paths and small arrays, never an open
reader, so the same function runs in this process or on a ``dask.distributed`` worker. The client
writes its reader's offset table once (:func:`share_table`), beside the output, where every
worker sees it at the same path, with the identity of both files; each worker process opens the
imzML with that table (:func:`open_shared`: no worker scans the XML) and keeps the reader for its
next tasks (tiles, m/z-axis blocks); a file that changed since is refused.

Three kinds of tables:

* ``"identity"``: continuous data without ``mz=``: ``X`` holds the intensities on the shared axis.
  Where the ``.ibd`` lays them out as a strided matrix, tiles go straight from the memory map into
  zarr, chunk stripe by chunk stripe, with no tile buffer;
* ``"shared_windows"``: continuous data with ``mz=`` windows: column ranges summed per row
  (``np.add.reduceat`` over non-overlapping layers of windows);
* ``"peaks"``: processed data: each peak finds its window (:class:`WindowLookup`) and ``bincount``
  adds it to its cell, exactly as :func:`~spatialfuse.io.imzml.read_imzml` does (same order of
  additions, so the same float32 values).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialfuse.errors import FileFormatError
from spatialfuse.io.imzml import _finite, _kernels
from spatialfuse.io.zarr_msi._memory import Plan

#: Working bytes per peak while binning (concatenated arrays, lookups, keys, weights).
_BYTES_PER_PEAK = 64


#: Readers a worker process keeps open (the newest ones).
_KEEP = 2
_READERS: dict[tuple, object] = {}
_READERS_LOCK = threading.Lock()


@dataclass(frozen=True)
class SharedInput:
    """What a task needs to open the input: paths and a few numbers, never an open reader.

    Attributes
    ----------
    imzml
        Absolute path of the ``.imzML`` file.
    offsets
        The shared offset table (``.npz`` written by :func:`share_table`), or None: the worker
        opens the file as usual (its own offset-table cache, else a scan).
    n_spectra, ibd_size
        The input as the client saw it, to refuse a file that changed since.
    cache
        Use the offset-table cache where ``offsets`` is None.
    """

    imzml: str
    offsets: str | None
    n_spectra: int
    ibd_size: int
    cache: bool = True


def _identity(reader) -> np.ndarray:
    stats = [os.stat(reader.path), os.stat(reader.ibd_path)]
    return np.array([v for s in stats for v in (s.st_size, s.st_mtime_ns)], dtype=np.int64)


def share_table(reader, path: str | os.PathLike | None, *, cache: bool = True) -> SharedInput:
    """Write ``reader``'s offset table to ``path`` (``.npz``) once; return what tasks need.

    Parameters
    ----------
    reader
        An open :class:`~spatialfuse.io.imzml.ImzMLReader`.
    path
        Where to write the table (a filesystem every worker sees at the same path), or None to
        write nothing: workers then open the file themselves.
    cache
        Where ``path`` is None: whether workers use their offset-table cache.

    Returns
    -------
    SharedInput
        The paths and sizes a task opens the input from.
    """
    offsets = None
    if path is not None:
        path = Path(path)
        with open(path, "wb") as handle:
            np.savez(handle, _identity=_identity(reader), **reader._table.to_arrays())
        offsets = str(path)
    return SharedInput(
        imzml=str(reader.path.absolute()),
        offsets=offsets,
        n_spectra=int(reader.n_spectra),
        ibd_size=int(reader._acc.size),
        cache=bool(cache),
    )


def _load(source: SharedInput):
    from spatialfuse.io.imzml._reader import ImzMLReader
    from spatialfuse.io.imzml._table import SpectrumTable

    if source.offsets is None:
        return ImzMLReader(source.imzml, cache=source.cache)
    try:
        with open(source.offsets, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        identity = arrays.pop("_identity")
        table = SpectrumTable.from_arrays(arrays)
    except (OSError, KeyError, ValueError) as exc:
        raise FileFormatError(
            source.offsets, f"the offset table shared for {source.imzml} cannot be read: {exc}"
        ) from exc
    reader = ImzMLReader(source.imzml, offsets=table)
    if not np.array_equal(_identity(reader), identity):
        raise FileFormatError(
            source.imzml,
            "changed (size or modification time of the .imzML or .ibd) since its offset table "
            f"was shared in {source.offsets}",
        )
    return reader


def open_shared(source: SharedInput):
    """The reader of ``source``, opened once per process and kept for the next tasks.

    Raises
    ------
    FileFormatError
        The input changed since the client opened it, or the shared table is unreadable.
    """
    stat = os.stat(source.imzml)
    key = (source.imzml, stat.st_size, stat.st_mtime_ns, source.offsets, source.cache)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            # Forget older files (not closed: a task in another thread may still use them; the
            # map goes when the last of them is done).
            while len(_READERS) >= _KEEP:
                _READERS.pop(next(iter(_READERS)))
            reader = _load(source)
            reader._acc.stream = True  # tiles read their spectra once: give the pages back
            _READERS[key] = reader
    if reader.n_spectra != source.n_spectra or reader._acc.size != source.ibd_size:
        raise FileFormatError(
            source.imzml,
            f"changed during the conversion: {reader.n_spectra} spectra now, "
            f"{source.n_spectra} when it began",
        )
    return reader


@dataclass(frozen=True)
class TileSpec:
    """What a tile task needs: the input, the store path, the kind of table and its windows."""

    source: SharedInput
    store: str
    kind: str  # "identity", "shared_windows" or "peaks"
    plan: Plan
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


class StoreRemovedError(RuntimeError):
    """The temporary store vanished: the conversion was abandoned, so this task stops."""


def open_reader(spec: TileSpec):
    """The imzML reader of ``spec``, opened once per process and kept for the next tiles."""
    return open_shared(spec.source)


def run_tile(spec: TileSpec, tile: tuple[int, int, int, int], reader=None):
    """Compute and store tile ``(r0, r1, c0, c1)``; return ``(r0, r1, tic, found)``.

    ``tic`` (float64 total ion counts of spectra ``r0:r1``, summed exactly as
    :meth:`ImzMLReader.tic` does) comes from the tile of each row band that starts at column 0;
    other tiles return None. NaN/±inf intensities are read as 0; ``found`` says which spectra
    held how many (the band's first tile finds them all).
    """
    import zarr

    if reader is None:
        reader = open_reader(spec)
    r0, r1, c0, c1 = tile
    # zarr's test for all-zero chunks costs more than writing them (compressed, they take a few
    # bytes), so every chunk is written.
    array = zarr.open_array(os.path.join(spec.store, "X"), mode="r+").with_config(
        {"write_empty_chunks": True}
    )
    acc = reader._acc
    found: dict[int, int] = {}
    with np.errstate(invalid="ignore"):  # inf - inf: such cells are recomputed
        if c1 > c0:
            if spec.kind == "identity":
                _identity_tile(spec, acc, array, r0, r1, c0, c1)
            elif spec.kind == "shared_windows":
                found.update(_windows_tile(spec, acc, array, r0, r1, c0, c1))
            elif spec.kind == "peaks":
                found.update(_peaks_tile(spec, acc, array, r0, r1, c0, c1))
            else:  # pragma: no cover - the driver sets the kind
                raise ValueError(f"unknown table kind {spec.kind!r}")
        tic = None
        if c0 == 0:
            tic = _kernels.spectrum_sums(acc, r0, r1)
            found.update(_finite.repair_tic(acc, tic, r0))
    return r0, r1, tic, found


def write_stripes(
    spec: TileSpec, array, r0: int, r1: int, c0: int, c1: int, values, *, zero_nonfinite=False
) -> None:
    """Write ``values`` (rows ``r0:r1``, columns ``c0:c1``, any array-like) a few chunks at once.

    zarr encodes the chunks of one write concurrently, each in its own buffer; handing it at most
    ``plan.stripe_chunks`` chunks at a time bounds that memory. ``zero_nonfinite``: write NaN/±inf
    values as 0.
    """
    step = spec.plan.stripe_chunks * spec.plan.chunk_cols
    marker = Path(spec.store) / "zarr.json"
    for a in range(c0, c1, step):
        b = min(c1, a + step)
        if not marker.exists():
            raise StoreRemovedError(f"{spec.store} was removed: the conversion was abandoned")
        part = values[:, a - c0 : b - c0]
        array[r0:r1, a:b] = _finite.zeroed(part) if zero_nonfinite else part


def _identity_tile(spec, acc, array, r0, r1, c0, c1):
    matrix = _kernels.intensity_matrix(acc)
    if matrix is not None:
        # Straight from the memory map: zarr copies each chunk out of the strided view.
        values = matrix[r0:r1, c0:c1]
    else:
        values = np.empty((r1 - r0, c1 - c0), dtype=np.float32)
        for i in range(r0, r1):
            values[i - r0] = acc.array(i, "int")[c0:c1]
    write_stripes(spec, array, r0, r1, c0, c1, values, zero_nonfinite=True)
    del values
    # Tiles may run column band by column band: the rows' other columns are mapped again (from
    # the page cache) by their own tiles.
    acc.done_with(r0, r1)


def _row_blocks(r0: int, r1: int, row_bytes: int, work: int) -> list[tuple[int, int]]:
    rows = max(1, work // max(1, row_bytes))
    return [(a, min(r1, a + rows)) for a in range(r0, r1, rows)]


def _windows_tile(spec, acc, array, r0, r1, c0, c1):
    """Continuous data, ``mz=`` windows: sum each window's column range, per row."""
    axis = _kernels.shared_mz_axis(acc)
    lo, hi = spec.lo[c0:c1], spec.hi[c0:c1]
    i0 = np.searchsorted(axis, lo, side="left")
    i1 = np.maximum(np.searchsorted(axis, hi, side="right"), i0)
    tile = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
    nonempty = i1 > i0
    if nonempty.any():
        first, last = int(i0[nonempty].min()), int(i1[nonempty].max())
        width = last - first
        layers = []
        for layer in _kernels._window_layers(i0.astype(np.float64), i1.astype(np.float64)):
            layer = layer[nonempty[layer]]
            if layer.size == 0:
                continue
            layer = layer[np.argsort(i0[layer], kind="stable")]
            bounds = np.empty(2 * layer.size, dtype=np.int64)
            bounds[0::2], bounds[1::2] = i0[layer] - first, i1[layer] - first
            # The last segment of a layer may end at the block's end: reduceat runs to the end.
            bounds = bounds[bounds < width]
            layers.append((layer, bounds))
        matrix = _kernels.intensity_matrix(acc)
        row_bytes = (0 if matrix is not None else width * 4) + 32 * (c1 - c0)
        for a, b in _row_blocks(r0, r1, row_bytes, spec.plan.work_bytes):
            if matrix is not None:
                block = matrix[a:b, first:last]
            else:
                block = np.stack([acc.array(i, "int")[first:last] for i in range(a, b)])
            for layer, bounds in layers:
                segment = np.add.reduceat(block, bounds, axis=1, dtype=np.float64)
                tile[a - r0 : b - r0, layer] = segment[:, 0::2]
            del block
    found = _finite.repair_window_sums(acc, lo, hi, tile, r0)
    write_stripes(spec, array, r0, r1, c0, c1, tile)
    return found


def _peaks_tile(spec, acc, array, r0, r1, c0, c1):
    """Processed data: bin every peak of spectra ``r0:r1`` into windows ``c0:c1``."""
    t = acc.table
    k = c1 - c0
    lookups = _kernels.window_lookups(spec.lo[c0:c1], spec.hi[c0:c1])
    tile = np.zeros((r1 - r0, k), dtype=np.float32)
    flat = tile.reshape(-1)
    # Cut the rows into blocks whose peaks and cells fit the working budget.
    lengths = np.minimum(t.mz_length[r0:r1], t.int_length[r0:r1]).astype(np.int64)
    cost = np.cumsum(lengths * _BYTES_PER_PEAK + 16 * k)
    a = r0
    while a < r1:
        done = cost[a - r0 - 1] if a > r0 else 0
        b = r0 + int(np.searchsorted(cost, done + spec.plan.work_bytes, side="right"))
        b = min(r1, max(b, a + 1))
        mz, intensity, counts = acc.concatenated(a, b)
        if mz.size:
            key, weight = _kernels.peak_cells(mz, intensity, counts, lookups, k)
            del mz, intensity
            n_cells = (b - a) * k
            offset = (a - r0) * k
            if key.size * 4 > n_cells:  # dense block: one bincount over all its cells
                sums = np.bincount(key, weights=weight, minlength=n_cells)
                flat[offset : offset + n_cells] = sums
            elif key.size:  # sparse block: add up repeats of a cell
                cells, inverse = np.unique(key, return_inverse=True)
                flat[offset + cells] = np.bincount(inverse, weights=weight)
            del key, weight
        a = b
    found = _finite.repair_window_sums(acc, spec.lo[c0:c1], spec.hi[c0:c1], tile, r0)
    write_stripes(spec, array, r0, r1, c0, c1, tile)
    return found
