"""``msi_image`` reads the MSI frame through ``core.msi_raster.MsiRaster``: a bad table is refused.

Each broken table gives spatialfuse's own error (a ``ValueError`` subclass) naming what is wrong;
a good one keeps its grid, pixel size and origin.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from spatialfuse.errors import CalibrationError, FileFormatError
from spatialfuse.reg import register
from spatialfuse.reg._images import msi_image


def _table(n_rows: int = 16, n_cols: int = 20, origin=(3, 5), pixel=(20.0, 25.0)):
    """A small MSI AnnData in ``read_imzml``'s layout: a disc of tissue on a shifted grid."""
    rng = np.random.default_rng(0)
    yy, xx = np.divmod(np.arange(n_rows * n_cols), n_cols)
    tissue = np.hypot((yy - n_rows / 2) / (0.4 * n_rows), (xx - n_cols / 2) / (0.4 * n_cols)) < 1
    x = rng.lognormal(0.0, 0.3, (xx.size, 30)) * np.where(tissue, 1.0, 0.1)[:, None]
    x[:, :15] *= np.where(xx > n_cols / 2, 2.0, 1.0)[:, None]
    gx, gy = xx + origin[0], yy + origin[1]
    obs = pd.DataFrame({"imzml_x": gx, "imzml_y": gy}, index=[str(i) for i in range(xx.size)])
    adata = ad.AnnData(sparse.csr_matrix(x.astype(np.float32)), obs=obs)
    adata.var["mz"] = np.linspace(100.0, 1000.0, 30)
    adata.uns["spatialfuse"] = {"pixel_size_um": list(pixel), "modality": "msi"}
    adata.obsm["spatial"] = np.stack([(gx - 0.5) * pixel[0], (gy - 0.5) * pixel[1]], axis=1)
    return adata


def test_a_good_table_keeps_its_grid():
    image = msi_image(_table())
    assert image.pixel_size_um == (20.0, 25.0)
    assert image.shape == (16, 20)
    assert image.origin_um == (2 * 20.0, 4 * 25.0)  # grid starts at (3, 5): corner (x − 1)·px
    assert image.mask.any() and image.extra["valid"].all()


def _without_pixel_size(a):
    del a.uns["spatialfuse"]["pixel_size_um"]


def _negative_pixel_size(a):
    a.uns["spatialfuse"]["pixel_size_um"] = [-20.0, 25.0]


def _text_pixel_size(a):
    a.uns["spatialfuse"]["pixel_size_um"] = "twenty"


def _without_grid(a):
    del a.obs["imzml_y"]


def _fractional_grid(a):
    a.obs["imzml_x"] = a.obs["imzml_x"] + 0.5


def _shared_grid_position(a):
    a.obs.iloc[1, a.obs.columns.get_loc("imzml_x")] = a.obs["imzml_x"].iloc[0]
    a.obs.iloc[1, a.obs.columns.get_loc("imzml_y")] = a.obs["imzml_y"].iloc[0]
    del a.obsm["spatial"]


def _moved_spatial(a):
    a.obsm["spatial"] = a.obsm["spatial"] + 7.0


def _several_sections(a):
    a.obs["imzml_z"] = np.arange(a.n_obs) % 2 + 1


@pytest.mark.parametrize(
    ("damage", "error", "words"),
    [
        (_without_pixel_size, CalibrationError, "pixel_size_um'] is missing"),
        (_negative_pixel_size, CalibrationError, "pixel_size_um must be positive"),
        (_text_pixel_size, CalibrationError, "one number or [px, py]"),
        (_without_grid, FileFormatError, "obs ['imzml_y'] missing"),
        (_fractional_grid, FileFormatError, "must be integer grid positions"),
        (_shared_grid_position, FileFormatError, "share the grid position (3, 5)"),
        (_moved_spatial, FileFormatError, "obsm['spatial'] is not the MSI pixel centres"),
        (_several_sections, FileFormatError, "3-D MSI data"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_a_bad_table_is_refused_with_what_is_wrong(damage, error, words):
    adata = _table()
    damage(adata)
    with pytest.raises(error) as caught:
        msi_image(adata)
    assert words in str(caught.value)
    assert isinstance(caught.value, ValueError)  # ``except ValueError`` keeps working


def test_an_empty_table_is_refused():
    with pytest.raises(FileFormatError, match="no spectra"):
        msi_image(_table()[:0].copy())


def test_register_refuses_a_bad_msi_table_before_registering():
    moving, fixed = _table(), _table()
    del moving.uns["spatialfuse"]["pixel_size_um"]
    with pytest.raises(CalibrationError, match="no MSI pixel size"):
        register(moving, fixed)
