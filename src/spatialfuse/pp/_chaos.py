"""Spatial chaos of ion images: structured images score near 1, salt-and-pepper noise near 0.

After the idea of Alexandrov & Bartels (2013) that METASPACE reports as ρ_chaos: an ion image is
put on its pixel grid, its hot spots are clipped at the 99th percentile, it is scaled to
[0, 1] and cut at ``n_levels`` evenly spaced levels; at each level the pixels above it fall into
connected objects (8-connectivity, :func:`scipy.ndimage.label`). A tissue structure gives few
objects at every level, noise many. ρ_chaos divides the mean number of objects by the number of
pixels with signal, which leaves dense noise at ~0.98 beside a smooth blob at ~1.0 (measured);
here the mean number of objects is divided by that of the same values shuffled over the same
pixels (a fixed seed), so the score reads as "how much less fragmented than noise":
``1 − objects(image) / objects(shuffled)``, clipped to [0, 1]. Not METASPACE's number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from spatialfuse._logging import progress
from spatialfuse.core.adata import check_adata

if TYPE_CHECKING:
    import anndata

__all__ = ["chaos_score", "spatial_chaos"]


def _objects(im: np.ndarray, levels: np.ndarray) -> float:
    from scipy import ndimage

    structure = np.ones((3, 3), dtype=bool)
    return float(np.mean([ndimage.label(im > level, structure=structure)[1] for level in levels]))


def chaos_score(
    image: np.ndarray, *, mask: np.ndarray | None = None, n_levels: int = 30, seed: int = 0
) -> float:
    """Spatial-chaos score of one 2-D image: 1 − objects / objects of its shuffled values.

    ``mask`` marks the pixels that were measured (all by default); their values are shuffled
    among themselves for the reference. NaN counts as 0. An empty image scores 0.
    """
    im = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    im = np.maximum(im, 0.0)
    mask = np.ones(im.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if not (im > 0).any():
        return 0.0
    top = np.percentile(im[im > 0], 99)
    im = np.minimum(im, top) / top
    levels = np.linspace(0, 1, n_levels, endpoint=False)
    shuffled = im.copy()
    shuffled[mask] = np.random.default_rng(seed).permutation(im[mask])
    reference = _objects(shuffled, levels)
    if reference <= 0:
        return 0.0
    return float(np.clip(1.0 - _objects(im, levels) / reference, 0.0, 1.0))


def _grid(adata) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    if "imzml_x" in adata.obs and "imzml_y" in adata.obs:
        x = np.asarray(adata.obs["imzml_x"], dtype=np.int64)
        y = np.asarray(adata.obs["imzml_y"], dtype=np.int64)
    else:
        raise ValueError(
            "spatial_chaos needs the pixel grid: obs['imzml_x'] and obs['imzml_y'] "
            "(as sf.io.read_imzml and sf.pp.pick_peaks write them)"
        )
    x, y = x - x.min(), y - y.min()
    return x, y, (int(y.max()) + 1, int(x.max()) + 1)


def spatial_chaos(
    adata: anndata.AnnData,
    *,
    n_levels: int = 30,
    min_score: float = 0.5,
    key_added: str = "spatial_chaos",
    copy: bool = False,
    show_progress: bool = False,
) -> anndata.AnnData | None:
    """Score every ion image for spatial structure, to drop noise peaks.

    Parameters
    ----------
    adata
        Pixels × m/z features with the pixel grid in ``obs["imzml_x"]``, ``obs["imzml_y"]``
        (from :func:`spatialfuse.io.read_imzml` or :func:`spatialfuse.pp.pick_peaks`).
    n_levels
        Number of intensity levels at which connected objects are counted.
    min_score
        Features scoring at least this are marked as structured.
    key_added
        Name of the ``var`` columns written.
    copy
        Return a scored copy instead of changing ``adata``.
    show_progress
        Show a progress bar.

    Returns
    -------
    anndata.AnnData or None
        The scored copy if ``copy``, else None. Writes ``var[key_added]`` (the score: near 1
        for one connected structure, near 0 for signal scattered like noise, 0 for an empty
        image) and ``var[f"{key_added}_ok"]`` (score ≥ ``min_score``).
    """
    from scipy import sparse

    check_adata(adata)
    if isinstance(n_levels, bool) or int(n_levels) != n_levels or n_levels < 2:
        raise ValueError(f"n_levels must be an integer >= 2, got {n_levels!r}")
    if not (np.isfinite(min_score) and 0 <= min_score <= 1):
        raise ValueError(f"min_score must lie in [0, 1], got {min_score!r}")
    x, y, shape = _grid(adata)
    mask = np.zeros(shape, dtype=bool)
    mask[y, x] = True
    table = adata.X
    if hasattr(table, "compute"):
        table = table.compute()
    csc = sparse.csc_matrix(table) if sparse.issparse(table) else np.asarray(table)
    scores = np.zeros(adata.n_vars)
    for j in progress(range(adata.n_vars), show=show_progress, desc="spatial chaos"):
        column = csc[:, j]
        values = column.toarray().ravel() if sparse.issparse(column) else np.asarray(column)
        image = np.zeros(shape)
        np.add.at(image, (y, x), np.nan_to_num(values.astype(np.float64)))
        scores[j] = chaos_score(image, mask=mask, n_levels=int(n_levels))
    adata = adata.copy() if copy else adata
    adata.var[key_added] = scores
    adata.var[f"{key_added}_ok"] = scores >= min_score
    return adata if copy else None
