"""The start search's translation scan (``reg._initialize.ShiftDice``) against known shifts."""

from __future__ import annotations

import numpy as np
import pytest

from spatialfuse.core.transforms import AffineTransform
from spatialfuse.reg import _initialize
from spatialfuse.reg._images import RegistrationImage
from spatialfuse.reg._similarity import alignment_scores

PIXEL_UM = 10.0


def _tissue(shape=(60, 80)) -> np.ndarray:
    """An L-shaped tissue mask (no symmetry that a shift could mimic)."""
    mask = np.zeros(shape, bool)
    mask[10:50, 10:30] = True
    mask[35:50, 30:70] = True
    return mask


def _image(mask: np.ndarray, origin=(0.0, 0.0)) -> RegistrationImage:
    return RegistrationImage(mask.astype(np.float32), mask, (PIXEL_UM, PIXEL_UM), origin)


def test_shift_dice_matches_the_dice_of_each_shifted_start():
    """Every entry of the FFT table equals Dice computed by warping at that shift."""
    moving = _image(_tissue())
    fixed = _image(_tissue()[:, :45])  # a crop: the left part of the tissue
    start = AffineTransform.from_params(translation=(30.0, -20.0))
    scorer = _initialize.ShiftDice(moving, fixed)
    dice, inside = scorer(start)
    pad = scorer.pad
    rng = np.random.default_rng(0)
    for dy, dx in rng.integers(-pad // 2, pad // 2, size=(12, 2)):
        move = AffineTransform.from_params(translation=(dx * PIXEL_UM, dy * PIXEL_UM))
        shifted = AffineTransform(move.matrix @ start.matrix)
        expected = alignment_scores(moving, fixed, shifted)["dice"]
        assert dice[pad + dy, pad + dx] == pytest.approx(expected, abs=1e-6)
    # the crop is narrower than the tissue: at most 45 of its 60 columns fit
    assert inside.min() > -1e-9 and 0.6 < inside.max() < 1.0


def test_best_shift_finds_the_place_of_a_crop():
    """Started with the centroids matched, the crop's true place is the best shift."""
    tissue = _tissue()
    moving = _image(tissue)
    fixed = _image(tissue[:, :45])
    centroid_match = AffineTransform.from_params(translation=(-120.0, 35.0))
    best = _initialize.ShiftDice(moving, fixed).best(centroid_match, 2)
    # the truth is the identity: the shift must undo the start's translation
    np.testing.assert_allclose(best[0], (120.0, -35.0), atol=PIXEL_UM)


def test_best_shifts_keep_tissue_inside_and_apart():
    moving = _image(_tissue())
    fixed = _image(_tissue()[:, :45])
    scorer = _initialize.ShiftDice(moving, fixed)
    shifts = scorer.best(AffineTransform.from_params(translation=(0.0, 0.0)), 3)
    assert len(shifts) == 3
    for a in range(3):
        for b in range(a + 1, 3):
            gap = np.abs(shifts[a] - shifts[b]).max() / PIXEL_UM
            assert gap > _initialize.SHIFT_SEPARATION_PX
    for offset in shifts:
        move = AffineTransform.from_params(translation=tuple(offset))
        scores = alignment_scores(moving, fixed, move)
        assert scores["dice"] > 0.3


def test_whole_tissue_needs_no_shifts_and_a_crop_does():
    moving = _image(_tissue())
    assert not _initialize.needs_shifts(moving, _image(_tissue()), AffineTransform.from_params())
    assert _initialize.needs_shifts(
        moving, _image(_tissue()[:, :45]), AffineTransform.from_params()
    )
