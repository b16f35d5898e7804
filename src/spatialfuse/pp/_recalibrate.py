"""Per-pixel m/z recalibration of profile spectra against reference peaks (lock masses).

Each pixel's mass drift is measured at a few reference m/z values — lock masses the user gives
(an absolute *calibration*), or, without them, the data's own most frequent peaks on the mean
spectrum (an *alignment* of every pixel to the mean, whose own offset stays) — and removed:

1. around each reference ``r``, the pixel's highest point within ``± ppm`` (and at least two
   axis points either side) is taken as its peak
   when it is a local maximum standing ``snr ×`` the pixel's noise (1.4826 × MAD of its non-zero
   points) above the pixel's median; its centroid ``m`` is the vertex of the parabola through the
   logarithms of the apex and its two neighbours (as in :func:`spatialfuse.pp.pick_peaks`), and
   its error is ``e = (m − r) / r`` in ppm;
2. a model of the pixel's error: ``"shift"``, one ppm offset (the median of its errors),
   ``"linear"``, a ppm offset that changes linearly with m/z (least squares; where a pixel has
   fewer than three references it falls back to the shift), or ``"piecewise"``, a ppm offset
   piecewise linear in m/z between ``n_nodes`` nodes at quantiles of the references, fitted by
   least squares with a smoothness penalty between neighbouring nodes (msiWarp-style warping;
   where a pixel has fewer than ``n_nodes + 2`` references it falls back to the linear model);
   with ``group_by`` (e.g. the acquisition line, ``obs["imzml_y"]``) one model per group,
   fitted to its pooled errors (:mod:`spatialfuse.pp._recalibrate_models`);
3. each spectrum is resampled onto the table's own m/z axis at the drifted positions
   (chunk by chunk; a dask table stays lazy),
   ``y_new(m) = y_old(m · (1 + e(m)))`` (linear interpolation), so the table keeps one shared
   axis and every downstream step (peak picking, ion images) sees calibrated spectra;
4. the errors are measured again on the corrected spectra: ``uns[key_added]`` reports the median
   absolute ppm error before and after, per reference and overall.

Written here rather than taken from a library: msiWarp (the anchor of the issue) needs a C++
build (CMake, a C++17 compiler) and works on peak lists; its piecewise warping is written here as
the ``"piecewise"`` model, fitted to the same reference errors as the shift and linear models
(what lock-mass correction on an Orbitrap or a TOF needs), a few vectorised lines on a whole
table.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._logging import logger, progress
from spatialfuse.core.adata import check_adata, is_dask
from spatialfuse.errors import DataWarning, FileFormatError
from spatialfuse.pp._recalibrate_models import (
    MODELS,
    Drift,
    check_n_nodes,
    drift_record,
    fit_drift,
    node_positions,
    write_drift,
)

if TYPE_CHECKING:
    import anndata

    from spatialfuse.io.imzml import FeatureOptions

__all__ = ["measure_errors", "recalibrate"]

#: Intensity values handled per chunk of pixels (16 MiB as float64).
_CHUNK_VALUES = 1 << 21
_SPECTRUM_TYPES = ("auto", "centroid", "profile")


def _raw_block(x, a: int, b: int) -> np.ndarray:
    """Rows ``a:b`` of a dense, sparse or dask table as a float64 array (NaN kept)."""
    from scipy import sparse

    block = x[a:b]
    if hasattr(block, "compute"):
        block = block.compute()
    if sparse.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=np.float64)


def _dense_block(x, a: int, b: int) -> np.ndarray:
    return np.nan_to_num(_raw_block(x, a, b), nan=0.0, posinf=0.0, neginf=0.0)


def _resample(raw: np.ndarray, mz: np.ndarray, drift: Drift) -> np.ndarray:
    """Each row of ``raw`` read at its corrected m/z (``drift``: its rows'); NaN rows stay NaN."""
    empty = np.isnan(raw).all(axis=1)
    block = _resample_clean(np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0), mz, drift)
    block[empty] = np.nan
    return block


def _resample_clean(block: np.ndarray, mz: np.ndarray, drift: Drift) -> np.ndarray:
    """:func:`_resample` of a finite block, in place (one row of work memory)."""
    segments = drift.segments(mz)
    for i in range(block.shape[0]):
        e = drift.ppm(i, mz, segments)
        block[i] = np.interp(mz * (1 + e * 1e-6), mz, block[i], left=0.0, right=0.0)
    return block


def _block_errors(
    block: np.ndarray, mz: np.ndarray, refs: np.ndarray, ppm: float, snr: float
) -> np.ndarray:
    """(rows × references) ppm error of each pixel's peak near each reference; NaN if none."""
    from spatialfuse.pp._peaks import dense_noise

    level, noise = dense_noise(block)
    limit = level + np.maximum(snr * noise, np.finfo(np.float64).tiny)
    out = np.full((block.shape[0], refs.size), np.nan)
    last = mz.size - 1
    rows = np.arange(block.shape[0])
    for k, r in enumerate(refs):
        # At least two points either side, however coarse the axis is against ``ppm``.
        at = int(np.searchsorted(mz, r))
        i0 = max(0, min(int(np.searchsorted(mz, r * (1 - ppm * 1e-6), side="left")), at - 2))
        i1 = min(mz.size, max(int(np.searchsorted(mz, r * (1 + ppm * 1e-6), side="right")), at + 2))
        if i1 - i0 < 1:
            continue
        apex = i0 + block[:, i0:i1].argmax(axis=1)
        left, right = np.maximum(apex - 1, 0), np.minimum(apex + 1, last)
        y0, y1, y2 = block[rows, left], block[rows, apex], block[rows, right]
        ok = (y1 >= limit) & (y1 >= y0) & (y1 >= y2) & (apex > 0) & (apex < last)
        ok &= (y0 > 0) & (y2 > 0)
        l0, l1, l2 = (np.log(np.where(ok, v, 1.0)) for v in (y0, y1, y2))
        x0, x1, x2 = mz[left], mz[apex], mz[right]
        d0, d2 = x0 - x1, x2 - x1
        den = 2.0 * ((l0 - l1) * d2 - (l2 - l1) * d0)
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = ((l0 - l1) * d2 * d2 - (l2 - l1) * d0 * d0) / den
        shift = np.where(np.isfinite(shift) & (shift > d0) & (shift < d2), shift, 0.0)
        centre = x1 + shift
        out[ok, k] = ((centre - r) / r * 1e6)[ok]
    return out


def measure_errors(adata: anndata.AnnData, reference_mz, *, ppm: float = 30.0, snr: float = 5.0):
    """(pixels × references) ppm error of each pixel's peak nearest each reference (NaN: none).

    ``adata`` holds profile spectra on a sorted ``var["mz"]`` axis.
    """
    mz = np.asarray(adata.var["mz"], dtype=np.float64)
    refs = np.asarray(reference_mz, dtype=np.float64)
    n, step = adata.n_obs, max(1, _CHUNK_VALUES // mz.size)
    return np.concatenate(
        [
            _block_errors(_dense_block(adata.X, a, min(n, a + step)), mz, refs, ppm, snr)
            for a in range(0, n, step)
        ]
        or [np.empty((0, refs.size))]
    )


def _default_references(adata, n_references: int, snr: float) -> np.ndarray:
    """The ``n_references`` peaks of the mean spectrum found in the most pixels."""
    from spatialfuse.pp._peaks import _found_counts, _table_chunks, centroid_peaks

    mz = np.asarray(adata.var["mz"], dtype=np.float64)
    from spatialfuse.pp._peaks import _reference_from_table

    _, mean = _reference_from_table(adata, "mean")
    peaks = centroid_peaks(mz, mean, snr=snr)
    if len(peaks) == 0:
        return peaks.mz
    chunks = _table_chunks(adata.X, mz, peaks.lo, peaks.hi, False)
    found = _found_counts(chunks, len(peaks), snr)
    order = np.lexsort((-peaks.height, -found))[:n_references]
    return np.sort(peaks.mz[order])


def _rows_per_chunk(n_points: int) -> int:
    """Rows of ``n_points`` values that make one chunk of ``_CHUNK_VALUES``."""
    return max(1, _CHUNK_VALUES // max(1, n_points))


def _file_kind(path, spectrum_type: str):
    """``(kind, how decided, open reader)`` of an imzML path for :func:`recalibrate`."""
    from spatialfuse.io.imzml import ImzMLReader

    reader = ImzMLReader(path)
    try:
        kind, how = reader.spectrum_kind()
        if spectrum_type != "auto" and kind != spectrum_type:
            raise FileFormatError(
                path,
                f"spectrum_type={spectrum_type!r} but the file holds {kind} spectra ({how}); "
                "give spectrum_type='auto'",
            )
        if kind == "profile" and reader.shared_mz_axis() is None and _shared_grid(reader) is None:
            raise FileFormatError(
                path,
                "holds processed profile spectra (an m/z array per spectrum) whose m/z values "
                "differ from pixel to pixel: recalibration straight from a file needs a "
                "continuous imzML (one shared m/z axis), processed profile spectra on one grid, "
                "or centroid spectra; read it with sf.io.read_imzml first (a common axis)",
            )
    except BaseException:
        reader.close()
        raise
    return kind, how, reader


#: A processed file's m/z values form one grid when the closest two of all its distinct values
#: are at least this fraction of the finest step inside any one spectrum apart (values that
#: move from pixel to pixel leave gaps of a small fraction of a spectrum's own steps).
_GRID_MIN_GAP = 0.5


def _shared_grid(reader) -> np.ndarray | None:
    """The sorted m/z values of a processed file whose spectra all sit on one grid, or None.

    A TOF instrument's export (e.g. Bruker timsTOF data converted with zeros left out) writes
    each pixel's points at the m/z of their digitizer index, the same in every pixel: the
    union of the spectra's m/z is then a grid no finer than one spectrum's own steps.
    """
    grid = np.empty(0)
    finest = np.inf
    for _a, _b, mz, _i, lengths in reader.iter_chunks(chunk_spectra=256):
        ends = np.cumsum(lengths)
        steps = np.diff(mz) / mz[1:]
        inside = np.ones(steps.size, dtype=bool)
        inside[ends[:-1][ends[:-1] < mz.size] - 1] = False  # not across two spectra
        if inside.any():
            finest = min(finest, float(steps[inside].min()))
        grid = np.union1d(grid, mz[np.isfinite(mz)])
    if grid.size < 3 or not np.isfinite(finest) or finest <= 0:
        return None
    if float((np.diff(grid) / grid[1:]).min()) < _GRID_MIN_GAP * finest:
        return None
    return grid


def _grid_table(path, reader, pixel_size_um) -> anndata.AnnData:
    """A processed profile file on its shared grid: pixels × grid points, sparse, in memory.

    One window per grid point (edges half-way to the neighbours), so every written point
    lands in its own column: the table a continuous file of the same spectra would give.
    """
    from spatialfuse.io.imzml import MzAxis, read_imzml

    grid = _shared_grid(reader)
    mid = (grid[1:] + grid[:-1]) / 2
    lo = np.r_[grid[0] - (mid[0] - grid[0]), mid]
    hi = np.nextafter(np.r_[mid, grid[-1] + (grid[-1] - mid[-1])], -np.inf)
    return read_imzml(
        path, mz=MzAxis(grid, lo, hi, np.zeros(grid.size)), pixel_size_um=pixel_size_um
    )


def _file_table(path, pixel_size_um) -> anndata.AnnData:
    """A continuous imzML file as a pixels × profile points table whose ``X`` is lazy.

    ``X`` is a dask array of row blocks of ``_CHUNK_VALUES`` values, each read from the
    memory-mapped ``.ibd`` when computed; ``obs``, ``obsm`` and ``uns`` are
    :func:`spatialfuse.io.read_imzml`'s (read for one m/z window, so nothing else is held).
    """
    import anndata as ad
    import dask.array as da
    import pandas as pd

    from spatialfuse.core.mz import mz_feature_names
    from spatialfuse.io.imzml import ImzMLReader, MzAxis, read_imzml

    reader = ImzMLReader(path)
    axis = reader.shared_mz_axis()
    if axis is None:
        reader.close()
        raise ValueError(
            f"{path}: recalibration straight from a file needs a continuous imzML (one shared "
            "m/z axis); read a processed file with sf.io.read_imzml first (a common axis)"
        )
    axis = np.asarray(axis, dtype=np.float64)
    one = axis[:1]
    header = read_imzml(path, mz=MzAxis(one, one, one, np.zeros(1)), pixel_size_um=pixel_size_um)
    n, rows = reader.n_spectra, _rows_per_chunk(axis.size)
    chunks = (tuple(min(rows, n - a) for a in range(0, n, rows)), (axis.size,))

    def load(block_info=None):
        (a, b), _ = block_info[None]["array-location"]
        out = np.zeros((b - a, axis.size), dtype=np.float32)
        for i in range(a, b):
            _, intensity = reader.spectrum(i)
            out[i - a, : intensity.size] = intensity[: axis.size]
        return out

    x = da.map_blocks(load, chunks=chunks, dtype=np.float32, meta=np.empty((0, 0), np.float32))
    var = pd.DataFrame({"mz": axis}, index=pd.Index(mz_feature_names(axis), dtype=str))
    table = ad.AnnData(X=x, obs=header.obs.copy(), var=var)
    for key, value in header.obsm.items():
        table.obsm[key] = value
    table.uns.update(header.uns)
    return table


def _lazy_resample(x, mz: np.ndarray, drift: Drift):
    """A dask table whose rows are resampled at their corrected m/z when computed.

    Chunks hold whole rows, as many as make ``_CHUNK_VALUES`` values (a store's tall chunks
    of few columns would otherwise become tall chunks of every column).
    """
    full_rows = x.rechunk({0: _rows_per_chunk(x.shape[1]), 1: -1})

    def apply(block, block_info=None):
        start, stop = block_info[0]["array-location"][0]
        raw = np.asarray(block, dtype=np.float64)
        return _resample(raw, mz, drift.take(start, stop)).astype(np.float32)

    return full_rows.map_blocks(apply, dtype=np.float32)


def recalibrate(
    adata: anndata.AnnData | str | os.PathLike,
    *,
    reference_mz: list[float] | np.ndarray | None = None,
    n_references: int = 10,
    ppm: float = 30.0,
    snr: float = 5.0,
    model: str = "shift",
    n_nodes: int = 5,
    group_by: str | None = None,
    pixel_size_um: float | tuple[float, float] | None = None,
    spectrum_type: str = "auto",
    features: FeatureOptions | None = None,
    key_added: str = "recalibration",
    copy: bool = False,
    show_progress: bool = False,
) -> anndata.AnnData | None:
    """Measure each pixel's m/z drift at reference peaks and remove it.

    Profile spectra are resampled on their own axis (:mod:`spatialfuse.pp._recalibrate`);
    centroid spectra, given as an imzML path, have each peak's m/z corrected and are then
    binned (:mod:`spatialfuse.pp._recalibrate_centroid`).

    Parameters
    ----------
    adata
        Pixels × profile m/z points (``var["mz"]`` sorted ascending), e.g.
        :func:`spatialfuse.io.read_imzml` of a continuous profile file. ``X`` may be dense,
        sparse or a dask array (:func:`spatialfuse.io.read_msi_zarr`): the drift is measured
        chunk by chunk (16 MiB of values at a time) and a dask ``X`` stays lazy, resampled
        when computed. Or the path of a continuous imzML file: it is read chunk by chunk
        from its memory-mapped ``.ibd`` (never whole) and a new table with a lazy ``X`` is
        returned, which :func:`pick_peaks` streams in turn. Or the path of a processed
        profile file whose spectra all sit on one m/z grid (a TOF instrument's export with
        the zeros left out: the same digitizer index at the same m/z in every pixel): it is
        read onto that grid as a sparse table in memory (about 12 bytes a written point),
        recalibrated, and returned. Or the path of an imzML file of
        centroid spectra (processed, or continuous with one point per peak): each pixel's
        peaks are matched to the references, corrected and binned onto a common axis
        (``features``), streamed in chunks of spectra; a new table is returned.
    reference_mz
        Lock masses (m/z of ions known to be in the sample: matrix ions, internal standards)
        for an absolute calibration. None: the ``n_references`` peaks of the mean spectrum
        found in the most pixels, which aligns the pixels to each other.
    n_references
        How many of the data's own peaks to use when ``reference_mz`` is None.
    ppm
        Search half-width around each reference, in ppm (larger than the largest drift).
    snr
        A pixel's peak must stand this many times its noise above its median (profile spectra;
        centroid peaks are taken as they are).
    model
        ``"shift"`` (one ppm offset per pixel), ``"linear"`` (an offset linear in m/z; a pixel
        with fewer than three references gets the shift) or ``"piecewise"`` (msiWarp-style
        warping: an offset piecewise linear in m/z between ``n_nodes`` nodes, for drift that
        bends across the m/z range). The piecewise offset is fitted by least squares to the
        pixel's reference errors with a smoothness penalty between neighbouring nodes (a node
        without references near it follows its neighbours), and held constant beyond the
        outer nodes (the outermost references); a pixel (or group) with fewer than
        ``n_nodes + 2`` distinct references found gets the linear model instead (or the
        shift), counted in ``uns[key_added]["pixels_by_model"]``. Give it at least
        ``n_nodes + 2`` references spread over the m/z range (``n_references=`` or
        ``reference_mz=``; around three per segment fits well).
    n_nodes
        Nodes of the ``"piecewise"`` model, at evenly spaced quantiles of the reference m/z
        (the first and last at the outermost references); ignored by the other models.
    group_by
        An ``obs`` column whose groups share one model, fitted to the pooled errors of their
        pixels: ``"imzml_y"`` fits one per acquisition line (steadier where single spectra
        are noisy). None: one model per pixel.
    pixel_size_um
        For a file without a pixel size, the pixel size in µm (as in ``read_imzml``).
    spectrum_type
        For a path: ``"auto"`` (the data say profile where most points have a non-zero
        neighbour within 25 ppm, else the file's declaration, else centroid), ``"centroid"``
        or ``"profile"`` (refused where the file does not hold that kind). Recorded in
        ``uns[key_added]["spectrum_type"]``.
    features
        Centroid files: the m/z features the corrected peaks are binned onto, as
        :func:`spatialfuse.io.read_imzml` takes them (default: a common axis merged from the
        corrected peaks within 5 ppm).
    key_added
        Prefix of the ``obs`` columns and name of the ``uns`` entry written.
    copy
        Return a recalibrated copy instead of changing ``adata``.
    show_progress
        Show a progress bar.

    Returns
    -------
    anndata.AnnData or None
        The recalibrated copy if ``copy`` or ``adata`` is a path, else None. Writes:

        - ``X``: each spectrum resampled at its corrected m/z (float32, on the same axis; a
          dask ``X`` becomes a lazy dask array); for a centroid file, the corrected peaks
          summed per feature (float32, CSR where smaller), with ``obs``, ``obsm``, ``var``
          and ``uns["spatialfuse"]`` as :func:`spatialfuse.io.read_imzml` writes them;
        - ``obs[f"{key_added}_ppm"]``: the pixel's drift in ppm at the references' mean m/z;
        - ``obs[f"{key_added}_slope"]``: its change per m/z unit (``"linear"``; for
          ``"piecewise"``, the mean slope between the outermost references; else 0);
        - ``obsm[f"{key_added}_nodes_ppm"]`` (``"piecewise"`` only): the pixel's drift at each
          node (pixels × nodes, ppm; for a pixel that fell back, its fallback's);
        - ``obs[f"{key_added}_n_found"]``: how many references the pixel's drift rests on;
        - ``uns[key_added]``: ``reference_mz``, ``model``, the median absolute ppm error per
          reference before and after (``ppm_before``, ``ppm_after``) and over all pixels and
          references (``median_abs_ppm_before``, ``median_abs_ppm_after``); for a path,
          ``spectrum_type`` (``"centroid"`` or ``"profile"``) and ``spectrum_type_source``;
          for ``"piecewise"``, ``n_nodes``, ``nodes_mz`` (the node m/z),
          ``min_references_piecewise`` and ``pixels_by_model`` (how many pixels got the
          piecewise model and how many fell back to ``"linear"`` or ``"shift"``).

    Raises
    ------
    TypeError
        ``n_nodes`` is not an integer.
    ValueError
        An unknown ``model``; ``n_nodes`` below 2; other options out of range.
    FileFormatError
        A path whose spectra are not of ``spectrum_type``; a processed profile file whose
        m/z values differ from pixel to pixel (read it with :func:`spatialfuse.io.read_imzml`
        first); lock masses outside the file's m/z
        range; no peak near any reference in any pixel of a centroid file.

    Warns
    -----
    DataWarning
        A table in which no pixel shows a peak near any reference: nothing was measured or
        corrected (``median_abs_ppm_before`` is None). A binned table of centroid peaks (a
        processed file read with :func:`~spatialfuse.io.read_imzml`, or a store converted from
        one) always ends here: recalibrate the imzML path instead. ``"piecewise"`` where every
        pixel fell back (too few references found).
    """
    from scipy import sparse

    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    n_nodes = check_n_nodes(n_nodes)
    if not (np.isfinite(ppm) and ppm > 0):
        raise ValueError(f"ppm must be a positive number, got {ppm!r}")
    if spectrum_type not in _SPECTRUM_TYPES:
        raise ValueError(f"spectrum_type must be one of {_SPECTRUM_TYPES}, got {spectrum_type!r}")
    from_file = isinstance(adata, str | os.PathLike)
    kind = None
    if from_file:  # a new table: returned, never copied
        path = adata
        kind, how, reader = _file_kind(path, spectrum_type)
        if kind == "centroid":
            from spatialfuse.pp._recalibrate_centroid import recalibrate_centroid_file

            with reader:
                return recalibrate_centroid_file(
                    path,
                    reader,
                    how=how,
                    reference_mz=reference_mz,
                    n_references=n_references,
                    ppm=ppm,
                    model=model,
                    n_nodes=n_nodes,
                    group_by=group_by,
                    pixel_size_um=pixel_size_um,
                    features=features,
                    key_added=key_added,
                    show_progress=show_progress,
                )
        if reader.shared_mz_axis() is None:  # processed profile spectra on one grid
            with reader:
                adata, copy = _grid_table(path, reader, pixel_size_um), False
        else:
            reader.close()
            adata, copy = _file_table(path, pixel_size_um), False
    elif spectrum_type == "centroid" or features is not None:
        raise ValueError(
            "centroid recalibration (spectrum_type='centroid', features=) reads the peaks from "
            "the file: give the imzML path, not a table"
        )
    check_adata(adata)
    if "mz" not in adata.var:
        raise ValueError("adata.var has no 'mz' column: give a table of profile m/z points")
    mz = np.asarray(adata.var["mz"], dtype=np.float64)
    if mz.size < 3 or not (np.diff(mz) > 0).all():
        raise ValueError("adata.var['mz'] must be sorted ascending, with at least 3 points")
    if not (np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be a positive number, got {snr!r}")
    if reference_mz is None:
        refs = _default_references(adata, int(n_references), snr)
        source = "data (most frequent peaks of the mean spectrum)"
    else:
        refs = np.sort(np.atleast_1d(np.asarray(reference_mz, dtype=np.float64)))
        source = "user (lock masses)"
        if refs.size == 0 or not np.isfinite(refs).all():
            raise ValueError("reference_mz must hold finite m/z values")
        outside = refs[(refs < mz[0]) | (refs > mz[-1])]
        if outside.size:
            raise ValueError(
                f"reference_mz {outside.tolist()} lie outside the m/z axis "
                f"[{mz[0]:.4f}, {mz[-1]:.4f}]"
            )
    if refs.size == 0:
        raise ValueError("no reference peaks: give reference_mz= or lower snr=")
    adata = adata.copy() if copy else adata
    was_sparse = sparse.issparse(adata.X)
    n = adata.n_obs
    before = np.full((n, refs.size), np.nan)
    after = np.full((n, refs.size), np.nan)
    if group_by is not None and group_by not in adata.obs:
        raise ValueError(f"group_by={group_by!r} is not a column of adata.obs")
    lazy = is_dask(adata.X)
    # a sparse table is rebuilt block by block as sparse (never a dense copy of it whole)
    out = None if lazy or was_sparse else np.empty(adata.shape, dtype=np.float32)
    sparse_blocks = []
    nodes = node_positions(refs, n_nodes)
    drift = Drift.empty(n, model, float(refs.mean()), nodes)
    step = max(1, _CHUNK_VALUES // mz.size)
    chunks = [(a, min(n, a + step)) for a in range(0, n, step)]
    if group_by is not None:  # errors of every pixel first, then one model per group
        for a, b in progress(chunks, show=show_progress, desc="recalibrate: measure"):
            before[a:b] = _block_errors(_dense_block(adata.X, a, b), mz, refs, ppm, snr)
        groups = adata.obs[group_by].to_numpy()
        drift = fit_drift(before, refs, model, nodes=nodes, groups=groups)
    for a, b in progress(chunks, show=show_progress, desc="recalibrate"):
        # one float64 copy of the block, cleaned, measured and resampled in place
        block = _raw_block(adata.X, a, b)
        empty = np.isnan(block).all(axis=1)
        np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        if group_by is None:
            before[a:b] = _block_errors(block, mz, refs, ppm, snr)
            drift.put(a, fit_drift(before[a:b], refs, model, nodes=nodes))
        _resample_clean(block, mz, drift.take(a, b))
        after[a:b] = _block_errors(block, mz, refs, ppm, snr)
        if out is not None:
            block[empty] = np.nan
            out[a:b] = block
        elif was_sparse:
            sparse_blocks.append(sparse.csr_matrix(block.astype(np.float32)))
    if lazy:  # measured chunk by chunk above; the corrected table stays lazy
        adata.X = _lazy_resample(adata.X, mz, drift)
    elif was_sparse:
        adata.X = (
            sparse.vstack(sparse_blocks, format="csr")
            if sparse_blocks
            else sparse.csr_matrix(adata.shape, dtype=np.float32)
        )
    else:
        adata.X = out
    write_drift(adata, drift, before, key_added)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # references found in no pixel
        per_before = np.nanmedian(np.abs(before), axis=0) if n else np.full(refs.size, np.nan)
        per_after = np.nanmedian(np.abs(after), axis=0) if n else np.full(refs.size, np.nan)
    summary_before = float(np.nanmedian(np.abs(before))) if np.isfinite(before).any() else None
    summary_after = float(np.nanmedian(np.abs(after))) if np.isfinite(after).any() else None
    adata.uns[key_added] = {
        "reference_mz": refs,
        "reference_source": source,
        "model": model,
        "group_by": group_by or "pixel",
        "ppm": float(ppm),
        "snr": float(snr),
        "ppm_before": per_before,
        "ppm_after": per_after,
        "median_abs_ppm_before": summary_before,
        "median_abs_ppm_after": summary_after,
        "pixels_without_reference": int((np.isfinite(before).sum(axis=1) == 0).sum()),
        **drift_record(drift, n_nodes),
    }
    if kind is not None:
        adata.uns[key_added]["spectrum_type"] = kind
        adata.uns[key_added]["spectrum_type_source"] = how
    if n and summary_before is None:
        # Nothing measured, nothing changed: say so rather than return the table as if
        # recalibrated (a centroid table has no profile peaks to measure).
        warnings.warn(
            f"recalibrate: no pixel shows a peak within ±{ppm:g} ppm of any of the "
            f"{refs.size} reference m/z, so nothing was measured or corrected; a table of "
            "centroid peaks has no profile peaks to measure: give the imzML path (centroid data "
            "are recalibrated peak by peak before binning; a converted zarr store of centroid "
            "spectra holds them binned already and cannot be recalibrated), or widen ppm=",
            DataWarning,
            stacklevel=2,
        )
    logger.info(
        "recalibrate: %d references, median |error| %s ppm before, %s ppm after",
        refs.size,
        summary_before,
        summary_after,
    )
    return adata if copy or from_file else None
