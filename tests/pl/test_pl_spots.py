"""sf.pl.gene_and_ion and sf.pl.joint_clusters: the spots drawn, their values, places, colours."""

from __future__ import annotations

import numpy as np
import pytest
from spot_drawing import drawn_patches, patch_centres  # tests/pl/spot_drawing.py

import spatialfuse as sf
from spatialfuse.core.features import resolve_ions


def _hires(mdata):
    library = next(iter(mdata.uns["spatial"]))
    return mdata.uns["spatial"][library]["scalefactors"]["tissue_hires_scalef"]


def test_gene_and_ion_draws_each_modality_where_it_was_measured(joint_data):
    mdata = joint_data.mdata
    rna, msi = mdata.mod["rna"], mdata.mod["msi"]
    gene = joint_data.trio.marker_genes[joint_data.region][0]
    fig = sf.pl.gene_and_ion(mdata, gene, joint_data.marker_mz)
    gene_ax, ion_ax = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    ion = resolve_ions(msi, joint_data.marker_mz)[0]

    spots = drawn_patches(gene_ax)
    assert len(spots.get_paths()) == rna.n_obs
    column = rna[:, gene].X
    expected = np.ravel(column.toarray() if hasattr(column, "toarray") else column)
    assert np.asarray(spots.get_array()) == pytest.approx(expected)
    # squidpy's frame: hires image pixels = full-res pixels × tissue_hires_scalef
    scale = _hires(mdata)
    assert patch_centres(spots) == pytest.approx(rna.obsm["spatial"] * scale, abs=1e-6)

    measured = msi.obs["has_msi"].to_numpy(dtype=bool)
    assert 0 < measured.sum() < msi.n_obs  # some spots lie off the MSI acquisition
    dots = drawn_patches(ion_ax)
    assert len(dots.get_paths()) == measured.sum()
    expected = np.ravel(msi[:, ion].X)[measured]
    assert np.isfinite(expected).all()
    assert np.asarray(dots.get_array()) == pytest.approx(expected)
    assert patch_centres(dots) == pytest.approx(msi.obsm["spatial"][measured] * scale, abs=1e-6)

    assert gene_ax.get_title() == gene
    assert ion_ax.get_title() == f"m/z {msi.var['mz'][ion]:.4f}"
    # the marker gene and the marker ion agree spot by spot
    both = rna.obs_names.get_indexer(msi.obs_names[measured])
    gene_values = np.asarray(spots.get_array())[both]
    assert np.corrcoef(gene_values, np.asarray(dots.get_array()))[0, 1] > 0.7


def test_gene_and_ion_on_given_axes_and_bad_keys(joint_data, tmp_path):
    import matplotlib.pyplot as plt

    mdata = joint_data.mdata
    ion = mdata.mod["msi"].var_names[0]
    fig, axes = plt.subplots(1, 2)
    out = sf.pl.gene_and_ion(mdata, "VAS2", ion, axes=axes, save=tmp_path / "g.pdf")
    assert out is fig
    assert len(drawn_patches(axes[1]).get_paths()) == mdata.obs["has_msi"].sum()
    assert (tmp_path / "g.pdf").read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match="no gene 'VAS9'"):
        sf.pl.gene_and_ion(mdata, "VAS9", ion)
    with pytest.raises(ValueError, match=r"no ion m/z 101\.0000"):
        sf.pl.gene_and_ion(mdata, "VAS2", 101.0)
    with pytest.raises(ValueError, match="no modality 'metabolites'"):
        sf.pl.gene_and_ion(mdata, "VAS2", ion, msi_key="metabolites")
    with pytest.raises(ValueError, match="two matplotlib Axes"):
        sf.pl.gene_and_ion(mdata, "VAS2", ion, axes=[axes[0]])


def test_joint_clusters_one_disc_per_labelled_spot_one_colour_per_cluster(joint_data):
    import matplotlib.pyplot as plt

    mdata = joint_data.mdata
    labels = mdata.obs["joint"]
    labelled = labels.notna().to_numpy()
    fig, ax = plt.subplots()
    assert sf.pl.joint_clusters(mdata, ax=ax) is fig
    spots = drawn_patches(ax)
    assert len(spots.get_paths()) == labelled.sum() < mdata.n_obs
    scale = _hires(mdata)
    assert patch_centres(spots) == pytest.approx(mdata.obsm["spatial"][labelled] * scale, abs=1e-6)
    colours = [tuple(np.round(c, 6)) for c in spots.get_facecolors()]
    drawn_labels = labels[labelled].astype(str).to_numpy()
    by_label = {}
    for label, colour in zip(drawn_labels, colours, strict=True):
        by_label.setdefault(label, set()).add(colour)
    assert all(len(c) == 1 for c in by_label.values())  # one colour per cluster
    assert len({next(iter(c)) for c in by_label.values()}) == len(by_label)  # all distinct
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(legend) == sorted(by_label)


def test_joint_clusters_names_a_missing_key(joint_data):
    with pytest.raises(ValueError, match=r"no column 'leiden'.*joint"):
        sf.pl.joint_clusters(joint_data.mdata, key="leiden")


def test_mathtext_gene_name_is_drawn_literally(joint_data, tmp_path):
    mdata = joint_data.mdata
    gene = joint_data.trio.marker_genes[joint_data.region][0]
    rna = mdata.mod["rna"].copy()
    odd = r"$\frac{$" + gene
    rna.var_names = [odd if g == gene else g for g in rna.var_names]
    fig = sf.pl.gene_and_ion(
        _with_rna(mdata, rna),
        odd,
        joint_data.marker_mz,
        save=tmp_path / "g.png",
    )
    assert (tmp_path / "g.png").stat().st_size > 0
    assert any(odd in ax.get_title() for ax in fig.axes)


def _with_rna(mdata, rna):
    import mudata

    return mudata.MuData({"rna": rna, "msi": mdata.mod["msi"]})


def test_gene_and_ion_from_a_written_joint_file_draws_both_on_the_image(joint_data, tmp_path):
    """``joint.h5mu`` keeps the images once (in the RNA modality): read back, the ion panel
    borrows them and draws its spots where the in-memory table put them."""
    import matplotlib.pyplot as plt
    import mudata

    path = sf.io.write_h5mu(joint_data.mdata, tmp_path / "joint.h5mu", images_once=True)
    back = mudata.read_h5mu(path)
    msi = back.mod["msi"]
    assert not msi.uns.get("spatial")  # stored once: only the RNA modality has them
    fig = sf.pl.gene_and_ion(back, back.mod["rna"].var_names[0], joint_data.marker_mz)
    gene_ax, ion_ax = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert gene_ax.images and ion_ax.images, "no H&E under the ion's spots"
    measured = msi.obs["has_msi"].to_numpy(dtype=bool)
    scale = _hires(back.mod["rna"])
    dots = drawn_patches(ion_ax)
    assert patch_centres(dots) == pytest.approx(msi.obsm["spatial"][measured] * scale, abs=1e-6)
    plt.close(fig)
