"""MSI pixels → Visium HD bins by raster arithmetic, and HD bins → coarser bins.

Geometry (``docs/coordinates.md``): a Visium HD bin is a square of its bin size (2, 8 or 16 µm,
``scalefactors["bin_size_um"]``) on a regular grid indexed by ``obs["array_col"]``,
``obs["array_row"]``. The grid is fitted once, as the affine map ``g = (col, row) ↦ A g + t`` from
grid indices to the bin centres ``obsm["spatial_um"]`` (µm of the Visium image frame; any slight
rotation of the bin grid against the image is kept). Each bin is the image of the unit cell
``[−½, ½]²`` under ``A``, placed on its own centre: on a regular grid neighbouring bins tile the
plane with no gap and no overlap. Centres up to a quarter bin off the fitted grid (a smooth
distortion from the image registration) are followed, not refused; beyond that the bins are
not a grid (an error). An MSI pixel at 1-based grid position ``(x, y)`` is the square
``[(x − 1)·px, x·px] × [(y − 1)·py, y·py]`` µm of the MSI frame.

With a linear transform (affine, similarity, rigid) a bin is a parallelogram in the MSI frame, and
its overlap with each MSI pixel is computed exactly: a bin that lies inside one pixel (most bins
when the pixels are larger than the bins) takes that pixel whole; for the others the area inside
each pixel square their bounding box touches comes from Green's theorem along the bin's four
edges in closed form, vectorised over all bin × pixel pairs of a chunk (no polygon clipping).
With a nonrigid transform, or when asked, each bin is sampled on an ``s × s`` grid of points
instead (see :func:`map_to_bins`).

Nothing of size bins × pixels is formed: bins are processed in chunks whose temporaries stay
under the ``max_block_bytes`` resource limit, each chunk's weights multiplied into the MSI table
and dropped before the next.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._limits import current_limits
from spatialfuse._logging import logger, progress
from spatialfuse._version import __version__
from spatialfuse.core.adata import check_adata
from spatialfuse.core.msi_raster import MsiRaster
from spatialfuse.core.visium_geometry import visium_um_per_px
from spatialfuse.errors import CalibrationError, DataWarning, FileFormatError
from spatialfuse.reg import Transform
from spatialfuse.tl._mapping_common import (
    _check_transform,
    _feature_matrix,
    _new_anndata,
    _transform_record,
    _weighted_rows,
)

if TYPE_CHECKING:
    import anndata
    from scipy import sparse

__all__ = ["aggregate_bins", "is_hd_bins", "map_to_bins"]

AGGREGATES = ("mean", "sum")
HOWS = ("auto", "sum", "mean")
#: Samples per side of a bin for a nonrigid transform (16 points per bin).
DEFAULT_SUBSAMPLES = 4
#: Largest |weight error| of the ``s × s`` sampling against the exact overlap, and its rms over
#: the bin × pixel weights either method finds, measured by
#: ``tests/tl/test_mapping_bins.py::test_sampling_error_against_exact_overlap`` (26 × 26 bins of
#: 2 µm over 6.5 µm MSI pixels, rotated by 30° and stretched by 7 %, or mirrored, rotated by
#: −113° and sheared): s → (max, rms).
MEASURED_SAMPLING_ERROR = {
    2: (0.255, 0.066),
    4: (0.074, 0.021),
    8: (0.024, 0.0062),
    16: (0.0051, 0.0017),
}
# Bins per block of the grid fit (bounds its temporaries to ~50 MB).
_FIT_BLOCK = 1 << 20
# Grid residual (fraction of the bin pitch) above which bins are "not on a grid".
_GRID_TOLERANCE = 0.25
# Disagreement between the fitted bin pitch and the declared bin size that earns a warning.
_PITCH_TOLERANCE = 0.02
# Overlaps below this fraction of a bin are rounding (a cell touching the bin), not overlap.
_TOUCHING = 1e-12
# Bytes of temporaries per candidate bin × pixel pair of the exact areas (~60 float64 values).
_BYTES_PER_PAIR = 512


# -------------------------------------------------------------------------------------------------
# the bin grid
# -------------------------------------------------------------------------------------------------


def is_hd_bins(visium: anndata.AnnData) -> bool:
    """Whether ``visium`` holds Visium HD bins (a square bin grid) rather than Visium spots.

    True when its scale factors declare ``bin_size_um`` or it was read from a Visium HD
    ``tissue_positions.parquet`` (``uns["spatialfuse"]["positions_format"]``).
    """
    uns = getattr(visium, "uns", None)
    if not hasattr(uns, "get"):
        return False
    info = uns.get("spatialfuse", None)
    if isinstance(info, dict) and info.get("positions_format") == "visium_hd_parquet":
        return True
    return _declared_bin_size(visium) is not None


def _declared_bin_size(visium) -> float | None:
    spatial = visium.uns.get("spatial", None)
    if isinstance(spatial, dict):
        for entry in spatial.values():
            scales = entry.get("scalefactors", {}) if isinstance(entry, dict) else {}
            if isinstance(scales, dict) and scales.get("bin_size_um") is not None:
                return scales["bin_size_um"]
    return None


def bin_size_um(visium, name: str = "bins") -> float:
    """The bin size of a Visium HD AnnData in µm, checked.

    From ``uns["spatial"][lib]["scalefactors"]["bin_size_um"]``, else (HD data read by
    :func:`spatialfuse.io.read_visium`) ``uns["spatialfuse"]["grid_pitch_um"]``.

    Raises
    ------
    spatialfuse.errors.CalibrationError
        No bin size is recorded, or it is not a positive finite number.
    """
    value: Any = _declared_bin_size(visium)
    if value is None:
        info = visium.uns.get("spatialfuse", None)
        if isinstance(info, dict) and info.get("positions_format") == "visium_hd_parquet":
            value = info.get("grid_pitch_um", None)
    if value is None:
        raise CalibrationError(
            None,
            f"{name} has an unknown bin size: no scalefactors['bin_size_um'] in uns['spatial'] "
            "and no Visium HD grid_pitch_um in uns['spatialfuse']; read a Visium HD bin folder "
            "(binned_outputs/square_002um) with sf.io.read_visium, or set "
            f"{name}.uns['spatial'][library_id]['scalefactors']['bin_size_um']",
        )
    try:
        size = float(value)
    except (TypeError, ValueError):
        size = math.nan
    if not (math.isfinite(size) and size > 0):
        raise CalibrationError(
            None, f"{name}: the bin size must be a positive number of µm, got {value!r}"
        )
    return size


class BinGrid:
    """The regular square grid of a Visium HD AnnData: grid indices ↔ µm of the Visium frame.

    Attributes
    ----------
    col, row
        ``obs["array_col"]``, ``obs["array_row"]`` as int64.
    matrix
        ``(2, 3)`` affine map ``(col, row, 1) ↦ (x, y)`` µm, fitted to ``obsm["spatial_um"]``.
    bin_size_um
        The declared bin size.
    residual_um
        Largest distance of a bin centre from the fitted grid.
    """

    def __init__(self, bins, name: str = "bins") -> None:
        check_adata(bins, name, reader="read_visium", need_x=False)
        self.bin_size_um = bin_size_um(bins, name)
        missing = [c for c in ("array_row", "array_col") if c not in bins.obs]
        if missing or "spatial_um" not in bins.obsm:
            what = [f"obs[{c!r}]" for c in missing]
            if "spatial_um" not in bins.obsm:
                what.append("obsm['spatial_um']")
            raise FileFormatError(
                None,
                f"{name} lacks {', '.join(what)}; expected the layout of sf.io.read_visium on a "
                "Visium HD bin folder",
            )
        self.row = _grid_index(bins.obs["array_row"], name)
        self.col = _grid_index(bins.obs["array_col"], name)
        xy = np.asarray(bins.obsm["spatial_um"], dtype=np.float64)
        if xy.shape != (len(self.row), 2) or not np.isfinite(xy).all():
            raise FileFormatError(None, f"{name}.obsm['spatial_um'] must be finite (n, 2) µm")
        self.n = len(self.row)
        self.xy = xy
        self.matrix = self._fit(xy, name)

    def _blocks(self):
        return range(0, self.n, _FIT_BLOCK)

    def _fit(self, xy: np.ndarray, name: str) -> np.ndarray:
        """Least-squares grid through every bin centre, in blocks (normal equations), checked."""
        size = self.bin_size_um
        if self.n == 0:
            self.residual_um = 0.0
            return np.array([[size, 0.0, 0.0], [0.0, size, 0.0]])
        origin = np.array([self.col[0], self.row[0]], dtype=np.float64)
        gram, rhs = np.zeros((3, 3)), np.zeros((3, 2))
        for a in self._blocks():
            design = self._design(a, origin)
            gram += design.T @ design
            rhs += design.T @ (xy[a : a + _FIT_BLOCK] - xy[0])
        if np.linalg.matrix_rank(gram) == 3:
            solution = np.linalg.solve(gram, rhs)  # rows: per col step, per row step, offset
            linear, offset = solution[:2].T, solution[2] + xy[0]
        else:
            # A line or a single bin: the grid's axes are taken as the image axes, scaled to the
            # step along the line where there is one.
            linear, offset = np.array([[size, 0.0], [0.0, size]]), xy[0].copy()
            steps = self.col - self.col[0], self.row - self.row[0]
            moved = np.flatnonzero((steps[0] != 0) | (steps[1] != 0))
            if moved.size:
                i = moved[0]
                g = np.array([steps[0][i], steps[1][i]], dtype=np.float64)
                d = (xy[i] - xy[0]) / np.hypot(*g)
                u = g / np.hypot(*g)
                # rotate-and-scale map sending grid direction u to image direction d
                rot = np.array([[d[0], -d[1]], [d[1], d[0]]]) @ np.array(
                    [[u[0], u[1]], [-u[1], u[0]]]
                )
                linear = rot
        matrix = np.column_stack([linear, offset - linear @ origin])
        worst, residual = 0, 0.0
        for a in self._blocks():
            fitted = self._design(a, np.zeros(2))[:, :2] @ matrix[:, :2].T + matrix[:, 2]
            miss = np.hypot(*(fitted - xy[a : a + _FIT_BLOCK]).T)
            k = int(np.argmax(miss))
            if miss[k] > residual:
                worst, residual = a + k, float(miss[k])
        self.residual_um = residual
        pitch = np.hypot(linear[0], linear[1])  # µm per grid step along col, row
        if not (pitch > 0).all() or residual > _GRID_TOLERANCE * float(pitch.min()):
            raise FileFormatError(
                None,
                f"{name}: the bins are not on a regular grid: the bin at array_row "
                f"{self.row[worst]}, array_col {self.col[worst]} lies {residual:.3g} µm "
                f"from the grid fitted to all {self.n:,} bins (tolerance "
                f"{_GRID_TOLERANCE * float(pitch.min()):.3g} µm); map Visium spots (not HD bins) "
                "with sf.tl.map_to_spots, or check obs['array_row'/'array_col'] against "
                "obsm['spatial_um']",
            )
        if (np.abs(pitch / size - 1) > _PITCH_TOLERANCE).any():
            warnings.warn(
                f"{name}: the bin grid's pitch is {pitch[0]:.4g} × {pitch[1]:.4g} µm but its bin "
                f"size is {size:g} µm; the bins are taken as the grid's cells (they tile the "
                "plane), check uns['spatialfuse']['um_per_px']",
                DataWarning,
                stacklevel=3,
            )
        return matrix

    def _design(self, start: int, origin: np.ndarray) -> np.ndarray:
        """``(col, row, 1)`` of a block of bins, grid indices relative to ``origin``."""
        stop = start + _FIT_BLOCK
        c = self.col[start:stop] - origin[0]
        r = self.row[start:stop] - origin[1]
        return np.stack([c, r, np.ones(len(c))], axis=1)

    @property
    def area_um2(self) -> float:
        """Area of one bin (grid cell) in µm²."""
        return float(abs(np.linalg.det(self.matrix[:, :2])))

    def centres_um(self, col: np.ndarray, row: np.ndarray) -> np.ndarray:
        """µm of grid positions ``(col, row)`` (floats allowed)."""
        g = np.stack([np.asarray(col, np.float64), np.asarray(row, np.float64)], axis=1)
        return g @ self.matrix[:, :2].T + self.matrix[:, 2]


def _grid_index(values, name: str) -> np.ndarray:
    """Integer grid indices as int64 (no copy when they already are), checked."""
    # Series.to_numpy: np.asarray on a Series probes its attributes, which hashes its index
    # (seconds for millions of bins).
    array = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    try:
        number = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        number = np.array([np.nan])
    if not np.isfinite(number).all() or (number != np.round(number)).any():
        raise FileFormatError(
            None, f"{name}: obs['array_row'/'array_col'] must be integer grid indices"
        )
    return number.astype(np.int64)


# -------------------------------------------------------------------------------------------------
# MSI → bins
# -------------------------------------------------------------------------------------------------


def map_to_bins(
    msi: anndata.AnnData,
    bins: anndata.AnnData,
    *,
    transform: Transform,
    aggregate: str = "mean",
    min_coverage: float = 0.0,
    overlap_fraction: float | None = None,
    subsamples: int | None = None,
    layer: str | None = None,
    fill_value: float = np.nan,
    show_progress: bool = False,
) -> anndata.AnnData:
    """Aggregate MSI pixels onto Visium HD bins: a bins × m/z table in the bins' layout.

    Points are ``(x, y) = (column, row)`` in µm. Each bin is the square of its bin size: the cell
    of the affine grid fitted to ``obs["array_col"/"array_row"]`` and ``obsm["spatial_um"]``
    (so a rotation of the bin grid against the image is kept), placed on the bin's own centre
    (centres up to a quarter bin off the fitted grid are followed; further off is an error).
    Each MSI pixel is its square in the MSI frame, carried into the Visium frame by
    ``transform``. A bin's value is the mean of the
    MSI pixels that overlap it, weighted by the area of each overlap.

    With a linear ``transform`` the overlaps are exact (to rounding). With a nonrigid one, or
    with ``subsamples`` given, each bin is sampled on a ``subsamples × subsamples`` grid of points
    carried into the MSI frame by ``transform.inverse()``. A weight's error against the exact
    overlap, measured on 2 µm bins over 6.5 µm pixels (rotated, stretched, mirrored), is at most
    0.074 (rms 0.021) at the default 4, 0.024 (0.0062) at 8 and 0.0051 (0.0017) at 16; the
    cost grows like ``subsamples²``.

    Bins are processed in chunks that keep the temporaries under the ``max_block_bytes`` resource
    limit (the config's ``limits:`` section or ``$SPATIALFUSE_MAX_BLOCK_BYTES``); the result
    (bins × features, float32 for float32 input) is the one array that grows with the number of
    bins: map onto coarser bins (:func:`aggregate_bins` on the RNA first) when 2 µm × all
    features does not fit. With a dask ``X`` (a store) the weights of all bins (a few per bin,
    ~12 bytes each) are kept and the table is read once, one block of its chunks at a time, as
    :func:`map_to_spots` does.

    Parameters
    ----------
    msi
        MSI pixels × m/z features as read by :func:`spatialfuse.io.read_imzml` (dense, sparse or
        a dask ``X``, as for :func:`map_to_spots`).
    bins
        Visium HD bins as read by :func:`spatialfuse.io.read_visium` from a bin folder
        (``binned_outputs/square_002um``), or made by :func:`aggregate_bins`:
        ``obs["array_row"/"array_col"]``, ``obsm["spatial_um"]`` and the bin size
        (``scalefactors["bin_size_um"]``).
    transform
        A :class:`~spatialfuse.reg.Transform` mapping MSI µm → Visium µm.
    aggregate
        ``"mean"`` (default): ``Σ_p a_p x_p / Σ_p a_p`` with ``a_p`` the area of pixel ``p``
        inside the bin. ``"sum"``: ``Σ_p (a_p / A_p) x_p`` with ``A_p`` the pixel's area, the
        signal inside the bin if each pixel's signal is spread evenly over its square.
    min_coverage
        Bins covered by MSI data on less than this fraction of their area have no MSI data
        (``has_msi`` false, values ``fill_value``).
    overlap_fraction
        None (default): the area-weighted rule above. A fraction in (0, 1]: SpaMTP's rule on the
        bin's square instead — the pixels that cover at least this fraction of the bin, equally
        weighted (plain mean or sum); ``map_to_spots(method="overlap")`` passes its own.
    subsamples
        None (default): exact overlaps for a linear transform, ``4 × 4`` samples per bin for a
        nonrigid one. An integer ≥ 1 forces sampling with that many samples per side.
    layer
        Aggregate ``msi.layers[layer]`` instead of ``msi.X``.
    fill_value
        Value of every feature of a bin without MSI data (default NaN: not measured).
    show_progress
        Show a ``tqdm`` progress bar over the chunks of bins.

    Returns
    -------
    anndata.AnnData
        One observation per bin of ``bins`` (in its order, its ``obs_names``), one variable per
        MSI feature. Slots written:

        - ``X``: the aggregated intensities (dense for dense input, else CSR); rows of bins
          without MSI data are ``fill_value``.
        - ``var``: a copy of ``msi.var``.
        - ``obs``: a copy of ``bins.obs`` plus ``obs["n_msi_pixels"]``, ``obs["msi_coverage"]``
          (fraction of the bin's area on MSI spectra) and ``obs["has_msi"]``.
        - ``obsm["spatial"]``, ``obsm["spatial_um"]``, ``uns["spatial"]``: copied from ``bins``.
        - ``uns["spatialfuse"]``: ``bins.uns["spatialfuse"]`` plus ``"modality"`` = ``"msi"``,
          ``"msi"`` (MSI provenance) and ``"mapping"``: function, method ``"bin_area"`` (or
          ``"bin_overlap"`` with ``overlap_fraction``),
          aggregate, bin size, ``"geometry"`` (``"exact"`` or ``"sampled"`` with
          ``subsamples``), the transform and counts.

    Raises
    ------
    TypeError
        ``transform`` is not a :class:`~spatialfuse.reg.Transform`, or an input not an AnnData.
    spatialfuse.errors.CalibrationError
        The bins' size is unknown, or the MSI pixel size is missing.
    spatialfuse.errors.FileFormatError
        The bins are not on a regular grid, or an input lacks its layout.
    ValueError
        A parameter is out of range.

    Warns
    -----
    DataWarning
        No bin overlaps the MSI data (often a transform in the wrong direction).
    """
    raster = MsiRaster.from_anndata(msi, "msi")
    grid = BinGrid(bins, "bins")
    _check_transform(transform)
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if not 0.0 <= float(min_coverage) <= 1.0:
        raise ValueError(f"min_coverage must lie in [0, 1], got {min_coverage}")
    if overlap_fraction is not None and not 0.0 < float(overlap_fraction) <= 1.0:
        raise ValueError(f"overlap_fraction must lie in (0, 1], got {overlap_fraction}")
    if subsamples is not None and (
        isinstance(subsamples, bool) or int(subsamples) != subsamples or subsamples < 1
    ):
        raise ValueError(f"subsamples must be None or an integer >= 1, got {subsamples!r}")
    matrix = _feature_matrix(msi, layer, "msi")
    linear = _grid_to_msi(grid, transform, raster) if subsamples is None else None
    if linear is None and subsamples is None:
        subsamples = DEFAULT_SUBSAMPLES

    n_bins, n_vars = grid.n, int(matrix.shape[1])
    budget = current_limits().max_block_bytes
    if linear is not None:
        span = np.abs(linear[1]).sum(axis=1)  # bbox of a bin in MSI pixels
        pairs = float(np.prod(np.ceil(span) + 1))
        per_bin = _BYTES_PER_PAIR * pairs + 16 * n_vars
    else:
        per_bin = 64.0 * subsamples * subsamples + 16 * n_vars
    chunk = int(max(1024, min(n_bins, budget // max(per_bin, 1.0)))) if n_bins else 1

    from scipy import sparse as sp

    from spatialfuse.core.adata import is_dask

    lazy = is_dask(matrix)
    dense = not lazy and not sp.issparse(matrix)
    dtype = np.result_type(matrix.dtype, np.float32)
    result: Any = np.empty((n_bins, n_vars), dtype=dtype) if dense else None
    blocks: list[Any] = []
    n_pixels = np.zeros(n_bins, dtype=np.int64)
    coverage = np.zeros(n_bins, dtype=np.float64)
    used = np.zeros(raster.n, dtype=bool)

    starts = range(0, n_bins, chunk)
    for start in progress(starts, show=show_progress, total=len(starts), desc="HD bins"):
        stop = min(start + chunk, n_bins)
        xy = grid.xy[start:stop]
        if linear is not None:
            weights, covered = _exact_weights(xy, linear, raster)
        else:
            weights, covered = _sampled_weights(xy, grid, transform, raster, subsamples)
        # ``weights``: area of bin ∩ pixel as a fraction of the bin; ``covered`` their sum.
        if overlap_fraction is not None:
            # SpaMTP's rule on the bin square: qualifying pixels, equally weighted.
            weights.data = (weights.data >= overlap_fraction - 1e-12).astype(np.float64)
            weights.eliminate_zeros()
        count = np.diff(weights.indptr)
        has = (count > 0) & (covered >= float(min_coverage))
        if overlap_fraction is not None:
            if aggregate == "mean":
                weights.data /= np.repeat(np.maximum(count, 1), count)
        elif aggregate == "mean":
            totals = np.repeat(np.where(covered > 0, covered, 1.0), count)
            weights.data /= totals
        else:
            weights.data *= grid.area_um2 / _pixel_areas(weights, transform, raster)
        if not has.all():
            weights.data[np.repeat(~has, count)] = 0.0
            weights.eliminate_zeros()
        used[weights.indices] = True
        n_pixels[start:stop] = count
        coverage[start:stop] = covered
        if lazy:
            # A store-backed table is read once, after the loop: a chunk of bins touches a band
            # of pixels that crosses many of the table's row chunks.
            blocks.append(weights)
            continue
        values = _weighted_rows(weights, matrix, has, fill_value)
        if dense:
            result[start:stop] = values
        else:
            blocks.append(values)
        del weights, values
    has_msi = (n_pixels > 0) & (coverage >= float(min_coverage))
    if lazy:
        every = (
            sp.vstack(blocks, format="csr")
            if blocks
            else sp.csr_matrix((0, raster.n), dtype=np.float64)
        )
        blocks.clear()
        result = _weighted_rows(every, matrix, has_msi, fill_value)
        del every
    elif not dense:
        result = (
            sp.vstack(blocks, format="csr").astype(dtype)
            if blocks
            else sp.csr_matrix((0, n_vars), dtype=dtype)
        )
    if n_bins and raster.n and not (coverage > 0).any():
        warnings.warn(
            f"none of the {n_bins:,} Visium HD bins overlaps the MSI data after the transform; "
            "check that the transform maps MSI µm to Visium µm (not the reverse) and that the "
            "bins lie over the MSI acquisition",
            DataWarning,
            stacklevel=2,
        )
    geometry: dict[str, Any] = {"kind": "exact" if linear is not None else "sampled"}
    if linear is None:
        error = MEASURED_SAMPLING_ERROR.get(int(subsamples), (0.5 / subsamples, None))
        geometry.update(
            subsamples=int(subsamples),
            max_abs_weight_error=float(error[0]),
            max_abs_weight_error_source="measured"
            if subsamples in MEASURED_SAMPLING_ERROR
            else "bound 1 / (2 subsamples)",
        )
    n_with = int(has_msi.sum())
    record: dict[str, Any] = {
        "function": "map_to_bins",
        "method": "bin_area" if overlap_fraction is None else "bin_overlap",
        "aggregate": aggregate,
        "bin_size_um": grid.bin_size_um,
        "bin_grid_matrix": grid.matrix.copy(),
        "min_coverage": float(min_coverage),
        "overlap_fraction": None if overlap_fraction is None else float(overlap_fraction),
        "layer": layer if layer is not None else "X",
        "fill_value": float(fill_value),
        "geometry": geometry,
        "transform": _transform_record(transform),
        "msi_pixel_size_um": [float(v) for v in raster.pixel_size_um],
        "n_spots": n_bins,
        "n_spots_with_msi": n_with,
        "n_msi_pixels": int(raster.n),
        "n_msi_pixels_used": int(used.sum()),
        "max_block_bytes": int(budget),
        "bins_per_chunk": int(chunk),
        "version": __version__,
    }
    logger.info("map_to_bins(%s): %d of %d bins have MSI data", aggregate, n_with, n_bins)
    # A shallow copy shares the (immutable) index and what pandas knows of it (its uniqueness,
    # which AnnData checks again: seconds at millions of bins); new columns stay in the copy.
    return _msi_on_spots(
        result,
        bins.obs.copy(deep=False),
        msi,
        bins,
        record,
        n_pixels=n_pixels,
        coverage=coverage,
        has_msi=has_msi,
    )


def _msi_on_spots(
    values,
    obs,
    msi: anndata.AnnData,
    spots: anndata.AnnData,
    record: dict[str, Any],
    *,
    n_pixels: np.ndarray,
    coverage: np.ndarray,
    has_msi: np.ndarray,
) -> anndata.AnnData:
    """The table :func:`map_to_bins` and :func:`~spatialfuse.tl.map_to_spots` return.

    ``values`` (spots × MSI features) with ``obs`` (a copy of ``spots.obs``) plus
    ``n_msi_pixels``, ``msi_coverage`` and ``has_msi``, ``var`` a copy of ``msi.var``, the
    positions and images of ``spots`` (:func:`_copy_layout`) and ``uns["spatialfuse"]``: that of
    ``spots`` plus ``"modality"`` = ``"msi"``, ``"msi"`` (the MSI provenance) and ``"mapping"`` =
    ``record``.
    """
    obs["n_msi_pixels"] = n_pixels
    obs["msi_coverage"] = coverage
    obs["has_msi"] = has_msi
    out = _new_anndata(values, obs, msi.var.copy())
    _copy_layout(spots, out)
    info = copy.deepcopy(dict(spots.uns.get("spatialfuse", {}) or {}))
    info["modality"] = "msi"
    info["msi"] = copy.deepcopy(dict(msi.uns["spatialfuse"]))
    info["mapping"] = record
    out.uns["spatialfuse"] = info
    return out


def _copy_layout(source, out) -> None:
    if "spatial" in source.obsm:
        out.obsm["spatial"] = np.array(source.obsm["spatial"], dtype=np.float64, copy=True)
    out.obsm["spatial_um"] = np.array(source.obsm["spatial_um"], dtype=np.float64, copy=True)
    if "spatial" in source.uns:
        out.uns["spatial"] = copy.deepcopy(source.uns["spatial"])


def _grid_to_msi(
    grid: BinGrid, transform: Transform, raster: MsiRaster
) -> tuple[np.ndarray, np.ndarray] | None:
    """Visium µm → MSI pixel units (µm / pixel size) as ``(2, 3)``, and a bin's edge vectors.

    None for a nonrigid transform. In pixel units pixel ``(x, y)`` is the unit cell
    ``[x − 1, x] × [y − 1, y]``; the edge vectors are the images of one grid step along
    ``array_col`` and ``array_row``.
    """
    if not transform.is_linear:
        return None
    inverse = np.linalg.inv(np.asarray(transform.as_affine().matrix, dtype=np.float64))
    to_q = inverse[:2] / np.asarray(raster.pixel_size_um)[:, None]
    return to_q, to_q[:, :2] @ grid.matrix[:, :2]


def _pixel_areas(weights: sparse.csr_matrix, transform: Transform, raster: MsiRaster):
    """Area in the Visium frame (µm²) of the pixel of each stored weight."""
    px, py = raster.pixel_size_um
    if transform.is_linear:
        det = abs(float(np.linalg.det(np.asarray(transform.as_affine().matrix)[:2, :2])))
        return np.full(weights.nnz, px * py * det)
    columns = np.unique(weights.indices)
    jac = np.abs(transform.jacobian_determinant(raster.centres_um(columns)))
    return (px * py * jac)[np.searchsorted(columns, weights.indices)]


def _to_csr(n_rows: int, n_cols: int, row, col, value) -> sparse.csr_matrix:
    """CSR from (row, col, value) triplets, duplicates summed, zeros dropped."""
    from scipy import sparse

    matrix = sparse.csr_matrix((value, (row, col)), shape=(n_rows, n_cols))
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    return matrix


def _exact_weights(xy: np.ndarray, geometry: tuple[np.ndarray, np.ndarray], raster: MsiRaster):
    """Exact overlap of each bin with each MSI pixel, as a fraction of the bin's area.

    ``xy``: the bins' centres (Visium µm); ``geometry``: :func:`_grid_to_msi`'s map into MSI
    pixel units ``q = m / (px, py)`` and the bins' edge vectors there.
    """
    to_q, edges = geometry
    n = len(xy)
    centre = xy @ to_q[:, :2].T + to_q[:, 2]
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) @ edges.T
    if np.linalg.det(edges) < 0:
        corners = corners[::-1]  # counter-clockwise, as _clipped_area needs
    half = np.abs(edges).sum(axis=1) / 2
    bin_area = abs(float(np.linalg.det(edges)))
    lo = np.floor(centre - half).astype(np.int64)
    hi = np.floor(centre + half).astype(np.int64)
    # A bin edge exactly on a pixel edge touches the next cell with zero area: leave it out.
    hi = np.where(np.floor(centre + half) == centre + half, hi - 1, hi)
    hi = np.maximum(hi, lo)
    inside = (lo == hi).all(axis=1)

    rows_out, cols_out, vals_out = [], [], []
    # Bins inside one pixel: the whole bin.
    one = np.flatnonzero(inside)
    pix = _pixel_rows(raster, lo[one, 0], lo[one, 1])
    ok = pix >= 0
    rows_out.append(one[ok])
    cols_out.append(pix[ok])
    vals_out.append(np.ones(int(ok.sum())))
    # The others: clip the bin's parallelogram against each candidate pixel cell.
    cut = np.flatnonzero(~inside)
    if cut.size:
        nx = hi[cut, 0] - lo[cut, 0] + 1
        ny = hi[cut, 1] - lo[cut, 1] + 1
        per = nx * ny
        which = np.repeat(cut, per)
        k = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
        nxr = np.repeat(nx, per)
        cx = lo[which, 0] + k % nxr
        cy = lo[which, 1] + k // nxr
        pix = _pixel_rows(raster, cx, cy)
        ok = pix >= 0
        which, cx, cy, pix = which[ok], cx[ok], cy[ok], pix[ok]
        polygon = centre[which][:, None, :] + corners[None, :, :]
        area = _clipped_area(polygon, cx.astype(np.float64), cy.astype(np.float64))
        rows_out.append(which)
        cols_out.append(pix)
        vals_out.append(area / bin_area)
    value = np.concatenate(vals_out)
    # A cell that only touches the bin along an edge or corner: rounding, not overlap.
    value[value < _TOUCHING] = 0.0
    weights = _to_csr(n, raster.n, np.concatenate(rows_out), np.concatenate(cols_out), value)
    weights.data = np.clip(weights.data, 0.0, 1.0)
    covered = np.minimum(np.asarray(weights.sum(axis=1)).ravel(), 1.0)
    return weights, covered


def _pixel_rows(raster: MsiRaster, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Row of the spectrum of the cell ``[cx, cx+1] × [cy, cy+1]`` (pixel units), -1 if none."""
    px, py = raster.pixel_size_um
    return raster.locate(np.stack([(cx + 0.5) * px, (cy + 0.5) * py], axis=1))


def _clipped_area(polygon: np.ndarray, x0: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """Area of each convex counter-clockwise ``polygon`` (N, k, 2) in the unit cell at ``(x0, y0)``.

    Green's theorem with ``G(x, y) = clamp(x − x0, 0, 1)`` for ``y0 ≤ y ≤ y0 + 1`` (else 0), whose
    x-derivative is the cell's indicator: the area is ``∮ G dy`` along the polygon's edges alone,
    each edge cut to the cell's rows and ``∫ clamp(x) dt`` taken in closed form through
    ``h(x) = ∫ clamp``. Every term is continuous in the geometry, so edges that lie on a cell's
    lines need no special case; no vertices are clipped, sorted or gathered.
    """
    n, k = polygon.shape[0], polygon.shape[1]
    area = np.zeros(n)
    for e in range(k):
        p, q = polygon[:, e], polygon[:, (e + 1) % k]
        px, py = p[:, 0] - x0, p[:, 1] - y0
        dx, dy = q[:, 0] - p[:, 0], q[:, 1] - p[:, 1]
        moving = dy != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            t0 = np.where(moving, -py / dy, 0.0)
            t1 = np.where(moving, (1.0 - py) / dy, 0.0)
        lo = np.clip(np.minimum(t0, t1), 0.0, 1.0)
        hi = np.clip(np.maximum(t0, t1), 0.0, 1.0)
        span = np.where(moving, hi - lo, 0.0)
        xa, xb = px + lo * dx, px + hi * dx
        width = xb - xa
        steep = np.abs(width) < 1e-9
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(
                steep,
                np.clip((xa + xb) / 2, 0.0, 1.0),
                (_h(xb) - _h(xa)) / np.where(steep, 1.0, width),
            )
        area += mean * span * dy
    return area


def _h(x: np.ndarray) -> np.ndarray:
    """``∫_0^x clamp(s, 0, 1) ds``."""
    c = np.clip(x, 0.0, 1.0)
    return c * c / 2 + np.maximum(x - 1.0, 0.0)


def _sampled_weights(xy, grid: BinGrid, transform: Transform, raster: MsiRaster, s: int):
    """Fraction of ``s × s`` sample points of each bin on each MSI pixel (and on any pixel)."""
    n = len(xy)
    u = (np.arange(s) + 0.5) / s - 0.5
    offsets = np.stack(np.meshgrid(u, u), axis=-1).reshape(-1, 2) @ grid.matrix[:, :2].T
    um = (np.asarray(xy)[:, None, :] + offsets[None]).reshape(-1, 2)
    hit = raster.locate(transform.inverse().apply(um))
    which = np.repeat(np.arange(n), s * s)
    on = hit >= 0
    weights = _to_csr(n, raster.n, which[on], hit[on], np.full(int(on.sum()), 1.0 / (s * s)))
    covered = np.asarray(weights.sum(axis=1)).ravel()
    return weights, covered


# -------------------------------------------------------------------------------------------------
# bins → coarser bins
# -------------------------------------------------------------------------------------------------


def aggregate_bins(
    adata: anndata.AnnData,
    bin_size_um: float,
    *,
    how: str = "auto",
    layer: str | None = None,
) -> anndata.AnnData:
    """Merge Visium HD bins into coarser square bins: 2 µm → 8 µm, 16 µm or any multiple.

    Bin ``(col, row)`` joins coarse bin ``(col // k, row // k)`` with ``k = bin_size_um /`` the
    bins' own size (an integer), so the coarse grid starts at grid index 0 as Space Ranger's
    ``square_008um`` does from ``square_002um``. Points are ``(x, y) = (column, row)`` in µm.

    Parameters
    ----------
    adata
        Visium HD bins: RNA counts as read by :func:`spatialfuse.io.read_visium`, or MSI mapped
        onto them by :func:`map_to_bins`.
    bin_size_um
        The coarse bin size, µm: a whole multiple of the bins' own size.
    how
        ``"sum"``: add the values (RNA counts; MSI mapped with ``aggregate="sum"``, over the
        bins with ``obs["has_msi"]``).
        ``"mean"``: the area-weighted mean over the measured part of the coarse bin,
        ``Σ_i c_i x_i / Σ_i c_i`` with ``c_i`` bin ``i``'s ``obs["msi_coverage"]`` (1 where absent)
        over bins with ``obs["has_msi"]`` — the value :func:`map_to_bins` gives on the coarse bins
        directly when all fine bins are present. ``"auto"`` (default): ``"mean"`` for a table
        from :func:`map_to_bins` with ``aggregate="mean"``, else ``"sum"``.
    layer
        Aggregate ``adata.layers[layer]`` instead of ``X`` (the result's ``X``).

    Returns
    -------
    anndata.AnnData
        One observation per coarse bin holding at least one bin, ordered by ``(row, col)``, named
        ``s_{size:03d}um_{row:05d}_{col:05d}-1`` like Space Ranger's. Slots written:

        - ``X``: the sums or means (CSR for sparse input, else dense; float32 stays float32).
        - ``var``: a copy of ``adata.var``.
        - ``obs["array_row"]``, ``obs["array_col"]`` (coarse grid indices), ``obs["in_tissue"]``
          (any bin in tissue, where ``adata`` has it), ``obs["n_bins"]`` (bins merged); for MSI
          tables ``obs["msi_coverage"]`` (coverage of the coarse bin, bins absent from ``adata``
          counting as uncovered), ``obs["n_msi_pixels"]`` (largest of the merged bins' counts,
          a lower bound) and ``obs["has_msi"]``.
        - ``obsm["spatial_um"]``: coarse bin centres on the fitted grid, shifted by their bins'
          mean offset from it (none on a regular grid); ``obsm["spatial"]``:
          the same in full-res pixels where ``adata`` has ``uns["spatialfuse"]["um_per_px"]``.
        - ``uns["spatial"]``: copied, with ``scalefactors["bin_size_um"]`` and
          ``spot_diameter_fullres`` set for the coarse bins.
        - ``uns["spatialfuse"]``: copied, with ``grid_pitch_um`` and ``spot_diameter_um`` the
          coarse size and ``"aggregated"``: from size, to size, factor, how, layer.

    Raises
    ------
    spatialfuse.errors.CalibrationError
        The bins' own size is unknown.
    spatialfuse.errors.FileFormatError
        The bins are not on a regular grid.
    ValueError
        ``bin_size_um`` is not a positive whole multiple of the bins' size, or ``how`` unknown.
    """
    from scipy import sparse

    bins = adata

    grid = BinGrid(bins, "bins")
    if how not in HOWS:
        raise ValueError(f"how must be one of {HOWS}, got {how!r}")
    try:
        target = float(bin_size_um)
    except (TypeError, ValueError):
        target = math.nan
    ratio = target / grid.bin_size_um
    k = round(ratio) if math.isfinite(ratio) else 0
    if not (math.isfinite(target) and target > 0) or k < 1 or abs(ratio - k) > 1e-6 * ratio:
        raise ValueError(
            f"bin_size_um must be a whole multiple of the bins' size {grid.bin_size_um:g} µm "
            f"(e.g. {4 * grid.bin_size_um:g} or {8 * grid.bin_size_um:g}), got {bin_size_um!r}"
        )
    info = bins.uns.get("spatialfuse", {}) or {}
    mapping = info.get("mapping", {}) if isinstance(info, dict) else {}
    is_msi = isinstance(info, dict) and info.get("modality") == "msi"
    if how == "auto":
        how = "mean" if is_msi and mapping.get("aggregate", "mean") == "mean" else "sum"
    matrix = _feature_matrix(bins, layer, "bins")
    if not sparse.issparse(matrix):
        matrix = np.asarray(matrix)

    ccol, crow = np.floor_divide(grid.col, k), np.floor_divide(grid.row, k)
    if grid.n:
        cmin, rmin = int(ccol.min()), int(crow.min())
        width = int(ccol.max()) - cmin + 1
        keys = (crow - rmin) * width + (ccol - cmin)
        ukeys, group = np.unique(keys, return_inverse=True)
        unique = np.stack([ukeys // width + rmin, ukeys % width + cmin], axis=1)
    else:
        unique, group = np.empty((0, 2), np.int64), np.empty(0, np.int64)
    group = group.ravel()
    n_groups, n = len(unique), grid.n
    n_members = np.bincount(group, minlength=n_groups)

    measured = np.ones(n, dtype=bool)
    weight = np.ones(n, dtype=np.float64)
    if "has_msi" in bins.obs:
        measured = bins.obs["has_msi"].to_numpy(dtype=bool)
    if "msi_coverage" in bins.obs:
        weight = bins.obs["msi_coverage"].to_numpy(dtype=np.float64)
    if how == "sum":
        w = measured.astype(np.float64)  # bins without MSI data hold fill values, not signal
    else:
        w = np.where(measured, weight, 0.0)
    w = np.where(np.isfinite(w), w, 0.0)
    members = sparse.csr_matrix((w, (group, np.arange(n))), shape=(n_groups, n))
    totals = np.asarray(members.sum(axis=1)).ravel()
    has = totals > 0
    if how == "mean":
        members = sparse.diags(np.where(has, 1.0 / np.where(has, totals, 1.0), 0.0)) @ members
    members = members.tocsr()
    members.eliminate_zeros()
    # Rows of unmeasured bins may hold NaN: members never touches them (0 · NaN would be NaN).
    dtype = np.result_type(matrix.dtype, np.float32)
    if sparse.issparse(matrix):
        values = sparse.csr_matrix(members @ matrix.astype(np.float64)).astype(dtype)
    else:
        used = np.zeros(n, dtype=bool)
        used[members.indices] = True
        cols = np.flatnonzero(used)
        compact = sparse.csr_matrix(
            (members.data, np.searchsorted(cols, members.indices), members.indptr),
            shape=(n_groups, cols.size),
        )
        values = np.asarray(compact @ np.asarray(matrix[cols], dtype=np.float64)).astype(dtype)
    if (how == "mean" or is_msi) and (~has).any():
        fill = float(mapping.get("fill_value", np.nan)) if is_msi else np.nan
        if sparse.issparse(values):
            values = values.tolil()
            values[np.flatnonzero(~has)] = fill
            values = values.tocsr()
        else:
            values[~has] = fill

    import pandas as pd

    size = round(target) if abs(target - round(target)) < 1e-9 else None
    label = f"{size:03d}um" if size is not None else f"{target:g}um"
    names = pd.Index(
        [f"s_{label}_{r:05d}_{c:05d}-1" for r, c in unique.tolist()], dtype=str, name=None
    )
    obs = pd.DataFrame(index=names)
    obs["array_row"] = unique[:, 0]
    obs["array_col"] = unique[:, 1]
    if "in_tissue" in bins.obs:
        tissue = bins.obs["in_tissue"].to_numpy().astype(np.int64)
        obs["in_tissue"] = (np.bincount(group, weights=tissue, minlength=n_groups) > 0).astype(
            np.int64
        )
    obs["n_bins"] = n_members
    if is_msi and "msi_coverage" in bins.obs:
        cov = np.where(np.isfinite(weight), weight, 0.0)
        obs["msi_coverage"] = np.bincount(group, weights=cov, minlength=n_groups) / (k * k)
        if "n_msi_pixels" in bins.obs:
            counts = bins.obs["n_msi_pixels"].to_numpy(dtype=np.int64)
            best = np.zeros(n_groups, dtype=np.int64)
            np.maximum.at(best, group, counts)
            obs["n_msi_pixels"] = best
        obs["has_msi"] = has
    out = _new_anndata(values, obs, bins.var.copy())
    centre = grid.centres_um(unique[:, 1] * k + (k - 1) / 2, unique[:, 0] * k + (k - 1) / 2)
    if grid.residual_um > 0:
        # Follow a distortion of the fine bins: shift each coarse centre by its bins' mean offset
        # from the fitted grid (zero on a regular grid).
        for axis in range(2):
            offset = np.zeros(n_groups)
            for a in grid._blocks():
                b = slice(a, a + _FIT_BLOCK)
                fitted = grid.centres_um(grid.col[b], grid.row[b])[:, axis]
                offset += np.bincount(
                    group[b], weights=grid.xy[b, axis] - fitted, minlength=n_groups
                )
            centre[:, axis] += offset / n_members
    out.obsm["spatial_um"] = centre
    try:
        out.obsm["spatial"] = centre / visium_um_per_px(bins, "bins") - 0.5
    except CalibrationError:
        pass  # no full-resolution image frame recorded: the bins stay in µm only
    if "spatial" in bins.uns:
        spatial = copy.deepcopy(bins.uns["spatial"])
        for entry in spatial.values():
            scales = entry.get("scalefactors") if isinstance(entry, dict) else None
            if isinstance(scales, dict):
                scales["bin_size_um"] = target
                if "spot_diameter_fullres" in scales:
                    scales["spot_diameter_fullres"] = float(scales["spot_diameter_fullres"]) * k
        out.uns["spatial"] = spatial
    new_info = copy.deepcopy(dict(info)) if isinstance(info, dict) else {}
    new_info["grid_pitch_um"] = target
    new_info["spot_diameter_um"] = target
    if "grid_pitch_px" in new_info:
        new_info["grid_pitch_px"] = float(new_info["grid_pitch_px"]) * k
    new_info["aggregated"] = {
        "function": "aggregate_bins",
        "from_bin_size_um": grid.bin_size_um,
        "bin_size_um": target,
        "factor": int(k),
        "how": how,
        "layer": layer if layer is not None else "X",
        "n_bins_in": int(n),
        "n_bins_out": int(n_groups),
    }
    out.uns["spatialfuse"] = new_info
    return out
