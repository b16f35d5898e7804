"""Tissue masks of optical images whatever the background (``reg/_tissue.py``), known answers."""

from __future__ import annotations

import numpy as np
import pytest

from spatialfuse.reg import RegistrationImage
from spatialfuse.reg._tissue import tissue_mask


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _blob(shape=(160, 200), centre=(80, 90), radii=(50, 70)):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1


def _textured(rng, shape, colour, spread):
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(rng.normal(size=(*shape, 1)), (1, 1, 0))
    return np.clip(np.asarray(colour) + spread * noise / noise.std(), 0, 1)


@pytest.mark.parametrize(
    ("glass", "stain"),
    [
        ((0.95, 0.95, 0.95), (0.55, 0.35, 0.6)),  # white glass, H&E-like
        ((0.78, 0.84, 0.88), (0.35, 0.38, 0.7)),  # blue-grey glass, toluidine blue
        ((0.93, 0.80, 0.86), (0.70, 0.40, 0.65)),  # pink haze of eosin, pale tissue
    ],
)
def test_bright_field_tissue_on_coloured_glass(glass, stain):
    rng = np.random.default_rng(0)
    truth = _blob()
    image = np.where(
        truth[..., None],
        _textured(rng, truth.shape, stain, 0.12),
        _textured(rng, truth.shape, glass, 0.005),
    )
    mask, info = tissue_mask(image)
    assert info["background"] == "bright"
    assert _dice(mask, truth) > 0.97


def test_tissue_touching_three_borders_is_still_tissue():
    rng = np.random.default_rng(1)
    truth = np.zeros((120, 160), bool)
    truth[30:, :130] = True  # touches the left and bottom borders
    image = np.where(
        truth[..., None],
        _textured(rng, truth.shape, (0.4, 0.4, 0.7), 0.1),
        _textured(rng, truth.shape, (0.8, 0.85, 0.85), 0.005),
    )
    mask, _ = tissue_mask(image)
    assert _dice(mask, truth) > 0.97


def test_white_padding_and_dust_are_not_tissue():
    rng = np.random.default_rng(2)
    truth = _blob()
    image = np.where(
        truth[..., None],
        _textured(rng, truth.shape, (0.4, 0.4, 0.7), 0.1),
        _textured(rng, truth.shape, (0.8, 0.85, 0.85), 0.005),
    )
    image[:20, :40] = 1.0  # composited transparency / scanner padding: brighter than glass
    image[140:142, 180:182] = 0.1  # a speck of dust
    mask, _ = tissue_mask(image)
    assert not mask[:20, :40].any()
    assert not mask[140:142, 180:182].any()
    assert _dice(mask, truth) > 0.97


def test_fluorescence_dark_background():
    rng = np.random.default_rng(3)
    truth = _blob()
    image = np.where(truth, _textured(rng, truth.shape, (0.6,), 0.15)[..., 0], 0.05)
    image = image + rng.normal(0, 0.003, image.shape)
    mask, info = tissue_mask(image)
    assert info["background"] == "dark"
    assert _dice(mask, truth) > 0.97


def test_tissue_filling_the_field_has_no_background():
    rng = np.random.default_rng(4)
    image = _textured(rng, (100, 120), (0.5,), 0.2)[..., 0]
    mask, info = tissue_mask(image)
    assert info["background"] == "none"
    assert mask.all()


def test_invalid_pixels_are_never_tissue():
    rng = np.random.default_rng(5)
    truth = _blob()
    image = np.where(
        truth[..., None],
        _textured(rng, truth.shape, (0.4, 0.4, 0.7), 0.1),
        _textured(rng, truth.shape, (0.9, 0.9, 0.9), 0.005),
    )
    valid = np.ones(truth.shape, bool)
    valid[:, 100:] = False
    mask, _ = tissue_mask(image, valid)
    assert not mask[:, 100:].any()
    assert _dice(mask, truth & valid) > 0.97


def test_registration_image_from_array():
    truth = _blob().astype(np.float32)
    img = RegistrationImage.from_array(truth, 10.0, modality="msi", description="footprint")
    assert img.pixel_size_um == (10.0, 10.0)
    assert img.modality == "msi"
    assert (img.mask == truth.astype(bool)).mean() > 0.99
    centres = img.centres_um()
    assert centres[0].tolist() == [5.0, 5.0]  # pixel centres, (x, y)
    with pytest.raises(ValueError, match="pixel_size_um"):
        RegistrationImage.from_array(truth, 0.0)
    with pytest.raises(ValueError, match="rows, cols"):
        RegistrationImage.from_array(np.zeros((2, 2, 2, 2)), 1.0)


def _slide(rng, truth, stain=(0.55, 0.35, 0.6), glass=(0.92, 0.9, 0.93)):
    return np.where(
        truth[..., None],
        _textured(rng, truth.shape, stain, 0.12),
        _textured(rng, truth.shape, glass, 0.005),
    )


def test_uneven_illumination_is_not_tissue():
    # vignetting: the glass darkens by a third towards one corner, as on a badly flat-fielded scan
    rng = np.random.default_rng(6)
    truth = _blob()
    rows, cols = np.mgrid[: truth.shape[0], : truth.shape[1]]
    shading = 1.0 - 0.33 * ((rows / truth.shape[0]) ** 2 + (cols / truth.shape[1]) ** 2) / 2
    image = _slide(rng, truth) * shading[..., None]
    mask, info = tissue_mask(image)
    assert info["background"] == "bright"
    assert _dice(mask, truth) > 0.95


def test_a_fold_is_tissue():
    # a fold: two layers of tissue, twice the absorbance, inside the section
    rng = np.random.default_rng(7)
    truth = _blob()
    image = _slide(rng, truth)
    fold = truth & (np.abs(np.arange(truth.shape[1])[None, :] - 90) < 6)
    image[fold] = image[fold] ** 2
    mask, _ = tissue_mask(image)
    assert mask[fold].mean() > 0.99
    assert _dice(mask, truth) > 0.97


def test_pen_marks_on_the_glass_are_not_tissue():
    # a marker line (dark green) and a dot (black) drawn on the glass beside the section
    rng = np.random.default_rng(8)
    truth = _blob(shape=(200, 260), centre=(100, 110), radii=(60, 80))
    image = _slide(rng, truth)
    rows, cols = np.mgrid[: truth.shape[0], : truth.shape[1]]
    line = (np.abs(cols - 235 - 0.1 * rows) < 4) & ~truth
    dot = ((rows - 20) ** 2 + (cols - 20) ** 2 < 8**2) & ~truth
    image[line] = (0.15, 0.45, 0.25)
    image[dot] = (0.08, 0.08, 0.1)
    mask, _ = tissue_mask(image)
    assert mask[line].mean() < 0.05
    assert mask[dot].mean() < 0.05
    assert _dice(mask, truth) > 0.97


def test_sixteen_bit_fluorescence():
    rng = np.random.default_rng(9)
    truth = _blob()
    signal = _textured(rng, truth.shape, (0.6,), 0.15)[..., 0]
    image = (np.where(truth, signal, 0.04) * 65535 / 4 + rng.normal(0, 40, truth.shape)).clip(
        0, 65535
    )
    mask, info = tissue_mask(image.astype(np.uint16))
    assert info["background"] == "dark"
    assert _dice(mask, truth) > 0.97
