"""The footprint stage of registration against the synthetic trio's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.reg import AffineTransform, _footprint
from spatialfuse.reg._images import histology_image, msi_image

PIXEL_UM = 80.0


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    def get(warp_um):
        folder = tmp_path_factory.mktemp(f"footprint{warp_um:g}")
        trio = sf.datasets.synthetic_trio(
            folder,
            seed=21,
            msi_pixel_size_um=PIXEL_UM,
            warp_um=warp_um,
            he_pixel_size_um=4.0,
            write_he_serial=False,
        )
        msi = sf.io.read_imzml(trio.msi)
        he = sf.io.read_histology(trio.he)
        moving = msi_image(msi)
        fixed = histology_image(he, working_pixel_size_um=PIXEL_UM / 2)
        affine = AffineTransform.from_params(**trio.params["msi_affine"])
        return trio, np.asarray(msi.obsm["spatial"], dtype=np.float64), moving, fixed, affine

    return get


def _tre_px(transform, truth, points) -> float:
    errors = np.linalg.norm(transform.apply(points) - truth.apply(points), axis=1)
    return float(np.median(errors)) / PIXEL_UM


def test_affine_fit_returns_to_the_truth_from_a_pixel_away(pair):
    _trio, points, moving, fixed, truth = pair(0.0)
    assert _footprint.available(moving, fixed)
    # Off by 0.6 px of shift and 1.5 % of scale: about one pixel at the tissue's edge.
    off = sf.reg.compose(
        truth,
        AffineTransform.from_params(
            scale=(1.015, 0.99), translation=(0.6 * PIXEL_UM, -0.3 * PIXEL_UM)
        ),
    )
    start = AffineTransform(off.matrix, model="affine")
    assert _tre_px(start, truth, points) > 0.6
    found, info = _footprint.refine_affine(moving, fixed, start)
    assert info["cost_final"] < info["cost_start"]
    assert _tre_px(found, truth, points) < 0.3


def test_affine_fit_does_not_shrink_the_tissue(tmp_path):
    """Colour mixes linearly with the tissue under a pixel; a model of it from log-scale spectra
    alone fitted every trio 0.6 % too small on average (-0.0064 here), 7 linear-scale components
    plus 3 log-scale ones leave -0.0019."""
    scales = []
    for seed in (21, 22, 23, 24):
        trio = sf.datasets.synthetic_trio(
            tmp_path / str(seed),
            seed=seed,
            msi_pixel_size_um=PIXEL_UM,
            he_pixel_size_um=4.0,
            write_he_serial=False,
        )
        moving = msi_image(sf.io.read_imzml(trio.msi))
        fixed = histology_image(sf.io.read_histology(trio.he), working_pixel_size_um=PIXEL_UM / 2)
        truth = AffineTransform.from_params(**trio.params["msi_affine"])
        found, _ = _footprint.refine_affine(moving, fixed, truth)
        relative = np.linalg.inv(truth.matrix[:2, :2]) @ found.matrix[:2, :2]
        scales += [relative[0, 0] - 1.0, relative[1, 1] - 1.0]
    assert abs(np.mean(scales)) < 0.004


def test_nonrigid_follows_a_warp_and_is_refused_without_one(pair):
    trio, points, moving, fixed, affine = pair(PIXEL_UM)
    warped, field, info = _footprint.refine_nonrigid(moving, fixed, affine)
    assert info["kept"] and field is not None
    assert info["heldout_cost_nonrigid"] < info["heldout_cost_affine"]
    # The truth's affine misses the warp (up to one pixel); the field takes part of it back.
    assert _tre_px(warped, trio.msi_to_he, points) < 0.8 * _tre_px(affine, trio.msi_to_he, points)

    trio, points, moving, fixed, affine = pair(0.0)
    same, field, info = _footprint.refine_nonrigid(moving, fixed, affine)
    if info["kept"]:  # a field that passed the held-out check must not move far from the truth
        assert _tre_px(same, trio.msi_to_he, points) < 0.25
    else:
        assert same is affine and field is None


def test_affine_fit_may_move_the_tissue_edge_more_than_three_pixels(pair):
    """A start one pixel off in the median with 6 % of scale error moves the edge > 3 px."""
    _trio, points, moving, fixed, truth = pair(0.0)
    off = sf.reg.compose(
        truth, AffineTransform.from_params(scale=(1.06, 1.0), translation=(0.7 * PIXEL_UM, 0.0))
    )
    start = AffineTransform(off.matrix, model="affine")
    edge = np.linalg.norm(start.apply(points) - truth.apply(points), axis=1).max() / PIXEL_UM
    assert edge > 3.0 and _tre_px(start, truth, points) < 2.0
    found, info = _footprint.refine_affine(moving, fixed, start)
    assert _tre_px(found, truth, points) < 0.3
    assert info["cost_final"] < info["cost_start"]


def test_affine_fit_refuses_to_wander_and_reports_the_start_cost(pair, monkeypatch):
    _trio, _points, moving, fixed, truth = pair(0.0)
    start = AffineTransform(
        sf.reg.compose(truth, AffineTransform.from_params(translation=(PIXEL_UM, 0.0))).matrix,
        model="affine",
    )
    monkeypatch.setattr(_footprint, "MAX_MOVE_PX", 0.1)  # the one-pixel way back is too far now
    found, info = _footprint.refine_affine(moving, fixed, start)
    assert found is start
    assert info["cost_final"] == info["cost_start"]


def test_affine_jacobian_matches_finite_differences(pair):
    """The analytic Jacobian of the affine footprint fit agrees with central differences."""
    from scipy.optimize._numdiff import approx_derivative

    _trio, _points, moving, fixed, affine = pair(0.0)
    problem = _footprint._Problem(moving, fixed, _footprint._affine_subset(moving, fixed, [affine]))
    base = affine.apply(problem.points)
    rel = (problem.points - problem.centre) / problem.radius
    residual, jacobian = _footprint.affine_least_squares(problem, base, rel)
    theta = np.array([0.3, -0.2, 0.1, 0.4, 2.0, -3.0]) * problem.pixel / 10
    analytic = jacobian(theta)
    numeric = approx_derivative(residual, theta, method="3-point", rel_step=1e-3)
    # the slopes are those of the bilinear interpolant itself: only kinks at pixel edges differ
    relative = np.linalg.norm(analytic - numeric, axis=0) / np.linalg.norm(numeric, axis=0)
    assert relative.max() < 0.03  # central-difference image gradients: 0.23-0.28
    # and the sampler's values are those of map_coordinates (the residual's)
    mapped = base + rel @ theta[:4].reshape(2, 2).T + theta[4:6]
    values, _, _ = problem.colours_and_slopes(mapped)
    averaged = values.reshape(problem.n, _footprint.SUB**2, -1).mean(axis=1)
    np.testing.assert_allclose(averaged, problem.colours(mapped), atol=1e-9)
