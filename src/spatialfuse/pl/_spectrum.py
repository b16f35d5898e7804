"""Spectra plots: the picked peaks on the reference spectrum, and the recalibration error."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from spatialfuse.pl._common import finish, new_axes, one_axes_plot

if TYPE_CHECKING:
    import anndata
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@one_axes_plot
def spectrum(
    adata: anndata.AnnData,
    *,
    key: str = "peaks",
    n_labels: int = 10,
    name_key: str = "annotation_name",
    title: str | None = None,
    ax: Axes | None = None,
    save: str | os.PathLike | None = None,
) -> Figure:
    """Draw the reference spectrum peak picking used, with the picked peaks marked.

    The check of a picking: every peak a reader would call one should carry a dot, and no dot
    should sit on noise. The run report shows this figure for its spectra step.

    Parameters
    ----------
    adata
        A table from :func:`spatialfuse.pp.pick_peaks` (``uns[key]`` holds the reference
        spectrum, ``var`` the peaks with ``mz`` and ``intensity``).
    key
        The ``uns`` entry ``pick_peaks`` wrote (its ``key_added``).
    n_labels
        Label this many of the highest peaks with their m/z (and name, where
        :func:`spatialfuse.tl.annotate` gave one in ``var[name_key]``).
    name_key
        The ``var`` column of annotation names.
    title
        Axes title (default: how many peaks were picked, at what S/N).
    {ax_save}

    Returns
    -------
    matplotlib.figure.Figure
        The reference spectrum (mean or skyline) as a line, each picked peak as a dot at its
        centroid m/z and height above the baseline.
    """
    info = adata.uns.get(key)
    if not isinstance(info, dict) or "reference_mz" not in info:
        raise ValueError(f"adata.uns has no {key!r} entry from sf.pp.pick_peaks")
    mz = np.asarray(info["reference_mz"], dtype=np.float64)
    intensity = np.asarray(info["reference_intensity"], dtype=np.float64)
    fig, ax = new_axes(ax, (9.0, 3.6))
    ax.plot(mz, intensity, lw=0.6, color="0.35", label=f"{info.get('reference', 'mean')} spectrum")
    peaks_mz = np.asarray(adata.var["mz"], dtype=np.float64)
    height = np.asarray(adata.var.get("intensity", np.zeros(adata.n_vars)), dtype=np.float64)
    ax.scatter(peaks_mz, height, s=12, color="#d62728", zorder=3, label="picked peaks")
    names = adata.var[name_key].astype(str).to_numpy() if name_key in adata.var else None
    for i in np.argsort(-height)[: max(int(n_labels), 0)]:
        label = f"{peaks_mz[i]:.4f}"
        if names is not None and names[i]:
            label = f"{names[i].split('; ')[0]}\n{label}"
        ax.annotate(
            label,
            (peaks_mz[i], height[i]),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=6,
        )
    ax.set_xlabel("m/z")
    ax.set_ylabel("intensity")
    ax.set_ylim(0, max(float(intensity.max(initial=0)), float(height.max(initial=0))) * 1.25 or 1)
    ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.set_title(
        title
        or f"{adata.n_vars} peaks picked (S/N ≥ {info.get('snr', float('nan')):g} over the noise "
        f"{info.get('noise', float('nan')):.3g})"
    )
    return finish(fig, save)


@one_axes_plot
def recalibration(
    adata: anndata.AnnData,
    *,
    key: str = "recalibration",
    title: str | None = None,
    ax: Axes | None = None,
    save: str | os.PathLike | None = None,
) -> Figure:
    """Draw the m/z error at each reference peak before and after recalibration.

    After a right recalibration every blue bar is well below its grey one; a reference whose
    error stays high was not found in most pixels (too weak, or outside the search window).

    Parameters
    ----------
    adata
        A table :func:`spatialfuse.pp.recalibrate` worked on (``uns[key]``).
    key
        The ``uns`` entry it wrote (its ``key_added``).
    title
        Axes title (default: the median absolute error before and after, over every pixel and
        reference).
    {ax_save}

    Returns
    -------
    matplotlib.figure.Figure
        Per reference m/z, the pixels' median absolute error in ppm before (grey) and after
        (blue) the correction.
    """
    info = adata.uns.get(key)
    if not isinstance(info, dict) or "ppm_before" not in info:
        raise ValueError(f"adata.uns has no {key!r} entry from sf.pp.recalibrate")
    refs = np.asarray(info["reference_mz"], dtype=np.float64)
    before = np.asarray(info["ppm_before"], dtype=np.float64)
    after = np.asarray(info["ppm_after"], dtype=np.float64)
    fig, ax = new_axes(ax, (max(4.0, 0.5 * len(refs) + 2.0), 3.4))
    x = np.arange(len(refs))
    ax.bar(x - 0.2, before, width=0.4, color="0.6", label="before")
    ax.bar(x + 0.2, after, width=0.4, color="#1f77b4", label="after")
    ax.set_xticks(x, [f"{m:.4f}" for m in refs], rotation=90, fontsize=7)
    ax.set_xlabel("reference m/z")
    ax.set_ylabel("median |error| over pixels (ppm)")
    ax.set_ylim(0, 1.25 * max(float(before.max(initial=0)), float(after.max(initial=0))) or 1)
    ax.legend(fontsize=7, frameon=False, loc="upper right", ncols=2)
    ax.set_title(
        title
        or f"m/z error {info['median_abs_ppm_before']:.2f} → {info['median_abs_ppm_after']:.2f} "
        "ppm (median |error|)"
    )
    return finish(fig, save)
