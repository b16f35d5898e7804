"""Where a result puts the moving tissue: inside the fixed image, and across its edges."""

from __future__ import annotations

import numpy as np
import pytest

from spatialfuse.reg import AffineTransform, _overlap, _verdict
from spatialfuse.reg._images import RegistrationImage


def _image(mask: np.ndarray, pixel_um: float = 10.0) -> RegistrationImage:
    return RegistrationImage(mask.astype(np.float32), mask, (pixel_um, pixel_um))


def _block(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


# The moving tissue: a 40 × 40 px block; laid 20 px to the right of the fixed image's origin it
# sticks out of a 40 px wide fixed image by half its width.
MOVING = _image(_block((40, 40), slice(0, 40), slice(0, 40)))
HALF_OUT = AffineTransform.from_params(translation=(200.0, 0.0))


def test_inside_counts_the_share_of_moving_tissue_within_the_fixed_image():
    fixed = _image(_block((40, 40), slice(0, 40), slice(20, 40)))
    assert _overlap.overlap_metrics(MOVING, fixed, HALF_OUT)[
        "moving_tissue_inside"
    ] == pytest.approx(0.5)
    identity = AffineTransform.from_params()
    assert _overlap.overlap_metrics(MOVING, fixed, identity)["moving_tissue_inside"] == 1.0


def test_a_crop_cuts_its_tissue_where_the_moving_tissue_leaves():
    # fixed tissue runs into the right edge (a crop): everything outside leaves through tissue
    crop = _image(_block((40, 40), slice(0, 40), slice(20, 40)))
    assert _overlap.overlap_metrics(MOVING, crop, HALF_OUT)["tissue_cut_at_edge"] == pytest.approx(
        1.0
    )


def test_tissue_laid_over_glass_at_the_edge_is_measured_as_such():
    # fixed tissue ends 10 px before the right edge (glass there): nothing leaves through tissue
    whole = _image(_block((40, 40), slice(0, 40), slice(20, 30)))
    assert _overlap.overlap_metrics(MOVING, whole, HALF_OUT)["tissue_cut_at_edge"] == pytest.approx(
        0.0
    )
    # within the tolerance (3 px) a mask that stops short of the edge still counts as cut
    near = _image(_block((40, 40), slice(0, 40), slice(20, 38)))
    assert _overlap.overlap_metrics(MOVING, near, HALF_OUT)["tissue_cut_at_edge"] == pytest.approx(
        1.0
    )


def test_nothing_outside_gives_nan():
    fixed = _image(_block((60, 60), slice(0, 40), slice(0, 40)))
    assert "tissue_cut_at_edge" not in _overlap.overlap_metrics(
        MOVING, fixed, AffineTransform.from_params()
    )


def test_the_verdict_flags_tissue_over_glass_only_for_a_partial_overlap():
    good = {"moving_tissue_inside": 0.5, "tissue_cut_at_edge": 0.95}
    assert _verdict.tissue_over_glass(good) is None
    glass = {"moving_tissue_inside": 0.28, "tissue_cut_at_edge": 0.34}
    message = _verdict.tissue_over_glass(glass)
    assert "72 % of the moving tissue lands outside" in message
    assert "only 34 %" in message and "bare glass" in message
    # almost all inside: the edge is not judged
    mostly_inside = {"moving_tissue_inside": 0.95, "tissue_cut_at_edge": 0.0}
    assert _verdict.tissue_over_glass(mostly_inside) is None
    # no edge number (older metrics, nothing outside): not judged
    assert _verdict.tissue_over_glass({"moving_tissue_inside": 0.5}) is None


def test_edge_metrics_are_left_out_when_nothing_leaves_the_image():
    fixed = _image(_block((60, 60), slice(0, 40), slice(0, 40)))
    assert _overlap.overlap_metrics(MOVING, fixed, AffineTransform.from_params()) == {
        "moving_tissue_inside": 1.0
    }
    crop = _image(_block((40, 40), slice(0, 40), slice(20, 40)))
    assert _overlap.overlap_metrics(MOVING, crop, HALF_OUT) == {
        "moving_tissue_inside": 0.5,
        "tissue_cut_at_edge": 1.0,
    }
