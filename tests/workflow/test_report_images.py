"""Report figures of Visium folders with fewer images than Space Ranger writes."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.workflow._report_content import _spot_values

matplotlib.use("Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))


@pytest.mark.parametrize("keep", ["lowres", "none", "both"])
def test_spot_figure_with_only_lowres_or_no_image(tmp_path, keep):
    import matplotlib.pyplot as plt
    from test_visium import make_visium

    make_visium(tmp_path / "outs")
    spatial = tmp_path / "outs" / "spatial"
    if keep in ("lowres", "none"):
        (spatial / "tissue_hires_image.png").unlink()
    if keep == "none":
        (spatial / "tissue_lowres_image.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = sf.io.read_visium(tmp_path / "outs")
    adata.obs["msi_coverage"] = np.linspace(0, 1, adata.n_obs)
    fig, ax = plt.subplots()
    _spot_values(adata, "msi_coverage", "coverage", ax)  # raised KeyError 'hires' before
    assert len(ax.collections) >= 1
    assert len(ax.images) == (0 if keep == "none" else 1)
    plt.close(fig)
