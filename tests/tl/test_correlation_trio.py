"""cross_modal_correlation on the synthetic trio: a region's marker genes and ions are found.

The trio's MSI is mapped onto the Visium spots with its *true* transform, so the test is about the
association, not the registration. The vascular region is the one whose ion group and gene group
are the same regions (vascular + adipose): its marker genes and marker ions share one map.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.core.features import resolve_ions


@pytest.fixture(scope="module")
def trio_table(tmp_path_factory):
    trio = sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("corr_trio"),
        seed=5,
        tissue_size_um=(2000.0, 1600.0),
        he_pixel_size_um=4.0,
        n_ions=40,
        n_genes=60,
        write_he_serial=False,
    )
    msi = sf.io.read_imzml(trio.msi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visium = sf.io.read_visium(trio.visium)
        spots = sf.tl.map_to_spots(msi, visium, transform=trio.msi_to_visium)
        sf.pp.preprocess_rna(visium, n_top_genes=None, n_comps=10)
        sf.pp.normalize_msi(spots)
    mdata = sf.tl.joint_table(visium, spots)
    return trio, mdata, sf.tl.cross_modal_correlation(mdata, n_top=None)


def _shared_region(trio):
    return next(r for r, d in trio.region_design.items() if d["ion_group"] == d["gene_group"])


def test_marker_genes_and_ions_of_one_region_are_the_strongest_pairs(trio_table):
    trio, mdata, table = trio_table
    region = _shared_region(trio)
    genes = trio.marker_genes[region]
    ions = resolve_ions(mdata.mod["msi"], list(trio.marker_ions[region]))
    assert len(genes) == 3 and len(ions) == 2
    assert len(table) == mdata.mod["rna"].n_vars * mdata.mod["msi"].n_vars
    markers = table["gene"].isin(genes) & table["ion"].isin(ions)
    rows = table[markers]
    assert len(rows) == 6
    # every marker pair is strongly positive and ranks among the 1 % strongest of 2,400 pairs
    assert (rows["r"] > 0.7).all(), rows
    assert rows.index.max() < 0.01 * len(table)
    # significant as single tests; over all 2,400 pairs BH cannot reach 5 % with ~9 effective
    # spots per pair (six regions), so the pre-specified family of the region's pairs is tested
    assert (rows["p_value"] < 0.01).all(), rows
    assert rows["n_eff"].between(4, 40).all()
    family = sf.tl.cross_modal_correlation(mdata, genes=genes, ions=ions)
    assert len(family) == 6
    assert (family["p_adjusted"] < 0.05).all(), family


def test_marker_genes_against_other_regions_ions_are_not_positive(trio_table):
    trio, mdata, table = trio_table
    region = _shared_region(trio)
    genes = trio.marker_genes[region]
    own = set(np.round(trio.marker_ions[region], 4))
    other = sorted({m for mzs in trio.marker_ions.values() for m in mzs if round(m, 4) not in own})
    ions = resolve_ions(mdata.mod["msi"], other)
    rows = table[table["gene"].isin(genes) & table["ion"].isin(ions)]
    assert len(rows) == len(genes) * len(ions)
    assert (rows["r"] < 0.2).all(), rows
