"""sf.reg.register on image pairs with a known transform: recovered within stated tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from spatialfuse.reg import RegistrationImage, RegistrationWarning, register

from .conftest import MOVING_PIXEL_UM, make_pair


def _tre_px(result, moving, truth) -> float:
    points = moving.centres_um(mask_only=True)
    errors = np.linalg.norm(result.transform.apply(points) - truth.apply(points), axis=1)
    return float(np.median(errors)) / MOVING_PIXEL_UM


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_affine_recovers_any_rotation_and_mirror(seed):
    moving, fixed, truth = make_pair(seed)
    result = register(moving, fixed, model="affine", seed=0)
    assert result.ok, result.failures
    assert _tre_px(result, moving, truth) < 0.2  # stated target: median TRE ≤ 0.2 MSI pixel
    assert result.transform.is_mirror == truth.is_mirror
    assert result.metrics["nmi_final"] > result.metrics["nmi_initial"]


def test_landmark_metrics_and_determinism():
    moving, fixed, truth = make_pair(5)
    points = moving.centres_um(mask_only=True)[::50]
    first = register(moving, fixed, landmarks=(points, truth.apply(points)), seed=3)
    again = register(moving, fixed, landmarks=(points, truth.apply(points)), seed=3)
    np.testing.assert_array_equal(first.transform.matrix, again.transform.matrix)
    assert first.metrics["tre_um_median"] < 0.2 * MOVING_PIXEL_UM
    assert first.metrics["n_landmarks"] == len(points)


def test_bspline_follows_a_smooth_warp():
    from scipy.ndimage import gaussian_filter

    from spatialfuse.reg import DisplacementField

    rng = np.random.default_rng(7)
    field = gaussian_filter(rng.normal(size=(10, 10, 2)), (2, 2, 0))
    field *= MOVING_PIXEL_UM / np.abs(field).max()  # up to one MSI pixel
    warp = DisplacementField(field, origin_um=(-500, -500), spacing_um=(500, 500))
    moving, fixed, truth = make_pair(4, warp=warp)
    affine = register(moving, fixed, model="affine")
    nonrigid = register(moving, fixed, model="bspline", initial=affine.transform)
    assert nonrigid.ok, nonrigid.failures
    assert nonrigid.metrics["min_jacobian"] > 0
    assert _tre_px(nonrigid, moving, truth) < 0.3  # stated target with a one-pixel warp
    assert _tre_px(nonrigid, moving, truth) <= _tre_px(affine, moving, truth) + 0.02


def test_failure_is_flagged_not_silent():
    _, fixed, _ = make_pair(0)
    rng = np.random.default_rng(0)
    noise = rng.random((60, 60)).astype(np.float32)
    moving = RegistrationImage(noise, noise > 0.5, (MOVING_PIXEL_UM, MOVING_PIXEL_UM))
    with pytest.warns(RegistrationWarning, match="failed its checks"):
        result = register(moving, fixed)
    assert not result.ok and result.failures
    assert "FAILED" in repr(result)


def test_image_without_tissue_is_a_failed_result_with_a_reason():
    moving, fixed, _ = make_pair(0)
    blank = RegistrationImage(
        np.full((60, 60), 0.2, np.float32), np.zeros((60, 60), bool), (20.0, 20.0)
    )
    with pytest.warns(RegistrationWarning, match="uniform: no tissue"):
        result = register(moving, blank)
    assert not result.ok and "fixed image" in result.failures[0]
    speckle = np.zeros((60, 60), np.float32)
    speckle[5, 5] = 1.0
    mask = speckle > 0
    with pytest.warns(RegistrationWarning, match="no tissue found in the moving image"):
        result = register(RegistrationImage(speckle, mask, (50.0, 50.0)), fixed)
    assert not result.ok


def test_simpleitk_errors_become_a_failed_result(monkeypatch):
    from spatialfuse.reg import _register

    def broken(*args, **kwargs):
        raise RuntimeError("ITK ERROR: Zero-valued spacing is not supported")

    monkeypatch.setattr(_register, "refine_linear", broken)
    moving, fixed, _ = make_pair(0)
    with pytest.warns(RegistrationWarning, match="could not optimise any start"):
        result = register(moving, fixed)
    assert not result.ok
    assert "Zero-valued spacing" in result.failures[0]


def test_finish_keeps_its_start_when_refinement_scores_worse(monkeypatch):
    """Full-resolution MI can drift to a far optimum; a worse-scoring refinement is not kept."""
    from spatialfuse.reg import AffineTransform, _register, compose

    moving, fixed, truth = make_pair(2)
    shift = AffineTransform.from_params(translation=(6 * MOVING_PIXEL_UM, 0.0))

    def drifting(mov, fix, start, model, seed, **kwargs):
        return compose(start, shift)

    monkeypatch.setattr(_register, "_refine", drifting)
    transform, scores = _register._finish(moving, fixed, truth, "affine", 0, polish=False)
    assert transform is truth
    assert scores == _register.alignment_scores(moving, fixed, truth)


def test_bad_arguments():
    moving, fixed, _ = make_pair(0)
    with pytest.raises(ValueError, match="model must be one of"):
        register(moving, fixed, model="perspective")
    with pytest.raises(TypeError, match="register\\(\\) takes"):
        register(np.zeros((4, 4)), fixed)


def test_registration_qc_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from spatialfuse.pl import registration_qc

    moving, fixed, truth = make_pair(1)
    result = register(moving, fixed)
    points = moving.centres_um(mask_only=True)[::40]
    fig = registration_qc(result, landmarks=(points, truth.apply(points)), save=tmp_path / "qc.png")
    assert len(fig.axes) == 4
    assert (tmp_path / "qc.png").stat().st_size > 10_000
    assert not list(tmp_path.glob(".*"))  # atomic save left no temporary file
