"""Per-pixel m/z recalibration of centroid spectra, streamed from an imzML file.

Centroid data (each pixel its own list of ``(m/z, intensity)`` peaks) cannot be corrected by
resampling the binned table, as profile spectra are (:mod:`spatialfuse.pp._recalibrate`): a
peak read at a shifted position on a binned axis is smeared across bins. Instead each peak's
own m/z is corrected before the peaks are binned:

1. every pixel's peaks (points of intensity > 0 and finite m/z; a continuous centroid file's
   zeros are not peaks) are matched to each reference ``r``: the peaks within ``± ppm`` of
   ``r``, one or the intensity-weighted mean m/z ``m`` of several, give the error
   ``e = (m − r) / r`` in ppm;
2. the same models as for profile spectra (``"shift"``, ``"linear"``, ``"piecewise"``, per
   pixel or per ``group_by`` group; :mod:`spatialfuse.pp._recalibrate_models`);
3. each peak moves to ``m / (1 + e(m) · 10⁻⁶)``, ``e`` evaluated at the peak's own m/z;
4. the corrected peaks are binned as :func:`spatialfuse.io.read_imzml` bins a processed file:
   onto windows around given m/z values (``features=FeatureOptions(mz=...)``), or onto a common
   axis merged from the corrected peaks themselves (:func:`spatialfuse.io.imzml.build_mz_axis`),
   summed per pixel with the reader's own kernels;
5. the errors are measured again on the corrected peaks (``uns[key_added]``).

Without lock masses the references are the data's most frequent peaks: a common axis merged
from the uncorrected peaks within ``± ppm`` (so a peak drifting by less than that stays one
feature), its ``n_references`` features found in the most pixels (at least 10 % of them).

Every pass reads the file in chunks of spectra (about a million peaks here; the reader's own
chunks in its passes): ``obs``/``obsm`` as :func:`~spatialfuse.io.read_imzml` writes them (the
TIC and one window), the references (without lock masses), the measurement, the corrected
axis, the sums — five or six passes — so memory is bounded by the chunks and the table of
pixels × features, not by the file (measured in ``docs/spectra.md``).
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._logging import logger, progress
from spatialfuse.errors import FileFormatError
from spatialfuse.pp._recalibrate_models import (
    Drift,
    drift_record,
    fit_drift,
    node_positions,
    write_drift,
)

if TYPE_CHECKING:
    import anndata

#: Peaks handled per chunk of spectra.
_CHUNK_PEAKS = 1 << 20
#: The data's own references are features found in at least this fraction of the pixels.
_MIN_REFERENCE_FREQUENCY = 0.1


class _Peaks:
    """The peaks of a reader's spectra, chunk by chunk, optionally m/z-corrected.

    Quacks like the :class:`~spatialfuse.io.imzml.ImzMLReader` that
    :meth:`~spatialfuse.io.FeatureOptions.choose` and
    :func:`~spatialfuse.io.imzml.build_mz_axis` read (``iter_chunks``, ``mz_range``,
    ``n_spectra``, ``shared_mz_axis``, ``peak_counts``, ``spectra_block``), so the reader's own
    axis code merges corrected peaks.
    """

    def __init__(self, reader, drift: Drift | None = None):
        self.reader = reader
        self.n_spectra = reader.n_spectra
        self.drift = drift
        self.peak_counts = reader.peak_counts

    def spectra_block(self, start: int, stop: int):
        """``(mz, intensity, lengths)`` of spectra ``start:stop``, corrected (float64)."""
        mz, intensity, lengths = self.reader.spectra_block(start, stop)
        return self._correct(start, mz, intensity, np.asarray(lengths))

    def mz_range(self) -> tuple[float, float]:
        low, high = self.reader.mz_range()
        if self.drift is None or not (np.isfinite(low) and np.isfinite(high)):
            return low, high
        most = self.drift.largest(low, high)
        most = float(most.max()) * 1e-6 if most.size else 0.0
        return low / (1 + most), high / max(1 - most, 1e-3)

    def shared_mz_axis(self) -> None:
        """None: corrected peaks have an m/z array per spectrum."""
        return None

    def chunk_size(self) -> int:
        lengths = self.peak_counts
        mean = max(1.0, float(lengths.mean())) if lengths.size else 1.0
        return max(1, int(_CHUNK_PEAKS // mean))

    def iter_chunks(self, *, chunk_spectra: int | None = None, show_progress=False, desc=""):
        """Yield ``(start, stop, mz, intensity, lengths)``: float64 peaks of each chunk."""
        step = chunk_spectra or self.chunk_size()
        total = -(-self.n_spectra // step)
        chunks = self.reader.iter_chunks(chunk_spectra=step)
        for a, b, mz, intensity, lengths in progress(
            chunks, show=show_progress, desc=desc, total=total
        ):
            yield (a, b, *self._correct(a, mz, intensity, lengths))

    def _correct(self, start: int, mz, intensity, lengths):
        mz = np.asarray(mz, dtype=np.float64)
        intensity = np.asarray(intensity, dtype=np.float64)
        rows = np.repeat(np.arange(lengths.size), lengths)
        with np.errstate(invalid="ignore"):
            keep = np.isfinite(mz) & (mz > 0) & np.isfinite(intensity) & (intensity > 0)
        mz, intensity, rows = mz[keep], intensity[keep], rows[keep]
        if self.drift is not None:
            mz = mz / (1 + self.drift.ppm(rows + start, mz) * 1e-6)
        return mz, intensity, np.bincount(rows, minlength=lengths.size)


def _match(mz, intensity, lengths, refs: np.ndarray, ppm: float) -> np.ndarray:
    """(spectra × references) ppm error of the intensity-weighted peaks within ± ppm; NaN: none."""
    n = lengths.size
    out = np.full((n, refs.size), np.nan)
    if mz.size == 0:
        return out
    rows = np.repeat(np.arange(n), lengths)
    order = np.argsort(mz, kind="stable")
    sorted_mz = mz[order]
    for k, r in enumerate(refs):
        a = np.searchsorted(sorted_mz, r * (1 - ppm * 1e-6), side="left")
        b = np.searchsorted(sorted_mz, r * (1 + ppm * 1e-6), side="right")
        take = order[a:b]
        if take.size == 0:
            continue
        w = intensity[take]
        weight = np.bincount(rows[take], weights=w, minlength=n)
        moment = np.bincount(rows[take], weights=w * mz[take], minlength=n)
        hit = weight > 0
        out[hit, k] = (moment[hit] / weight[hit] - r) / r * 1e6
    return out


def _references(source: _Peaks, ppm: float, n_references: int, show_progress: bool):
    """The ``n_references`` features of the common axis merged within ± ppm in most pixels."""
    from spatialfuse.io.imzml import build_mz_axis

    axis = build_mz_axis(
        source, ppm=ppm, min_frequency=0.0, max_features=None, show_progress=show_progress
    )
    common = axis.frequency >= _MIN_REFERENCE_FREQUENCY
    mz, frequency = axis.mz[common], axis.frequency[common]
    order = np.argsort(-frequency, kind="stable")[:n_references]
    return np.sort(mz[order])


def _binned(source: _Peaks, lo, hi, refs, ppm: float, show_progress: bool):
    """Sums of the corrected peaks in windows ``[lo, hi]`` (CSR), and their errors at ``refs``."""
    from spatialfuse.io.imzml import bin_peaks

    after = np.full((source.n_spectra, refs.size), np.nan)

    def measured():
        for a, b, mz, intensity, lengths in source.iter_chunks(
            show_progress=show_progress, desc="recalibrate: bin"
        ):
            after[a:b] = _match(mz, intensity, lengths, refs, ppm)
            yield a, b, mz, intensity, lengths

    return bin_peaks(measured(), source.n_spectra, lo, hi), after


def _table_layout(table):
    """``table`` (CSR) as CSR or dense, whichever is smaller (as ``read_imzml`` stores it)."""
    dense_bytes = table.shape[0] * table.shape[1] * table.dtype.itemsize
    sparse_bytes = table.data.nbytes + table.indices.nbytes + table.indptr.nbytes
    return table.toarray() if dense_bytes < sparse_bytes else table


def _summary(before: np.ndarray, after: np.ndarray):
    n = before.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # references found in no pixel
        per_before = np.nanmedian(np.abs(before), axis=0) if n else np.full(before.shape[1], np.nan)
        per_after = np.nanmedian(np.abs(after), axis=0) if n else np.full(after.shape[1], np.nan)
    overall_before = float(np.nanmedian(np.abs(before))) if np.isfinite(before).any() else None
    overall_after = float(np.nanmedian(np.abs(after))) if np.isfinite(after).any() else None
    return per_before, per_after, overall_before, overall_after


def recalibrate_centroid_file(
    path: str | os.PathLike,
    reader,
    *,
    how: str,
    reference_mz,
    n_references: int,
    ppm: float,
    model: str,
    n_nodes: int,
    group_by: str | None,
    pixel_size_um,
    features,
    key_added: str,
    show_progress: bool,
) -> anndata.AnnData:
    """The recalibrated pixels × features table of the centroid file ``reader`` has open."""
    import anndata as ad
    import pandas as pd

    from spatialfuse.core.mz import mz_feature_names
    from spatialfuse.io.imzml import FeatureOptions, MzAxis, read_imzml

    features = FeatureOptions() if features is None else features
    if not isinstance(features, FeatureOptions):
        raise TypeError(f"features must be a FeatureOptions, got {type(features).__name__}")
    raw = _Peaks(reader)
    low, high = reader.mz_range()
    if reference_mz is None:
        refs = _references(raw, ppm, int(n_references), show_progress)
        source = "data (most frequent peaks, merged within ± ppm)"
        if refs.size == 0:
            raise FileFormatError(
                path,
                "no peak is found in 10 % of the pixels or more (within ± ppm): no references "
                "of its own; give reference_mz=",
            )
    else:
        refs = np.sort(np.atleast_1d(np.asarray(reference_mz, dtype=np.float64)))
        source = "user (lock masses)"
        if refs.size == 0 or not np.isfinite(refs).all():
            raise ValueError("reference_mz must hold finite m/z values")
        outside = refs[(refs < low) | (refs > high)]
        if outside.size:
            raise FileFormatError(
                path,
                f"reference_mz {outside.tolist()} lie outside the file's m/z range "
                f"[{low:.4f}, {high:.4f}]",
            )
    # obs, obsm and provenance as read_imzml writes them (read for one m/z window only)
    one = refs[:1]
    header = read_imzml(
        path,
        mz=MzAxis(one, one, one, np.zeros(1)),
        pixel_size_um=pixel_size_um,
        show_progress=show_progress,
    )
    if group_by is not None and group_by not in header.obs:
        raise ValueError(
            f"group_by={group_by!r} is not a column of the table's obs ({list(header.obs)})"
        )
    n = reader.n_spectra
    before = np.full((n, refs.size), np.nan)
    for a, b, mz, intensity, lengths in raw.iter_chunks(
        show_progress=show_progress, desc="recalibrate: measure"
    ):
        before[a:b] = _match(mz, intensity, lengths, refs, ppm)
    if not np.isfinite(before).any():
        raise FileFormatError(
            path,
            f"no peak within ± {ppm:g} ppm of any reference ({np.round(refs, 4).tolist()}) in "
            "any pixel: give other reference_mz= or a larger ppm=",
        )
    groups = None if group_by is None else header.obs[group_by].to_numpy()
    drift = fit_drift(before, refs, model, nodes=node_positions(refs, n_nodes), groups=groups)
    corrected = _Peaks(reader, drift)
    # the windows read_imzml would choose, over the corrected peaks
    _, centres, lo, hi, rule = features.choose(corrected, show_progress=show_progress)
    table, after = _binned(corrected, lo, hi, refs, ppm, show_progress)
    var = pd.DataFrame(
        {"mz": centres, "mz_lo": lo, "mz_hi": hi},
        index=pd.Index(mz_feature_names(np.asarray(centres)), dtype=str),
    ).astype(np.float64)
    adata = ad.AnnData(X=_table_layout(table), obs=header.obs.copy(), var=var)
    for key, value in header.obsm.items():
        adata.obsm[key] = value
    adata.uns.update(header.uns)
    adata.uns["spatialfuse"]["windows"] = {**rule, "recalibrated": True}
    write_drift(adata, drift, before, key_added)
    per_before, per_after, overall_before, overall_after = _summary(before, after)
    adata.uns[key_added] = {
        "reference_mz": refs,
        "reference_source": source,
        "spectrum_type": "centroid",
        "spectrum_type_source": how,
        "method": "peak m/z corrected, then binned",
        "model": model,
        "group_by": group_by or "pixel",
        "ppm": float(ppm),
        "ppm_before": per_before,
        "ppm_after": per_after,
        "median_abs_ppm_before": overall_before,
        "median_abs_ppm_after": overall_after,
        "pixels_without_reference": int((np.isfinite(before).sum(axis=1) == 0).sum()),
        **drift_record(drift, n_nodes, stacklevel=4),
    }
    logger.info(
        "recalibrate (centroid): %d references, median |error| %s ppm before, %s ppm after",
        refs.size,
        overall_before,
        overall_after,
    )
    return adata
