"""sf.pl.ion_image: the drawn arrays are the ion image, on its grid and on the H&E, in µm."""

from __future__ import annotations

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.pl.stain import under_overlay


def _expected_grid(msi, name):
    """The ion image written out spectrum by spectrum: row y − y_min, column x − x_min."""
    x = msi.obs["imzml_x"].to_numpy()
    y = msi.obs["imzml_y"].to_numpy()
    column = msi.var_names.get_loc(name)
    values = msi.X[:, column]
    values = values.toarray().ravel() if hasattr(values, "toarray") else np.ravel(values)
    image = np.full((y.max() - y.min() + 1, x.max() - x.min() + 1), np.nan)
    for xi, yi, v in zip(x, y, values, strict=True):
        image[yi - y.min(), xi - x.min()] = v
    return image


def _marker_name(data):
    mz = data.msi.var["mz"].to_numpy()
    return data.msi.var_names[int(np.argmin(np.abs(mz - data.marker_mz)))]


def _group_labels(trio, region):
    group = trio.region_design[region]["ion_group"]
    return [
        i for i, r in enumerate(trio.region_names) if trio.region_design[r]["ion_group"] == group
    ]


def test_own_grid_draws_every_spectrum_in_msi_micrometres(joint_data):
    data = joint_data
    name = _marker_name(data)
    fig = sf.pl.ion_image(data.msi, data.marker_mz)
    ax = fig.axes[0]
    (shown,) = ax.images
    expected = _expected_grid(data.msi, name)
    drawn = shown.get_array()
    assert drawn.shape == expected.shape
    assert np.array_equal(np.ma.getmaskarray(drawn), np.isnan(expected))
    assert np.array_equal(drawn.filled(np.nan), expected, equal_nan=True)
    px, py = data.trio.msi_pixel_size_um
    x0 = (data.msi.obs["imzml_x"].min() - 1) * px
    y0 = (data.msi.obs["imzml_y"].min() - 1) * py
    rows, cols = expected.shape
    assert shown.get_extent() == pytest.approx([x0, x0 + cols * px, y0 + rows * py, y0])
    assert "µm" in ax.get_xlabel() and "MSI" in ax.get_xlabel()
    assert name in ax.get_title()
    # real content: the marker ion is high on its regions (ground truth at pixel centres)
    x, y = data.msi.obs["imzml_x"], data.msi.obs["imzml_y"]
    labels = data.trio.msi_label_image()[y.min() - 1 : y.max(), x.min() - 1 : x.max()]
    assert y.min() > 1  # the raster does not start at the first row (conftest crops it)
    mine = np.isin(labels, _group_labels(data.trio, data.region))
    other = (labels >= 0) & ~mine
    assert np.nanmean(expected[mine]) > 3 * np.nanmean(expected[other])


def test_over_the_he_the_ion_image_is_resampled_through_the_transform(joint_data):
    data = joint_data
    trio, he = data.trio, data.he
    name = _marker_name(data)
    fig = sf.pl.ion_image(data.msi, name, he=he, transform=trio.msi_to_he, max_size=256)
    ax = fig.axes[0]
    background, overlay = ax.images
    he_small, he_pixel = he.downsampled(max_size=256)
    # a bright-field H&E is drawn in grey (its luminance) under the ion image's colours
    assert np.array_equal(background.get_array(), under_overlay(he_small, "brightfield"))
    # The drawn pixels cover the H&E, the last ones reaching less than a pixel past it.
    width, height = he_small.shape[1] * he_pixel[0], he_small.shape[0] * he_pixel[1]
    assert he.extent_um[0] <= width < he.extent_um[0] + he_pixel[0]
    assert he.extent_um[1] <= height < he.extent_um[1] + he_pixel[1]
    assert background.get_extent() == pytest.approx([0, width, height, 0])
    assert overlay.get_extent() == pytest.approx([0, width, height, 0])
    assert "H&E" in ax.get_xlabel()

    # Independent nearest-pixel look-up: H&E pixel centre → MSI µm → grid position → spectrum.
    rows, cols = he_small.shape[:2]
    yy, xx = np.mgrid[0:rows, 0:cols]
    centres = np.stack([(xx.ravel() + 0.5) * he_pixel[0], (yy.ravel() + 0.5) * he_pixel[1]], 1)
    msi_um = trio.msi_to_he.inverse().apply(centres)
    px, py = trio.msi_pixel_size_um
    gx = np.floor(msi_um[:, 0] / px).astype(int) + 1
    gy = np.floor(msi_um[:, 1] / py).astype(int) + 1
    grid = _expected_grid(data.msi, name)
    x_min, y_min = data.msi.obs["imzml_x"].min(), data.msi.obs["imzml_y"].min()
    r, c = gy - y_min, gx - x_min
    inside = (r >= 0) & (r < grid.shape[0]) & (c >= 0) & (c < grid.shape[1])
    expected = np.full(len(centres), np.nan)
    expected[inside] = grid[r[inside], c[inside]]
    drawn = overlay.get_array().filled(np.nan).ravel()
    same = (drawn == expected) | (np.isnan(drawn) & np.isnan(expected))
    # Every H&E pixel shows its own MSI pixel, border pixels whole (34,680 pixels; before the
    # ion image was padded, sf.reg.resample blanked the outer half of the border pixels: 2.8 %).
    assert same.mean() > 0.9999  # a centre exactly on a pixel edge may round either way

    # real content in the H&E frame: high where the ground truth says the marker's regions are
    truth = trio.label_at(centres)
    mine = np.isin(truth, _group_labels(trio, data.region))
    other = (truth >= 0) & ~mine
    assert np.nanmean(drawn[mine]) > 3 * np.nanmean(drawn[other])


def test_draws_on_a_given_axes_and_saves(joint_data, tmp_path):
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2)
    out = sf.pl.ion_image(joint_data.msi, joint_data.marker_mz, ax=right, save=tmp_path / "i.png")
    assert out is fig and len(right.images) == 1 and not left.images
    assert (tmp_path / "i.png").read_bytes().startswith(b"\x89PNG")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_bad_input_says_what_is_wrong(joint_data):
    data = joint_data
    with pytest.raises(ValueError, match=r"no ion m/z 123\.0000"):
        sf.pl.ion_image(data.msi, 123.0)
    with pytest.raises(ValueError, match=r"no ion 'mz-1\.0'"):
        sf.pl.ion_image(data.msi, "mz-1.0")
    with pytest.raises(ValueError, match="needs transform="):
        sf.pl.ion_image(data.msi, data.marker_mz, he=data.he)
    with pytest.raises(ValueError, match="needs he="):
        sf.pl.ion_image(data.msi, data.marker_mz, transform=data.trio.msi_to_he)
    with pytest.raises(TypeError, match="HistologyImage"):
        sf.pl.ion_image(
            data.msi, data.marker_mz, he=np.zeros((4, 4)), transform=data.trio.msi_to_he
        )
    with pytest.raises(TypeError, match="Transform"):
        sf.pl.ion_image(data.msi, data.marker_mz, he=data.he, transform=np.eye(3))
    bare = data.msi.copy()
    del bare.uns["spatialfuse"]
    with pytest.raises(ValueError, match="pixel size"):
        sf.pl.ion_image(bare, data.marker_mz)
