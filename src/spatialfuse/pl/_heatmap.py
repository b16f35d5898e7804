"""Heat map of the strongest gene × ion correlations of ``sf.tl.cross_modal_correlation``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialfuse._text import literal_text_figures
from spatialfuse.pl._common import finish, new_axes

if TYPE_CHECKING:
    import mudata
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_COLUMNS = ("gene", "ion", "r", "p_adjusted")


@literal_text_figures
def correlation_heatmap(
    data: pd.DataFrame | mudata.MuData,
    *,
    n_genes: int = 20,
    n_ions: int = 20,
    alpha: float = 0.05,
    cmap: str = "RdBu_r",
    title: str | None = None,
    ax: Axes | None = None,
    save: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Figure:
    """Draw gene × ion correlations as a heat map, marking the significant pairs.

    The genes and ions shown are the first ``n_genes`` genes and ``n_ions`` ions met going down
    the table (strongest ``|r|`` first), in that order; cells are ``r`` on a fixed −1 … 1 scale,
    a pair absent from the table is blank, and a star marks ``p_adjusted < alpha``.

    Parameters
    ----------
    data
        A table from :func:`spatialfuse.tl.cross_modal_correlation` (columns ``gene``, ``ion``,
        ``r``, ``p_adjusted``; ``mz`` and ``ion_name`` label the ions when present), or a joint
        MuData, which is passed to it with ``**kwargs`` first.
    n_genes, n_ions
        How many genes (rows) and ions (columns) to show.
    alpha
        Significance level for the stars (on ``p_adjusted``).
    cmap
        A diverging colour map.
    title
        Axes title (default: the method and null recorded with the table).
    ax
        Draw on this axes (else a new figure sized to the matrix).
    save
        Also write the figure here (format from the extension; atomic).
    **kwargs
        Passed to :func:`~spatialfuse.tl.cross_modal_correlation` when ``data`` is a MuData.

    Returns
    -------
    matplotlib.figure.Figure
        The figure; on the axes an image of the ``genes × ions`` matrix of ``r`` (rows labelled
        with gene names, columns with m/z) and one star per significant cell.

    Raises
    ------
    ValueError
        The table lacks a column (the message names it) or is empty, or ``n_genes``/``n_ions``
        is not a positive integer.
    """
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if kwargs:
            raise TypeError(f"unexpected arguments for a table: {sorted(kwargs)}")
        table = data
    else:
        from spatialfuse.tl import cross_modal_correlation

        table = cross_modal_correlation(data, **kwargs)
    missing = [c for c in _COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"the table has no column {', '.join(repr(c) for c in missing)} (columns: "
            f"{list(table.columns)}); expected the output of sf.tl.cross_modal_correlation"
        )
    if not len(table):
        raise ValueError("the correlation table is empty")
    for value, name in ((n_genes, "n_genes"), (n_ions, "n_ions")):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

    genes = list(dict.fromkeys(table["gene"]))[:n_genes]
    ions = list(dict.fromkeys(table["ion"]))[:n_ions]
    shown = table[table["gene"].isin(genes) & table["ion"].isin(ions)]
    matrix = shown.pivot_table(index="gene", columns="ion", values="r", aggfunc="first")
    matrix = matrix.reindex(index=genes, columns=ions)
    significant = (
        (shown["p_adjusted"] < alpha)
        .groupby([shown["gene"], shown["ion"]])
        .any()
        .unstack()
        .reindex(index=genes, columns=ions)
        .fillna(False)
        .to_numpy(dtype=bool)
    )
    if "mz" in shown.columns:
        mz = shown.drop_duplicates("ion").set_index("ion")["mz"].reindex(ions)
        ion_labels = [f"{m:.4f}" if np.isfinite(m) else i for i, m in zip(ions, mz, strict=True)]
    else:
        ion_labels = list(ions)
    if "ion_name" in shown.columns:
        names = shown.drop_duplicates("ion").set_index("ion")["ion_name"].reindex(ions)
        ion_labels = [
            f"{str(n).split('; ')[0]} {label}" if isinstance(n, str) and n else label
            for n, label in zip(names, ion_labels, strict=True)
        ]

    size = (2.5 + 0.32 * len(ions), 1.8 + 0.28 * len(genes))
    fig, ax = new_axes(ax, size)
    image = ax.imshow(
        np.ma.masked_invalid(matrix.to_numpy(dtype=np.float64)),
        cmap=cmap,
        vmin=-1.0,
        vmax=1.0,
        aspect="auto",
        interpolation="nearest",
    )
    rows, cols = np.nonzero(significant)
    ax.scatter(cols, rows, marker="*", s=40, c="black", linewidths=0, label=f"p_adj < {alpha:g}")
    ax.set_xticks(np.arange(len(ions)), ion_labels, rotation=90, fontsize=7)
    ax.set_yticks(np.arange(len(genes)), genes, fontsize=7)
    ax.set_xlim(-0.5, len(ions) - 0.5)
    ax.set_ylim(len(genes) - 0.5, -0.5)
    ax.set_xlabel("ion (m/z)")
    ax.set_ylabel("gene")
    info = table.attrs.get("spatialfuse", {}) if hasattr(table, "attrs") else {}
    method = str(info.get("method", "pearson")).capitalize()
    if title is None:
        title = f"{method} r; ★ BH-adjusted p < {alpha:g}"
        if info.get("null"):
            title += f" ({info['null'].replace('_', ' ')})"
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label=f"{method} r", shrink=0.8)
    return finish(fig, save)
