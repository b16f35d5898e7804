"""One small synthetic trio, read and joined once for every plot test (Agg backend)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import matplotlib
import pytest

matplotlib.use("Agg")


@dataclass
class JointData:
    trio: object
    msi: object  # pixels × m/z (read_imzml)
    he: object  # HistologyImage of the MSI section
    mdata: object  # joint table, log-normalised, labels in obs["joint"]
    region: str  # the region whose marker genes and ions share one map
    marker_mz: float


@pytest.fixture(scope="session")
def joint_data(tmp_path_factory) -> JointData:
    import pandas as pd

    import spatialfuse as sf

    trio = sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("pl_trio"),
        seed=5,
        tissue_size_um=(2000.0, 1600.0),
        he_pixel_size_um=4.0,
        n_ions=40,
        n_genes=60,
        write_he_serial=False,
    )
    msi = sf.io.read_imzml(trio.msi)
    # Keep the upper 70 % of the acquisition rows: a raster that does not start at grid row 1, and
    # Visium spots without MSI data.
    y = msi.obs["imzml_y"].to_numpy()
    msi = msi[y >= y.min() + 0.3 * (y.max() - y.min())].copy()
    he = sf.io.read_histology(trio.he)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visium = sf.io.read_visium(trio.visium)
        spots = sf.tl.map_to_spots(msi, visium, transform=trio.msi_to_visium)
        sf.pp.preprocess_rna(visium, n_top_genes=None, n_comps=10)
        sf.pp.normalize_msi(spots)
    mdata = sf.tl.joint_table(visium, spots)
    # The true region at each spot centre stands in for a clustering (labels only where MSI is).
    truth = dict(zip(trio.spot_barcodes, trio.spot_labels, strict=True))
    labels = [
        trio.region_names[truth[b]] if has and truth[b] >= 0 else None
        for b, has in zip(mdata.obs_names, mdata.obs["has_msi"], strict=True)
    ]
    mdata.obs["joint"] = pd.Categorical(labels)
    region = next(r for r, d in trio.region_design.items() if d["ion_group"] == d["gene_group"])
    return JointData(trio, msi, he, mdata, region, float(trio.marker_ions[region][0]))


@pytest.fixture(autouse=True)
def _no_show(monkeypatch):
    """Plots must never call plt.show(); close what a test opened."""
    import matplotlib.pyplot as plt

    def refuse(*args, **kwargs):
        raise AssertionError("plt.show() was called")

    monkeypatch.setattr(plt, "show", refuse)
    yield
    plt.close("all")
