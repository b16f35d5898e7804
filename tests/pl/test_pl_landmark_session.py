"""The landmark picker's state without a window: points, fit, errors, files, the re-run.

The napari window itself is tested in ``test_pl_landmark_picker.py`` (needs napari, pytest-qt and a
display); everything it shows is computed here, so these run everywhere.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.pl._landmark_session import CSV_HEADER, LandmarkSession

TRUTH = sf.reg.AffineTransform.from_params(
    rotation_deg=33.0, scale=(1.1, 0.95), shear=0.02, translation=(400.0, -120.0), mirror=True
)


def _images():
    rng = np.random.default_rng(0)
    moving = np.zeros((30, 40))
    moving[5:25, 8:30] = 1.0 + 0.2 * rng.random((20, 22))
    fixed = np.zeros((80, 90))
    fixed[10:70, 10:80] = 1.0
    return (
        sf.reg.RegistrationImage.from_array(moving, 50.0, modality="msi"),
        sf.reg.RegistrationImage.from_array(fixed, 25.0),
    )


@pytest.fixture
def session():
    moving, fixed = _images()
    return LandmarkSession(moving, fixed, moving_image=moving, fixed_image=fixed)


MOVING = np.array([[500.0, 400.0], [1400.0, 350.0], [900.0, 1200.0], [600.0, 1000.0], [1300, 900]])


def test_too_few_pairs_and_an_unpaired_point(session):
    session.set_points(MOVING[:3], TRUTH.apply(MOVING[:2]))
    assert session.n_pairs == 2 and session.fit is None and session.transform is None
    text = session.summary()
    assert "2 pair(s): 3 moving point(s), 2 fixed point(s)" in text
    assert "point 3 has no partner yet: add it on the fixed image" in text
    assert "affine fit: 1 more pair(s) needed" in text
    assert session.warped() is None and session.predicted().shape == (0, 2)
    with pytest.raises(ValueError, match="no transform to save yet"):
        session.save_transform("never.json")


def test_exact_pairs_recover_the_transform_and_the_text_says_so(session):
    session.set_points(MOVING, TRUTH.apply(MOVING))
    assert session.n_pairs == 5
    np.testing.assert_allclose(session.transform.as_affine().matrix, TRUTH.matrix, atol=1e-9)
    np.testing.assert_allclose(session.fit.loo_tre_um, 0.0, atol=1e-8)
    text = session.summary()
    assert "affine fit on 5 pairs" in text
    assert "leave-one-out error: median 0.0 µm (0.00 MSI px)" in text
    assert "mirrored" in text and "shown and saved: affine landmark fit" in text
    np.testing.assert_allclose(session.predicted(), TRUTH.apply(MOVING), atol=1e-8)


def test_noisy_pairs_report_the_leave_one_out_error_of_from_landmarks(session):
    fixed = TRUTH.apply(MOVING) + np.array([[3, -2], [0, 4], [-5, 1], [2, 2], [-1, -6.0]])
    session.set_points(MOVING, fixed)
    expected = sf.reg.from_landmarks(MOVING, fixed, model="affine")
    np.testing.assert_allclose(session.fit.loo_tre_um, expected.loo_tre_um)
    median = float(np.nanmedian(expected.loo_tre_um))
    worst = int(np.nanargmax(expected.loo_tre_um))
    text = session.summary()
    assert f"leave-one-out error: median {median:.1f} µm ({median / 50:.2f} MSI px)" in text
    assert f"at pair {worst + 1}" in text
    # Another model refits at once.
    session.model = "similarity"
    assert session.fit.transform.model == "similarity"
    assert "similarity fit on 5 pairs" in session.summary()
    with pytest.raises(ValueError, match="model must be one of"):
        session.model = "bspline"


def test_collinear_points_say_why_there_is_no_fit(session):
    line = np.array([[0.0, 0.0], [100.0, 100.0], [200.0, 200.0]])
    session.set_points(line, TRUTH.apply(line))
    assert session.fit is None
    assert "collinear" in session.summary()


def test_warped_overlay_lands_on_the_fixed_tissue():
    moving, _ = _images()
    # A fixed image that is the moving one drawn through TRUTH: the overlay must cover its tissue.
    grid = sf.reg.pixel_centres_um((100, 100), 25.0, (-600.0, -900.0))
    source = TRUTH.inverse().apply(grid)
    inside = (
        moving.mask[
            np.clip((source[:, 1] / 50).astype(int), 0, 29),
            np.clip((source[:, 0] / 50).astype(int), 0, 39),
        ]
        & (source >= 0).all(axis=1)
        & (source[:, 0] < 2000)
        & (source[:, 1] < 1500)
    )
    fixed = sf.reg.RegistrationImage.from_array(
        inside.reshape(100, 100).astype(float), 25.0, origin_um=(-600.0, -900.0)
    )
    session = LandmarkSession(moving, fixed, moving_image=moving, fixed_image=fixed)
    session.set_points(MOVING, TRUTH.apply(MOVING))
    image, mask = session.warped()
    assert image.shape == mask.shape == fixed.shape
    truth = inside.reshape(100, 100)
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.95
    assert np.isnan(image[0, 0]) or not truth[0, 0]


def test_saved_files_round_trip(session, tmp_path):
    fixed = TRUTH.apply(MOVING) + 0.123456789
    session.set_points(MOVING, fixed)
    csv = session.save_landmarks(tmp_path / "sub" / "pairs.csv")
    assert csv.read_text(encoding="utf-8").splitlines()[0] == CSV_HEADER
    moving_read, fixed_read = sf.reg.read_landmarks(csv)
    # Written with every digit (repr); pandas' default parser may round the last bit.
    np.testing.assert_allclose(moving_read, MOVING, rtol=1e-15, atol=0)
    np.testing.assert_allclose(fixed_read, fixed, rtol=1e-15, atol=0)
    saved = sf.reg.Transform.load(session.save_transform(tmp_path / "t.json"))
    assert saved == session.fit.transform
    other = LandmarkSession(
        session.moving,
        session.fixed,
        moving_image=session.moving_image,
        fixed_image=session.fixed_image,
    )
    other.load_landmarks(csv)
    np.testing.assert_allclose(other.moving_points, MOVING, rtol=1e-15, atol=0)


def test_nothing_to_save_is_refused(session, tmp_path):
    with pytest.raises(ValueError, match="no landmark pair to save"):
        session.save_landmarks(tmp_path / "pairs.csv")
    assert not (tmp_path / "pairs.csv").exists()
    with pytest.raises(ValueError, match=r"points must be \(n, 2\)"):
        session.set_points([1.0, 2.0, 3.0], [])


def test_register_from_the_pairs_needs_three(session):
    session.set_points(MOVING[:2], TRUTH.apply(MOVING[:2]))
    with pytest.raises(ValueError, match="at least 3 pairs"):
        session.register()


def test_without_napari_the_picker_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "napari", None)  # import napari → ImportError
    moving, fixed = _images()
    with pytest.raises(sf.errors.MissingDependencyError, match=r"spatialfuse\[napari\]"):
        sf.pl.pick_landmarks(moving, fixed)


@pytest.mark.slow
def test_register_from_clicked_pairs_on_the_synthetic_trio(tmp_path):
    """Pairs 'clicked' at true positions: the landmark fit and the re-run registration both
    recover the trio's known MSI → H&E transform; the CSV the session saves is what register
    reads back."""
    trio = sf.datasets.synthetic_trio(
        tmp_path / "trio",
        seed=5,
        tissue_size_um=(2000.0, 1600.0),
        he_pixel_size_um=4.0,
        n_ions=40,
        n_genes=60,
        write_he_serial=False,
    )
    msi, he = sf.io.read_imzml(trio.msi), sf.io.read_histology(trio.he)
    moving_image = sf.reg.registration_image(msi, working_pixel_size_um=None)
    fixed_image = sf.reg.registration_image(he, working_pixel_size_um=10.0)
    session = LandmarkSession(msi, he, moving_image=moving_image, fixed_image=fixed_image)
    tissue = moving_image.centres_um(mask_only=True)
    clicked = tissue[np.random.default_rng(1).choice(len(tissue), 5, replace=False)]
    session.set_points(clicked, trio.msi_to_he.apply(clicked))
    np.testing.assert_allclose(
        session.transform.apply(tissue), trio.msi_to_he.apply(tissue), atol=1e-6
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sf.reg.RegistrationWarning)
        result = session.register()
    assert result.ok, result.failures
    assert session.registration_current and session.transform is result.transform
    error = np.linalg.norm(result.transform.apply(tissue) - trio.msi_to_he.apply(tissue), axis=1)
    assert np.median(error) < 0.25 * 50  # a quarter of an MSI pixel
    assert "registration from the landmarks: ok" in session.summary()
    # The saved CSV is what register(..., landmarks=...) reads.
    pairs = sf.reg.read_landmarks(session.save_landmarks(tmp_path / "pairs.csv"))
    np.testing.assert_allclose(pairs[0], clicked, rtol=1e-15, atol=0)
    # Moving a point makes the registration stale: the landmark fit is shown again.
    session.set_points(
        clicked + np.array([[50.0, 0.0], [0, 0], [0, 0], [0, 0], [0, 0]]), session.fixed_points
    )
    assert not session.registration_current
    assert "points changed since" in session.summary()
    assert session.transform is session.fit.transform
