"""Registration's grids stay bounded as the MSI's pixels shrink, and the result stays right.

Known answers: issue 17's synthetic trio (seed 1, 3 × 2.4 mm tissue, H&E at 2 µm; the H&E does not
depend on the MSI's pixel size) has a faintly stained region, a quarter of its tissue. Its tissue
mask must not depend on the working pixel: found on the working grid itself it lost that region
at working pixels of 4.5 µm and finer (3.98 mm² instead of 5.2), and the start search then
matched the wrong centroid and scale. With the working grid capped, a registration still
recovers the known transform.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.reg import _initialize, _register
from spatialfuse.reg._images import MASK_MAX_SIDE_PX, as_registration_image

#: Seconds each (a trio is generated): left out of the quick subset.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scale_trio(tmp_path_factory):
    """Issue 17's trio geometry with a coarse MSI (25 µm: 11,000 pixels)."""
    return sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("scale_trio"),
        seed=1,
        msi_pixel_size_um=25.0,
        tissue_size_um=(3000.0, 2400.0),
        he_pixel_size_um=2.0,
        n_ions=60,
        serial_section=False,
        write_he_serial=False,
    )


def test_optical_tissue_mask_does_not_depend_on_the_working_pixel(scale_trio):
    he = sf.io.read_histology(scale_trio.he)
    fine = as_registration_image(he, working_pixel_size_um=3.41)
    coarse = as_registration_image(he, working_pixel_size_um=7.62)
    assert max(fine.shape) > MASK_MAX_SIDE_PX >= max(coarse.shape)
    (c_fine, a_fine), (c_coarse, a_coarse) = map(_initialize.mask_moments, (fine, coarse))
    # the pale region is tissue at both (5.2 mm²), the centroids agree within 2 coarse pixels
    assert a_fine == pytest.approx(a_coarse, rel=0.03)
    assert a_fine > 5.0e6
    assert np.linalg.norm(c_fine - c_coarse) < 15.0


def test_working_grid_is_bounded_and_the_result_right(scale_trio, monkeypatch):
    """With a cap of 142 pixels a side the working pixel is the MSI's (not half of it), as at 2M."""
    msi = sf.io.read_imzml(scale_trio.msi)
    he = sf.io.read_histology(scale_trio.he)
    monkeypatch.setattr(_register, "WORKING_MAX_SIDE_PX", 142)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = sf.reg.register(msi, he)
    work = result.metrics["working_pixel_size_um"]
    assert work == pytest.approx(max(he.extent_um) / 142)
    assert work > 0.9 * 25.0
    assert max(result.fixed_image.shape) <= 143
    points = np.asarray(msi.obsm["spatial"], dtype=np.float64)
    error = np.linalg.norm(
        result.transform.apply(points) - scale_trio.msi_to_he.apply(points), axis=1
    )
    assert result.ok
    assert np.median(error) < 0.5 * 25.0
