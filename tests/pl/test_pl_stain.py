"""Colours chosen for the stain: pixels of rendered figures against the expected colour maps.

A bright-field stain (H&E, toluidine blue) is drawn in RGB, and in grey under an MSI overlay in
viridis; a fluorescence image on black, each channel in its colour, under an MSI in plasma
(``spatialfuse.pl.stain``). Each test renders the figure with Agg and reads the pixels back at
points whose data value it knows.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib import colormaps

import spatialfuse as sf
from spatialfuse.pl.stain import (
    FLUORESCENCE_COLOURS,
    channel_colours,
    stain_kind,
    stain_picture,
    under_overlay,
)

matplotlib.use("Agg")

#: Rendered colours may differ from the computed ones by rounding to 8 bits (and alpha blending).
TOL = 3 / 255
DPI = 300  # several screen pixels per image pixel: a pixel centre reads its own image pixel


def rendered(fig) -> np.ndarray:
    """The figure as an ``(h, w, 3)`` float RGB array in 0–1 (Agg)."""
    fig.set_dpi(DPI)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba(), dtype=np.float64)[..., :3] / 255.0


def pixel_at(fig, pixels: np.ndarray, ax, x: float, y: float) -> np.ndarray:
    """The rendered colour at data point ``(x, y)`` of ``ax``."""
    dx, dy = ax.transData.transform((x, y))
    return pixels[round(pixels.shape[0] - dy), round(dx)]


def alpha_at(image, x: float, y: float) -> float:
    """The opacity of ``imshow`` artist ``image`` at data point ``(x, y)`` (scalar or per pixel)."""
    alpha = image.get_alpha()
    return float(alpha) if np.ndim(alpha) == 0 else float(image_value(image, x, y, alpha))


def image_value(image, x: float, y: float, data=None):
    """The value ``imshow`` artist ``image`` shows at data point ``(x, y)`` (nearest pixel)."""
    data = image.get_array() if data is None else data
    left, right, bottom, top = image.get_extent()
    col = int((x - left) / (right - left) * data.shape[1])
    row = int((y - top) / (bottom - top) * data.shape[0])
    return data[row, col]


def centres(image):
    """Data coordinates of every pixel centre of an ``imshow`` artist, ``(rows, cols, 2)``."""
    data = image.get_array()
    left, right, bottom, top = image.get_extent()
    rows, cols = data.shape[:2]
    xs = left + (np.arange(cols) + 0.5) * (right - left) / cols
    ys = top + (np.arange(rows) + 0.5) * (bottom - top) / rows
    return np.stack(np.meshgrid(xs, ys), axis=-1)


def uniform_points(
    image, valid: np.ndarray, n: int, rng, *, uniform: bool = True, snap=None
) -> list[tuple[float, float]]:
    """``n`` pixel centres of ``image`` where ``valid`` holds (and the 3 × 3 neighbours agree).

    ``snap``: another ``imshow`` artist whose nearest pixel centre each point moves to (the
    colour under a point is then that pixel's, not a mix at its edge).
    """
    data = np.ma.getdata(image.get_array())
    ok = np.asarray(valid, bool).copy()
    if uniform:
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                equal = np.roll(data, (dr, dc), axis=(0, 1)) == data
                ok &= equal.all(axis=-1) if data.ndim == 3 else equal
    ok[[0, -1], :] = False
    ok[:, [0, -1]] = False
    rows, cols = np.nonzero(ok)
    assert len(rows) >= n
    pick = rng.choice(len(rows), n, replace=False)
    xy = centres(image)
    points = [tuple(xy[rows[i], cols[i]]) for i in pick]
    if snap is not None:
        grid = centres(snap)
        left, right, bottom, top = snap.get_extent()
        shape = snap.get_array().shape
        points = [
            tuple(
                grid[
                    min(int((y - top) / (bottom - top) * shape[0]), shape[0] - 1),
                    min(int((x - left) / (right - left) * shape[1]), shape[1] - 1),
                ]
            )
            for x, y in points
        ]
    return points


def blended(cmap: str, value: float, norm, under: np.ndarray, alpha: float) -> np.ndarray:
    """What Agg draws for ``value`` in ``cmap`` at ``alpha`` over the colour ``under``."""
    return alpha * np.asarray(colormaps[cmap](norm(value))[:3]) + (1 - alpha) * under


def fluorescence_of(he, *, channels: int = 1) -> np.ndarray:
    """A fluorescence picture of the trio's H&E: its optical density, bright on black, uint16."""
    rgb, _ = he.downsampled(max_size=400)
    od = -np.log(np.clip(rgb.astype(np.float64) / 255.0, 1 / 255, 1))
    if channels == 1:
        emission = od.sum(axis=2)
        return np.round(emission / emission.max() * 4000).astype(np.uint16)
    hematoxylin, eosin = od[..., 2], od[..., 1]  # blue and green absorbed most by each stain
    planes = [hematoxylin, eosin][:channels]
    return np.stack([np.round(p / p.max() * 4000).astype(np.uint16) for p in planes])


# -------------------------------------------------------------------------------------------------
# which kind of picture an image is
# -------------------------------------------------------------------------------------------------


def test_the_kind_of_picture_is_found_from_the_background(joint_data):
    rgb, _ = joint_data.he.downsampled(max_size=256)
    assert stain_kind(rgb) == "brightfield"  # synthetic H&E: glass white, tissue pink/purple
    assert stain_kind(fluorescence_of(joint_data.he)) == "fluorescence"
    assert stain_kind(np.moveaxis(fluorescence_of(joint_data.he, channels=2), 0, -1)) == (
        "fluorescence"
    )
    # a grey bright-field image (one channel, glass bright)
    assert stain_kind(rgb.mean(axis=2).astype(np.uint8)) == "brightfield"
    # what registration found decides when given
    assert stain_kind(rgb, background="dark") == "fluorescence"


def test_real_toluidine_blue_and_autofluorescence(shared_data):
    bladder = shared_data / "paired" / "bladder_spamtp" / "mouse_urinary_bladder_HE.tif"
    upec = (
        shared_data
        / "paired"
        / "msiflow_upec12"
        / "msi_if_registration"
        / "moving"
        / "preprocessed"
    )
    if not bladder.exists() or not (upec / "UPEC_12.tif").exists():
        pytest.skip(f"the real pairs are not in {shared_data / 'paired'}")
    import tifffile

    image = sf.io.read_histology(bladder, pixel_size_um=1.0)
    assert stain_kind(image.downsampled(max_size=512)[0]) == "brightfield"
    planes = tifffile.imread(upec / "UPEC_12.tif")  # (3, rows, cols): autofluorescence first
    assert stain_kind(planes[0]) == "fluorescence"
    assert stain_kind(np.moveaxis(planes, 0, -1)) == "fluorescence"


def test_fluorescence_channels_are_added_in_their_colours():
    assert channel_colours(2) == FLUORESCENCE_COLOURS[2]  # green, magenta
    assert len(channel_colours(5)) == 5
    planes = np.zeros((4, 4, 2), np.uint16)
    planes[0, 0, 0] = 1000  # channel 0 only
    planes[1, 1, 1] = 1000  # channel 1 only
    planes[2, 2] = 1000  # both
    picture = stain_picture(planes, "fluorescence")
    np.testing.assert_allclose(picture[0, 0], [0, 1, 0])  # green
    np.testing.assert_allclose(picture[1, 1], [1, 0, 1])  # magenta
    np.testing.assert_allclose(picture[2, 2], [1, 1, 1])  # added: white
    np.testing.assert_allclose(picture[3, 3], [0, 0, 0])  # background: black
    # bright field: RGB as stored; under an overlay its luminance in grey
    rgb = np.array([[[200, 100, 150]]], np.uint8)
    np.testing.assert_allclose(
        stain_picture(rgb, "brightfield")[0, 0], [200 / 255, 100 / 255, 150 / 255]
    )
    grey = under_overlay(rgb, "brightfield")[0, 0]
    assert (
        grey[0]
        == grey[1]
        == grey[2]
        == pytest.approx((0.2126 * 200 + 0.7152 * 100 + 0.0722 * 150) / 255)
    )


# -------------------------------------------------------------------------------------------------
# sf.pl.ion_image over a stain
# -------------------------------------------------------------------------------------------------


def _check_ion_overlay(fig, *, cmap: str, under_is_grey: bool, rng) -> None:
    ax = fig.axes[0]
    background, overlay = ax.images
    assert overlay.get_cmap().name == cmap
    pixels = rendered(fig)
    values = overlay.get_array()
    under = background.get_array()
    # where no MSI pixel is: the picture itself (grey for a stain)
    for x, y in uniform_points(
        background, np.ma.getmaskarray(values) & (under.sum(axis=2) > 0.3), 5, rng, uniform=False
    ):
        colour = pixel_at(fig, pixels, ax, x, y)
        np.testing.assert_allclose(colour, image_value(background, x, y), atol=TOL)
        if under_is_grey:
            assert np.ptp(colour) <= TOL
    # where an MSI pixel is: its value in the colour map, blended over the picture
    alpha = overlay.get_alpha()
    inside = ~np.ma.getmaskarray(values)
    for x, y in uniform_points(overlay, inside, 8, rng):
        expected = blended(
            cmap, image_value(overlay, x, y), overlay.norm, image_value(background, x, y), alpha
        )
        np.testing.assert_allclose(pixel_at(fig, pixels, ax, x, y), expected, atol=TOL)


def test_ion_image_over_a_brightfield_stain_draws_it_grey_under_viridis(joint_data):
    data = joint_data
    fig = sf.pl.ion_image(
        data.msi, data.marker_mz, he=data.he, transform=data.trio.msi_to_he, max_size=200
    )
    background = fig.axes[0].images[0].get_array()
    he_small, _ = data.he.downsampled(max_size=200)
    np.testing.assert_allclose(background, under_overlay(he_small, "brightfield"))
    assert np.all(np.ptp(background, axis=2) == 0)  # grey
    _check_ion_overlay(fig, cmap="viridis", under_is_grey=True, rng=np.random.default_rng(0))


@pytest.mark.parametrize("channels", [1, 2])
def test_ion_image_over_fluorescence_draws_it_on_black_under_plasma(joint_data, tmp_path, channels):
    import tifffile

    data = joint_data
    planes = fluorescence_of(data.he, channels=channels)
    path = tmp_path / "if.ome.tif"
    tifffile.imwrite(path, planes, metadata={"axes": "YX" if channels == 1 else "CYX"}, ome=True)
    _, size = data.he.downsampled(max_size=400)
    image = sf.io.read_histology(path, pixel_size_um=size)
    fig = sf.pl.ion_image(
        data.msi, data.marker_mz, he=image, transform=data.trio.msi_to_he, max_size=200
    )
    ax = fig.axes[0]
    background = ax.images[0].get_array()
    # the glass is black, the tissue bright; two channels in green and magenta
    corner = pixel_at(fig, rendered(fig), ax, 5.0, 5.0)
    assert ax.images[1].get_array().mask[0, 0]  # no MSI pixel at the corner
    np.testing.assert_allclose(corner, [0, 0, 0], atol=TOL)
    if channels == 2:
        green, magenta = FLUORESCENCE_COLOURS[2]
        colours = background.reshape(-1, 3)
        bright = colours[colours.max(axis=1) > 0.5]
        # every colour is a mix of green and magenta: red and blue move together
        np.testing.assert_allclose(bright[:, 0], bright[:, 2], atol=1e-9)
        assert green == (0.0, 1.0, 0.0) and magenta == (1.0, 0.0, 1.0)
    else:
        assert np.all(np.ptp(background, axis=2) == 0)  # one channel: white on black
    _check_ion_overlay(
        fig, cmap="plasma", under_is_grey=channels == 1, rng=np.random.default_rng(1)
    )


def test_ion_image_on_its_own_grid_is_viridis_and_cmap_can_be_chosen(joint_data):
    data = joint_data
    assert sf.pl.ion_image(data.msi, data.marker_mz).axes[0].images[0].get_cmap().name == "viridis"
    fig = sf.pl.ion_image(
        data.msi,
        data.marker_mz,
        he=data.he,
        transform=data.trio.msi_to_he,
        max_size=64,
        cmap="magma",
    )
    assert fig.axes[0].images[1].get_cmap().name == "magma"


# -------------------------------------------------------------------------------------------------
# sf.pl.registration_qc
# -------------------------------------------------------------------------------------------------


def test_registration_qc_draws_the_stain_in_rgb_and_the_msi_over_it_in_viridis(joint_data):
    data = joint_data
    result = sf.reg.assess(data.msi, data.he, data.trio.msi_to_he)
    fig = sf.pl.registration_qc(result)
    overlay_ax, _, outline_ax = fig.axes[:3]
    pixels = rendered(fig)
    rng = np.random.default_rng(2)
    # outlines panel: the stain in the colours it was scanned in (exp(-optical density))
    stain = outline_ax.images[0]
    od = result.fixed_image.extra["optical_density"]
    np.testing.assert_allclose(stain.get_array(), np.exp(-od), atol=1e-6)
    picture = stain.get_array()
    glass = picture.min(axis=2) > 0.9
    tissue = (picture[..., 0] - picture[..., 1] > 0.15) & ~glass  # pink/purple
    for mask in (glass, tissue):
        for x, y in uniform_points(
            stain, mask & ~_near_outline(outline_ax, stain), 4, rng, uniform=False
        ):
            np.testing.assert_allclose(
                pixel_at(fig, pixels, outline_ax, x, y), image_value(stain, x, y), atol=TOL
            )
    assert "fixed black, moving green" in outline_ax.get_title()
    # overlay panel: the stain in grey, the MSI in viridis over it where it was measured
    under, msi = overlay_ax.images
    assert msi.get_cmap().name == "viridis"
    assert np.all(np.ptp(under.get_array(), axis=2) < 1e-12)
    assert "viridis" in overlay_ax.get_title() and "grey" in overlay_ax.get_title()
    outside = np.ma.getmaskarray(msi.get_array())
    assert outside.any() and (~outside).any()
    # opaque on the MSI's tissue, faint where it was measured beyond it (the stain shows there)
    alpha = np.asarray(msi.get_alpha())
    assert set(np.unique(alpha[~outside]).tolist()) == {0.25, 0.6}
    # the picture and the MSI grid differ: sample at points inside both grids' uniform areas
    for x, y in uniform_points(msi, ~outside, 6, rng, snap=under):
        expected = blended(
            "viridis",
            image_value(msi, x, y),
            msi.norm,
            image_value(under, x, y),
            alpha_at(msi, x, y),
        )
        np.testing.assert_allclose(pixel_at(fig, pixels, overlay_ax, x, y), expected, atol=TOL)


def _near_outline(ax, image) -> np.ndarray:
    """Pixels of ``image`` within a few pixels of any contour drawn on ``ax`` (left out)."""
    xy = centres(image).reshape(-1, 2)
    near = np.zeros(len(xy), bool)
    step = abs(image.get_extent()[1] - image.get_extent()[0]) / image.get_array().shape[1]
    from scipy.spatial import cKDTree

    for collection in ax.collections:
        for path in collection.get_paths():
            if len(path.vertices):
                d, _ = cKDTree(path.vertices).query(xy)
                near |= d < 4 * step
    return near.reshape(image.get_array().shape[:2])


def test_registration_qc_draws_fluorescence_on_black_under_plasma(joint_data):
    data = joint_data
    _, size = data.he.downsampled(max_size=400)
    fluorescence = sf.reg.RegistrationImage.from_array(
        fluorescence_of(data.he).astype(np.float32), size, description="autofluorescence"
    )
    assert fluorescence.extra["background"] == "dark"
    result = sf.reg.assess(data.msi, fluorescence, data.trio.msi_to_he)
    fig = sf.pl.registration_qc(result)
    overlay_ax, _, outline_ax = fig.axes[:3]
    pixels = rendered(fig)
    stain = outline_ax.images[0]
    picture = stain.get_array()
    assert np.all(np.ptp(picture, axis=2) < 1e-12)  # one channel: grey levels on black
    dark = picture[..., 0] < 0.02
    assert dark.mean() > 0.2  # the glass
    rng = np.random.default_rng(3)
    for x, y in uniform_points(
        stain, dark & ~_near_outline(outline_ax, stain), 4, rng, uniform=False
    ):
        np.testing.assert_allclose(pixel_at(fig, pixels, outline_ax, x, y), [0, 0, 0], atol=TOL)
    assert "fixed magenta, moving green" in outline_ax.get_title()
    under, msi = overlay_ax.images
    assert msi.get_cmap().name == "plasma"
    assert "fluorescence on black" in overlay_ax.get_title()
    for x, y in uniform_points(msi, ~np.ma.getmaskarray(msi.get_array()), 6, rng, snap=under):
        expected = blended(
            "plasma",
            image_value(msi, x, y),
            msi.norm,
            image_value(under, x, y),
            alpha_at(msi, x, y),
        )
        np.testing.assert_allclose(pixel_at(fig, pixels, overlay_ax, x, y), expected, atol=TOL)


def test_two_optical_images_are_overlaid_in_magenta_and_green(joint_data):
    data = joint_data
    rgb, size = data.he.downsampled(max_size=200)
    same = sf.reg.RegistrationImage.from_array(rgb, size, description="H&E copy")
    result = sf.reg.assess(same, same, sf.reg.AffineTransform(np.eye(3)))
    fig = sf.pl.registration_qc(result)
    assert fig.axes[0].get_title() == "overlay: fixed magenta, moving green"
    drawn = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(drawn[..., 0], drawn[..., 2])  # magenta = red + blue, equal


# -------------------------------------------------------------------------------------------------
# the landmark picker's pictures (no window needed)
# -------------------------------------------------------------------------------------------------


def test_picker_pictures_follow_the_stain(joint_data, tmp_path):
    import tifffile

    from spatialfuse.pl._landmark_picker import _coloured, _display_pictures

    data = joint_data
    he_image = sf.reg.registration_image(data.he, working_pixel_size_um=25.0)
    (picture,) = _display_pictures(data.he, he_image, 256)
    rgb, _ = data.he.downsampled(max_size=256)
    assert picture["rgb"] and picture["kind"] == "brightfield"
    np.testing.assert_allclose(picture["data"], rgb / 255.0, atol=1e-6)  # RGB as scanned
    # two fluorescence channels: green and magenta on black (napari could not show 2 as RGB)
    planes = fluorescence_of(data.he, channels=2)
    tifffile.imwrite(tmp_path / "if.ome.tif", planes, metadata={"axes": "CYX"}, ome=True)
    fluorescence = sf.io.read_histology(tmp_path / "if.ome.tif", pixel_size_um=4.0)
    (picture,) = _display_pictures(fluorescence, he_image, 256)
    assert picture["kind"] == "fluorescence" and picture["data"].shape[2] == 3
    np.testing.assert_allclose(picture["data"][..., 0], picture["data"][..., 2])  # magenta
    assert np.median(picture["data"]) < 0.1  # on black
    # an MSI's channels in viridis
    msi_image = sf.reg.registration_image(data.msi, working_pixel_size_um=None)
    pictures = _display_pictures(data.msi, msi_image, 256)
    assert pictures and {p["colormap"] for p in pictures} == {"viridis"}
    # the overlay in the colour map asked for
    values = np.array([[0.0, 1.0]])
    coloured = _coloured((values, np.ones((1, 2), bool)), (1, 2), "plasma")
    np.testing.assert_allclose(coloured[0, :, :3], colormaps["plasma"]([0.0, 1.0])[:, :3])


def test_registration_qc_with_the_msi_fixed_warps_the_fluorescence_under_it(joint_data):
    data = joint_data
    _, size = data.he.downsampled(max_size=400)
    fluorescence = sf.reg.RegistrationImage.from_array(
        fluorescence_of(data.he).astype(np.float32), size, description="autofluorescence"
    )
    msi = sf.reg.registration_image(data.msi, working_pixel_size_um=None)
    result = sf.reg.assess(fluorescence, msi, data.trio.msi_to_he.inverse())
    fig = sf.pl.registration_qc(result)
    overlay_ax = fig.axes[0]
    under, drawn = overlay_ax.images
    assert drawn.get_cmap().name == "plasma"
    assert "autofluorescence (fluorescence on black)" in overlay_ax.get_title()
    # the fluorescence warped onto the MSI grid: one channel, grey levels, dark where no tissue
    picture = under.get_array()
    assert picture.shape[:2] == msi.shape and np.all(np.ptp(picture, axis=2) < 1e-9)
    assert picture[..., 0].min() < 0.05 < 0.5 < picture[..., 0].max()
    pixels = rendered(fig)
    valid = msi.extra["valid"]
    for x, y in uniform_points(drawn, valid, 6, np.random.default_rng(4), uniform=False):
        expected = blended(
            "plasma",
            image_value(drawn, x, y),
            drawn.norm,
            image_value(under, x, y),
            alpha_at(drawn, x, y),
        )
        np.testing.assert_allclose(pixel_at(fig, pixels, overlay_ax, x, y), expected, atol=TOL)


def test_spot_maps_draw_the_stain_in_grey_under_the_spots(joint_data):
    data = joint_data
    gene = str(data.mdata.mod["rna"].var_names[0])
    ion = str(data.mdata.mod["msi"].var_names[0])
    fig = sf.pl.gene_and_ion(data.mdata, gene, ion)
    for ax in fig.axes[:2]:
        picture = np.asarray(ax.images[0].get_array())
        assert picture.ndim == 3 and np.ptp(picture[..., :3], axis=2).max() < 1e-6
    fig = sf.pl.joint_clusters(data.mdata, key="joint")
    picture = np.asarray(fig.axes[0].images[0].get_array())
    assert np.ptp(picture[..., :3], axis=2).max() < 1e-6
    # the source's own images are left as they were (in colour)
    library = next(iter(data.mdata.uns["spatial"]))
    hires = np.asarray(data.mdata.uns["spatial"][library]["images"]["hires"])
    assert np.ptp(hires[..., :3], axis=2).max() > 0.1


def test_spot_maps_are_ticked_in_micrometres(joint_data):
    data = joint_data
    fig = sf.pl.joint_clusters(data.mdata, key="joint")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (µm, Visium frame)" and ax.get_ylabel() == "y (µm, Visium frame)"
    library = next(iter(data.mdata.uns["spatial"]))
    scale = data.mdata.uns["spatial"][library]["scalefactors"]["tissue_hires_scalef"]
    um = data.mdata.mod["rna"].uns["spatialfuse"]["um_per_px"]
    ticks = ax.get_xticks()
    labels = [float(t.get_text()) for t in ax.get_xticklabels()]
    # each tick sits at its label's µm (hires pixel × µm per full-res pixel / hires scale)
    np.testing.assert_allclose(ticks * um / scale, labels, rtol=1e-9, atol=1e-6)
    steps = set(np.round(np.diff(labels), 6))
    assert len(steps) == 1 and next(iter(steps)) in (100, 200, 500, 1000)
