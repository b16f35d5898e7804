"""Spot-level maps of a joint table on the H&E: a gene beside an ion, and joint clusters.

Both delegate the drawing to ``squidpy.pl.spatial_scatter`` (spots as discs of their real size
on the hires H&E of ``uns["spatial"]``), so the axes are in pixels of that hires image, squidpy's
frame; a scale bar gives µm where the calibration (``uns["spatialfuse"]["um_per_px"]``) is known.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._text import literal_text_figures
from spatialfuse.pl._common import (
    draw_spots,
    finish,
    new_axes,
    one_axes_plot,
    spot_table,
    um_per_px,
)

if TYPE_CHECKING:
    import mudata
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@literal_text_figures
def gene_and_ion(
    mdata: mudata.MuData,
    gene: str,
    ion: str | float,
    *,
    rna_key: str = "rna",
    msi_key: str = "msi",
    rna_layer: str | None = None,
    msi_layer: str | None = None,
    ppm: float | None = None,
    tol: float | None = None,
    cmap: str = "viridis",
    axes: Sequence[Axes] | None = None,
    save: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Figure:
    """Draw a gene and an ion side by side on the tissue, each at the spots that measured it.

    Parameters
    ----------
    mdata
        A joint table (:func:`spatialfuse.tl.joint_table`): modalities ``rna_key`` and
        ``msi_key`` over the same spots, ``obsm["spatial"]`` and ``uns["spatial"]``.
    gene
        A ``var_name`` of the RNA modality.
    ion
        An MSI ``var_name`` or an m/z value (nearest ``var["mz"]`` within ``ppm`` / ``tol``).
    rna_key, msi_key
        Modality names.
    rna_layer, msi_layer
        Draw these layers instead of ``X``.
    ppm, tol
        Matching window for a numeric ``ion``: ± ``ppm`` (default 10) or ± ``tol`` m/z units.
    cmap
        Colour map of both panels.
    axes
        Two axes to draw on (else a new figure with two panels).
    save
        Also write the figure here (format from the extension; atomic).
    **kwargs
        Passed to ``squidpy.pl.spatial_scatter`` (e.g. ``size``, ``img_alpha``).

    Returns
    -------
    matplotlib.figure.Figure
        The figure. Left: the gene at every spot of the RNA modality; right: the ion at the
        spots with MSI data (finite values and ``has_msi`` true); spots without MSI data are not
        drawn.

    Raises
    ------
    ValueError
        A modality, gene, ion or layer is missing (the message names it), or no spot has MSI
        data.
    """
    import matplotlib.pyplot as plt

    from spatialfuse.core.adata import feature_matrix
    from spatialfuse.core.features import modalities, resolve_genes, resolve_ions
    from spatialfuse.core.mz import mz_values

    rna, msi = modalities(mdata, rna_key, msi_key)
    if not isinstance(gene, str):
        raise ValueError(f"gene must be a gene name (a str), got {gene!r}")
    gene = resolve_genes(rna, [gene], rna_key)[0]
    ion_name = resolve_ions(msi, ion, ppm=ppm, tol=tol, name=msi_key)[0]
    expression = _column(feature_matrix(rna, rna_layer, rna_key), rna.var_names.get_loc(gene))
    signal = _column(feature_matrix(msi, msi_layer, msi_key), msi.var_names.get_loc(ion_name))
    measured = np.isfinite(signal)
    if "has_msi" in msi.obs:
        measured &= msi.obs["has_msi"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    if not measured.any():
        raise ValueError(f"no spot of {msi_key!r} has MSI data for {ion_name}")
    mz = mz_values(msi)[msi.var_names.get_loc(ion_name)]
    ion_label = f"m/z {mz:.4f}" if np.isfinite(mz) else ion_name
    name = msi.var["annotation_name"].get(ion_name) if "annotation_name" in msi.var else None
    if isinstance(name, str) and name:
        # the name sf.tl.annotate gave it (the best match; isomers follow after "; ")
        ion_label = f"{name.split('; ')[0]} ({ion_label})"

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11.0, 5.0), constrained_layout=True)
    else:
        axes = list(axes)
        if len(axes) != 2:
            raise ValueError(f"axes must be two matplotlib Axes, got {len(axes)}")
        fig = axes[0].figure
    scale = um_per_px(rna, mdata, msi)
    gene_spots = spot_table(_positions(rna, mdata), rna.obs_names, {gene: expression})
    draw_spots(gene_spots, gene, axes[0], title=gene, um_per_px=scale, cmap=cmap, **kwargs)
    ion_spots = spot_table(
        _positions(msi, mdata),
        msi.obs_names[measured],
        {ion_label: signal[measured]},
        image_sources=(mdata, rna),
    )
    draw_spots(ion_spots, ion_label, axes[1], title=ion_label, um_per_px=scale, cmap=cmap, **kwargs)
    return finish(fig, save)


@one_axes_plot
def joint_clusters(
    mdata: mudata.MuData,
    key: str = "joint",
    *,
    palette: str | Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    save: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Figure:
    """Draw cluster labels (e.g. from :func:`spatialfuse.tl.joint_cluster`) on the tissue.

    Parameters
    ----------
    mdata
        A joint table with labels in ``mdata.obs[key]`` and spot positions / H&E in
        ``obsm["spatial"]`` / ``uns["spatial"]`` (of ``mdata`` or, failing that, of its first
        modality that has them).
    key
        The ``obs`` column of labels; spots with a missing label are not drawn.
    palette
        Colours of the clusters (squidpy's ``palette``).
    title
        Axes title (default: ``key``).
    {ax_save}
    **kwargs
        Passed to ``squidpy.pl.spatial_scatter``.

    Returns
    -------
    matplotlib.figure.Figure
        The figure; one disc per labelled spot, one colour per cluster, with a legend.

    Raises
    ------
    ValueError
        ``key`` is not a column of ``mdata.obs`` (the message lists the columns), or no spot has
        a label.
    """
    if not hasattr(mdata, "obs") or not hasattr(mdata, "obsm"):
        raise TypeError(f"mdata must be a MuData or AnnData, got {type(mdata).__name__}")
    if key not in mdata.obs.columns:
        raise ValueError(
            f"mdata.obs has no column {key!r} (columns: {list(mdata.obs.columns)}); run "
            f"sf.tl.joint_cluster(mdata, key_added={key!r}) first"
        )
    labels = mdata.obs[key]
    labelled = labels.notna().to_numpy()
    if not labelled.any():
        raise ValueError(f"mdata.obs[{key!r}] has no labels (all missing)")
    values = labels[labelled].astype(str).astype("category")
    if hasattr(labels, "cat"):
        order = [str(c) for c in labels.cat.categories if str(c) in set(values)]
        values = values.cat.reorder_categories(order)
    fig, ax = new_axes(ax, (6.0, 5.0))
    source = _positions(mdata, *getattr(mdata, "mod", {}).values())
    table = spot_table(source, mdata.obs_names[labelled], {key: values.to_numpy()})
    table.obs[key] = table.obs[key].astype(values.dtype)
    if palette is not None:
        kwargs["palette"] = palette
    scale = um_per_px(mdata, *getattr(mdata, "mod", {}).values())
    draw_spots(table, key, ax, title=title if title is not None else key, um_per_px=scale, **kwargs)
    return finish(fig, save)


def _column(matrix, column: int) -> np.ndarray:
    from scipy import sparse

    values = matrix[:, column]
    values = values.toarray() if sparse.issparse(values) else np.asarray(values)
    return np.asarray(values, dtype=np.float64).ravel()


def _positions(*sources):
    """The first of ``sources`` with ``obsm["spatial"]`` (else ``"spatial_um"``)."""
    for key in ("spatial", "spatial_um"):
        for source in sources:
            if source is not None and key in getattr(source, "obsm", {}):
                return source
    raise ValueError("no spot positions: obsm['spatial'] and obsm['spatial_um'] are missing")
