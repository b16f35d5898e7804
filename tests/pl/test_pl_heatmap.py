"""sf.pl.correlation_heatmap: the matrix drawn, the stars, the labels, and bad tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf


def _table():
    """A hand-made table in cross_modal_correlation's layout (strongest first), one pair missing."""
    rows = [
        ("A", "mz-100.0000", 100.0, 0.9, 0.001),
        ("B", "mz-200.0000", 200.0, -0.8, 0.02),
        ("A", "mz-200.0000", 200.0, 0.7, 0.06),
        ("C", "mz-100.0000", 100.0, -0.5, 0.3),
        ("B", "mz-100.0000", 100.0, 0.4, 0.04),
        ("C", "mz-300.0000", 300.0, 0.3, 0.5),
        ("A", "mz-300.0000", 300.0, 0.1, 0.9),
        ("D", "mz-100.0000", 100.0, 0.05, 0.9),
    ]
    return pd.DataFrame(rows, columns=["gene", "ion", "mz", "r", "p_adjusted"])


def test_matrix_stars_and_labels_from_a_table():
    table = _table()
    fig = sf.pl.correlation_heatmap(table, n_genes=3, n_ions=3, alpha=0.05)
    ax = fig.axes[0]
    (image,) = ax.images
    drawn = image.get_array()
    genes, ions = ["A", "B", "C"], ["mz-100.0000", "mz-200.0000", "mz-300.0000"]
    expected = np.full((3, 3), np.nan)
    for gene, ion, _, r, _ in table.itertuples(index=False):
        if gene in genes and ion in ions:
            expected[genes.index(gene), ions.index(ion)] = r
    assert np.array_equal(drawn.filled(np.nan), expected, equal_nan=True)
    assert drawn.mask[1, 2]  # (B, mz-300) is not in the table: blank
    assert image.get_clim() == (-1.0, 1.0)
    stars = {tuple(p) for p in ax.collections[0].get_offsets().tolist()}
    # significant shown cells: (A, 100), (B, 200), (B, 100) as (column, row)
    assert stars == {(0.0, 0.0), (1.0, 1.0), (0.0, 1.0)}
    assert [t.get_text() for t in ax.get_yticklabels()] == genes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100.0000", "200.0000", "300.0000"]


def test_from_a_joint_table_equals_from_its_correlation_table(joint_data):
    mdata = joint_data.mdata
    table = sf.tl.cross_modal_correlation(mdata, n_top=None)
    from_table = sf.pl.correlation_heatmap(table, n_genes=8, n_ions=6).axes[0]
    from_mdata = sf.pl.correlation_heatmap(mdata, n_genes=8, n_ions=6, n_top=None).axes[0]
    a, b = from_table.images[0].get_array(), from_mdata.images[0].get_array()
    assert a.shape == (8, 6)
    assert np.array_equal(a.filled(np.nan), b.filled(np.nan), equal_nan=True)
    # the strongest pair is the top-left cell
    assert a[0, 0] == pytest.approx(table["r"].iloc[0])
    assert from_table.get_yticklabels()[0].get_text() == table["gene"].iloc[0]
    assert "dutilleul" in from_table.get_title()


def test_bad_tables_say_what_is_wrong():
    with pytest.raises(ValueError, match="no column 'p_adjusted'"):
        sf.pl.correlation_heatmap(_table().drop(columns="p_adjusted"))
    with pytest.raises(ValueError, match="empty"):
        sf.pl.correlation_heatmap(_table().iloc[:0])
    with pytest.raises(ValueError, match="n_genes must be a positive integer"):
        sf.pl.correlation_heatmap(_table(), n_genes=0)
    with pytest.raises(TypeError, match="unexpected arguments"):
        sf.pl.correlation_heatmap(_table(), method="spearman")


@pytest.mark.parametrize("gene", [r"$\frac{$", "$x^{2$", "a$b$c$d"])
def test_mathtext_in_gene_names_is_drawn_literally(gene, tmp_path):
    # Gene names come from files; "$...$" used to reach matplotlib's mathtext parser, which
    # raised while saving.
    table = _table().replace({"gene": {"A": gene}})
    fig = sf.pl.correlation_heatmap(table, n_genes=3, n_ions=3, save=tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0
    labels = fig.axes[0].get_yticklabels()
    assert labels[0].get_text() == gene
    assert not labels[0].get_parse_math()
