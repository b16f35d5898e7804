"""Flag m/z features that are ¹³C isotope peaks of another feature (simple deisotoping).

Feature ``j`` is the ``k``-th isotope of feature ``i`` when its m/z is ``mz_i + k · 1.003355 / z``
within ``ppm``, it is less intense than ``i`` on average, the intensity ratio is no more than
``max_ratio`` times what a molecule of that mass holds in ¹³C (about 1.1 % per carbon, carbons
estimated as ``m / 14`` for CH₂-rich metabolites and lipids), and, where the table has pixels,
the two ion images correlate (Pearson ``≥ min_correlation``): isotopes of one ion co-localise.
Peaks are walked from low to high m/z, so a chain M, M+1, M+2 is found through M+1; every
isotope names its monoisotopic feature.

Written here rather than with IsoSpecPy: without a formula there is no pattern to compute; the
averagine-style bound above is what deisotoping before annotation needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._docs import MZ_KEY, fill_doc, flagged_copy
from spatialfuse.core.adata import check_adata

if TYPE_CHECKING:
    import anndata

__all__ = ["flag_isotopes"]

#: Mass difference between ¹³C and ¹²C, in u.
C13_SPACING = 1.0033548350723

#: Share of ¹³C among carbon atoms.
C13_ABUNDANCE = 0.0107


def _mean_and_correlation(x):
    """Per-feature mean, and a function giving the Pearson correlation of two features.

    Columns are read on demand (a sparse table is converted to CSC once), so no dense float64
    copy of the whole table is made.
    """
    from scipy import sparse

    if hasattr(x, "compute"):  # dask: the means in one pass, columns when asked for
        import dask.array as da

        mean = np.nan_to_num(np.asarray(da.nanmean(x, axis=0).compute(), dtype=np.float64))
        column_of = lambda j: np.asarray(x[:, j].compute(), dtype=np.float64)  # noqa: E731
    elif sparse.issparse(x):
        csc = sparse.csc_matrix(x)
        mean = np.asarray(csc.mean(axis=0), dtype=np.float64).ravel()
        column_of = lambda j: csc[:, j].toarray().ravel().astype(np.float64)  # noqa: E731
    else:
        dense = np.asarray(x)
        with np.errstate(all="ignore"):
            mean = (
                np.nan_to_num(np.nanmean(dense, axis=0, dtype=np.float64))
                if len(dense)
                else (np.zeros(dense.shape[1]))
            )
        column_of = lambda j: np.asarray(dense[:, j], dtype=np.float64)  # noqa: E731

    def corr(i: int, j: int) -> float:
        a, b = np.nan_to_num(column_of(i)), np.nan_to_num(column_of(j))
        a, b = a - a.mean(), b - b.mean()
        norm = np.sqrt((a @ a) * (b @ b))
        return float(a @ b / norm) if norm > 0 else 0.0

    return mean, corr


@fill_doc(mz_key=MZ_KEY, copy=flagged_copy("a flagged"))
def flag_isotopes(
    adata: anndata.AnnData,
    *,
    ppm: float = 5.0,
    max_isotope: int = 3,
    charge: int = 1,
    max_ratio: float = 3.0,
    min_correlation: float = 0.5,
    mz_key: str = "mz",
    key_added: str = "isotope",
    copy: bool = False,
) -> anndata.AnnData | None:
    """Mark the features that are ¹³C isotope peaks of a lighter feature.

    Parameters
    ----------
    adata
        Pixels × m/z features (``var[mz_key]``), centroided (e.g. :func:`pick_peaks`).
    ppm
        Largest m/z error of an isotope spacing, in ppm of the heavier peak.
    max_isotope
        Largest isotope number searched (M+1 … M+``max_isotope``).
    charge
        Charge state ``z`` of the ions.
    max_ratio
        An isotope may be at most this many times as intense, relative to its monoisotopic
        peak, as ¹³C abundance predicts for its mass (and never more intense than it).
    min_correlation
        Smallest Pearson correlation of the two ion images over the pixels (ignored with
        fewer than 3 pixels; -1 switches it off).
    {mz_key}
    key_added
        Prefix of the ``var`` columns written.
    {copy}
        The flagged copy if ``copy``, else None. Writes ``var[key_added]`` (bool: an isotope
        peak), ``var[f"{key_added}_of"]`` (the name of its monoisotopic feature, ``""`` for
        monoisotopic ones) and ``var[f"{key_added}_number"]`` (0 for monoisotopic, k for M+k).
    """
    check_adata(adata)
    if mz_key not in adata.var:
        raise ValueError(f"adata.var has no {mz_key!r} column (the m/z of each feature)")
    for name, value, low in (("max_isotope", max_isotope, 1), ("charge", charge, 1)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (np.isfinite(ppm) and ppm > 0):
        raise ValueError(f"ppm must be a positive number, got {ppm!r}")
    if not (np.isfinite(max_ratio) and max_ratio > 0):
        raise ValueError(f"max_ratio must be a positive number, got {max_ratio!r}")
    mz = np.asarray(adata.var[mz_key], dtype=np.float64)
    mean, corr = _mean_and_correlation(adata.X)
    use_corr = adata.n_obs >= 3 and min_correlation > -1
    order = np.argsort(mz, kind="stable")
    sorted_mz = mz[order]
    parent = np.full(mz.size, -1)
    number = np.zeros(mz.size, dtype=np.int64)
    step = C13_SPACING / charge
    for i in order:  # low to high m/z: a parent is settled before its isotopes are searched
        if parent[i] >= 0:
            continue
        carbons = max(1.0, mz[i] * charge / 14.0)
        expected = carbons * C13_ABUNDANCE / (1 - C13_ABUNDANCE)
        previous = i
        for k in range(1, int(max_isotope) + 1):
            target = mz[i] + k * step
            lo = np.searchsorted(sorted_mz, target * (1 - ppm * 1e-6), side="left")
            hi = np.searchsorted(sorted_mz, target * (1 + ppm * 1e-6), side="right")
            found = [
                j
                for j in order[lo:hi]
                if parent[j] < 0
                and j != i
                and 0 < mean[j] < mean[previous]
                and mean[j] <= max_ratio * expected * mean[previous]
                and (not use_corr or corr(i, j) >= min_correlation)
            ]
            if not found:
                break
            j = min(found, key=lambda f: abs(mz[f] - target))
            parent[j], number[j], previous = i, k, j
    adata = adata.copy() if copy else adata
    names = adata.var_names.to_numpy().astype(str)
    adata.var[key_added] = parent >= 0
    adata.var[f"{key_added}_of"] = np.where(parent >= 0, names[np.maximum(parent, 0)], "")
    adata.var[f"{key_added}_number"] = number
    return adata if copy else None
