from __future__ import annotations

import numpy as np
import pytest

from spatialfuse.errors import FileFormatError, MissingFileError
from spatialfuse.reg import AffineTransform, from_landmarks, read_landmarks

RNG = np.random.default_rng(3)
SOURCE = RNG.uniform(0, 2000, (12, 2))


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("rigid", {"rotation_deg": 127.0}),
        ("similarity", {"rotation_deg": -33.0, "scale": 1.7}),
        ("affine", {"rotation_deg": 250.0, "scale": (0.9, 1.12), "shear": 0.04}),
    ],
)
def test_exact_landmarks_recover_the_transform(model, params, mirror):
    truth = AffineTransform.from_params(**params, mirror=mirror, translation=(310.0, -45.0))
    fit = from_landmarks(SOURCE, truth.apply(SOURCE), model=model)
    np.testing.assert_allclose(fit.transform.matrix, truth.matrix, atol=1e-9)
    assert fit.metrics["fre_um_max"] < 1e-9 and fit.metrics["loo_tre_um_max"] < 1e-9
    assert fit.transform.model == model


def test_mirror_can_be_forbidden():
    truth = AffineTransform.from_params(rotation_deg=20, mirror=True)
    fit = from_landmarks(SOURCE, truth.apply(SOURCE), model="rigid", allow_mirror=False)
    assert not fit.transform.is_mirror
    assert fit.metrics["fre_um_mean"] > 100  # the best proper rotation cannot fit a mirror
    with pytest.raises(ValueError, match="mirrors"):
        from_landmarks(SOURCE, truth.apply(SOURCE), model="affine", allow_mirror=False)


def test_noise_gives_honest_errors():
    truth = AffineTransform.from_params(rotation_deg=40, scale=(1.05, 0.95))
    noisy = truth.apply(SOURCE) + RNG.normal(0, 5.0, SOURCE.shape)
    affine = from_landmarks(SOURCE, noisy, model="affine")
    tps = from_landmarks(SOURCE, noisy, model="tps")
    assert 1.0 < affine.metrics["fre_um_mean"] < 10.0
    assert affine.metrics["loo_tre_um_median"] > affine.metrics["fre_um_mean"] * 0.8
    # A thin-plate spline interpolates: zero fiducial error says nothing about accuracy; the
    # leave-one-out error does.
    assert tps.metrics["fre_um_max"] < 1e-6
    assert tps.metrics["loo_tre_um_median"] > 1.0


def test_too_few_or_degenerate_landmarks():
    with pytest.raises(ValueError, match="at least 3"):
        from_landmarks(SOURCE[:2], SOURCE[:2], model="affine")
    line = np.c_[np.arange(5.0), np.arange(5.0)]
    with pytest.raises(ValueError, match="collinear"):
        from_landmarks(line, line, model="affine")
    with pytest.raises(ValueError, match="moving points"):
        from_landmarks(SOURCE, SOURCE[:5])


def test_read_magpie_and_plain_layouts(tmp_path):
    moving, fixed = SOURCE[:4], SOURCE[4:8]
    magpie = tmp_path / "magpie.csv"
    rows = [",".join(f"{v:.6f}" for v in (*m, *f)) for m, f in zip(moving, fixed, strict=True)]
    magpie.write_text("X_left,Y_left,X_right,Y_right\n" + "\n".join(rows) + "\n")
    got_moving, got_fixed = read_landmarks(magpie)
    np.testing.assert_allclose(got_moving, moving, atol=1e-6)
    np.testing.assert_allclose(got_fixed, fixed, atol=1e-6)
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(rows) + "\n")
    np.testing.assert_allclose(read_landmarks(plain)[1], fixed, atol=1e-6)
    named = tmp_path / "named.csv"
    named.write_text("moving_x,moving_y,fixed_x,fixed_y\n" + "\n".join(rows) + "\n")
    np.testing.assert_allclose(read_landmarks(named)[0], moving, atol=1e-6)


def test_bad_landmark_files(tmp_path):
    with pytest.raises(MissingFileError, match="no such landmark file"):
        read_landmarks(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("X_left,Y_left,X_right,Y_right\n1,2,3,banana\n")
    with pytest.raises(FileFormatError, match=r"bad\.csv"):
        read_landmarks(bad)
    three = tmp_path / "three.csv"
    three.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(FileFormatError, match="4 columns"):
        read_landmarks(three)
