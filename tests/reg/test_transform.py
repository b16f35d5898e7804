"""sf.reg transforms: known maps recovered, inverses to stated accuracy, lossless storage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spatialfuse.errors import FileFormatError
from spatialfuse.reg import (
    INVERSE_TOLERANCE_UM,
    AffineTransform,
    CompositeTransform,
    DisplacementField,
    InverseTransform,
    ThinPlateSpline,
    Transform,
    compose,
    resample,
)

RNG = np.random.default_rng(20261124)
POINTS = RNG.uniform(-500, 3000, (400, 2))


def _random_affine(rng, *, mirror=None):
    return AffineTransform.from_params(
        rotation_deg=rng.uniform(0, 360),
        scale=rng.uniform(0.85, 1.15, 2),
        shear=rng.uniform(-0.1, 0.1),
        translation=rng.uniform(-1000, 1000, 2),
        mirror=bool(rng.integers(2)) if mirror is None else mirror,
    )


def _smooth_field(rng, amplitude=30.0):
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.normal(size=(12, 14, 2)), sigma=(2, 2, 0))
    field *= amplitude / np.abs(field).max()
    return DisplacementField(field, origin_um=(-600, -600), spacing_um=(300, 300))


def _all_kinds(rng):
    affine = _random_affine(rng)
    source = rng.uniform(0, 2500, (12, 2))
    tps = ThinPlateSpline(source, affine.apply(source) + rng.normal(0, 8, source.shape))
    field = _smooth_field(rng)
    return {
        "affine": affine,
        "tps": tps,
        "displacement": field,
        "composite": compose(affine, field),
        "inverse": field.inverse(),
    }


def test_affine_parameters_round_trip():
    for _ in range(50):
        t = _random_affine(RNG)
        d = t.decompose()
        rebuilt = AffineTransform.from_params(
            rotation_deg=d["rotation_deg"],
            scale=(d["scale_x"], d["scale_y"]),
            shear=d["shear"],
            translation=(d["translation_x"], d["translation_y"]),
            mirror=d["mirror"],
        )
        np.testing.assert_allclose(rebuilt.matrix, t.matrix, atol=1e-12)


def test_from_params_geometry():
    # 90° about (100, 100): (200, 100) -> (100, 200); mirror flips x before rotating.
    t = AffineTransform.from_params(rotation_deg=90, center=(100, 100))
    np.testing.assert_allclose(t.apply([[200, 100]]), [[100, 200]], atol=1e-12)
    m = AffineTransform.from_params(mirror=True, translation=(10, 0))
    np.testing.assert_allclose(m.apply([[3, 4]]), [[7, 4]])
    assert m.is_mirror and not t.is_mirror
    assert t.model == "rigid" and AffineTransform.from_params(scale=2).model == "similarity"
    assert AffineTransform.from_params(scale=(1, 2)).model == "affine"


@pytest.mark.parametrize("kind", ["affine", "tps", "displacement", "composite", "inverse"])
def test_inverse_round_trip(kind):
    t = _all_kinds(np.random.default_rng(1))[kind]
    there = t.apply(POINTS)
    back = t.inverse().apply(there)
    # The numeric inverse guarantees |t(p) - q| <= tolerance; check that directly, and p itself.
    np.testing.assert_allclose(t.apply(back), there, atol=INVERSE_TOLERANCE_UM)
    np.testing.assert_allclose(back, POINTS, atol=1e-4)
    assert t.inverse().inverse().to_dict() == t.to_dict()


def test_tps_interpolates_landmarks_and_smooths_with_regularization():
    source = RNG.uniform(0, 1000, (15, 2))
    target = source * 1.1 + RNG.normal(0, 10, source.shape)
    exact = ThinPlateSpline(source, target)
    np.testing.assert_allclose(exact.apply(source), target, atol=1e-9)
    smooth = ThinPlateSpline(source, target, regularization=1e6)
    assert np.abs(smooth.apply(source) - target).mean() > 1.0  # no longer interpolates
    with pytest.raises(ValueError, match="degenerate"):
        ThinPlateSpline([[0, 0], [1, 1], [2, 2]], [[0, 0], [1, 1], [2, 2]])


def test_composition_order_and_collapse():
    a, b = _random_affine(RNG), _random_affine(RNG)
    field = _smooth_field(RNG)
    np.testing.assert_allclose((a @ b).apply(POINTS), a.apply(b.apply(POINTS)), atol=1e-9)
    assert isinstance(a @ b, AffineTransform)  # linear chains collapse to one matrix
    chain = compose(a, field, b)
    assert isinstance(chain, CompositeTransform)
    np.testing.assert_allclose(chain.apply(POINTS), a.apply(field.apply(b.apply(POINTS))))


@pytest.mark.parametrize("kind", ["affine", "tps", "displacement", "composite", "inverse"])
def test_dict_and_file_round_trip_is_exact(kind, tmp_path):
    t = _all_kinds(np.random.default_rng(2))[kind]
    via_json = Transform.from_dict(json.loads(json.dumps(t.to_dict())))
    np.testing.assert_array_equal(via_json.apply(POINTS), t.apply(POINTS))
    path = t.save(tmp_path / "t.json")
    loaded = Transform.load(path)
    assert loaded == t
    np.testing.assert_array_equal(loaded.apply(POINTS), t.apply(POINTS))
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind


def test_load_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(FileFormatError, match=r"bad\.json: not a valid spatialfuse transform"):
        Transform.load(bad)
    bad.write_text("{not json")
    with pytest.raises(FileFormatError, match=r"bad\.json"):
        Transform.load(bad)


def test_to_spatialdata_matches_apply():
    t = _random_affine(RNG)
    affine = t.to_spatialdata()
    matrix = affine.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    homogeneous = np.hstack([POINTS, np.ones((len(POINTS), 1))])
    np.testing.assert_allclose((homogeneous @ matrix.T)[:, :2], t.apply(POINTS), atol=1e-9)
    with pytest.raises(ValueError, match="nonrigid"):
        compose(t, _smooth_field(RNG)).to_spatialdata()


def test_jacobian_determinant():
    t = AffineTransform.from_params(scale=(2, 3), mirror=True)
    np.testing.assert_allclose(t.jacobian_determinant(POINTS[:5]), -6.0)
    field = _smooth_field(RNG, amplitude=5)
    assert field.jacobian_determinant(POINTS).min() > 0.5  # a gentle field does not fold
    folding = np.zeros((3, 3, 2))
    folding[1, 1, 0] = 400.0  # a node pushed past its neighbours
    det = DisplacementField(folding, spacing_um=(100, 100)).jacobian_determinant(
        [[100.0 + dx, 100.0] for dx in np.linspace(-90, 90, 19)]
    )
    assert det.min() < 0


def test_invalid_inputs():
    with pytest.raises(ValueError, match="singular"):
        AffineTransform([[1, 2, 0], [2, 4, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        AffineTransform.identity().apply(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="rows"):
        DisplacementField(np.zeros((1, 4, 2)))
    with pytest.raises(TypeError):
        InverseTransform(AffineTransform.identity())


def test_resample_uses_pixel_centres():
    image = RNG.random((20, 30))
    identity = AffineTransform.identity()
    same = resample(
        image, identity, pixel_size_um=5, output_shape=(20, 30), output_pixel_size_um=5, order=0
    )
    np.testing.assert_array_equal(same, image)
    # Moving content by +10 µm in x (2 pixels at 5 µm) shifts the image two columns right.
    shift = AffineTransform.from_params(translation=(10, 0))
    moved = resample(image, shift, pixel_size_um=5, output_shape=(20, 30), output_pixel_size_um=5)
    np.testing.assert_allclose(moved[:, 2:], image[:, :-2], atol=1e-12)
    # A 2× coarser output grid: its pixel (0, 0) centre at (5, 5) µm sits on the corner shared by
    # input pixels (0..1, 0..1), so linear interpolation averages those four.
    coarse = resample(
        image, identity, pixel_size_um=5, output_shape=(10, 15), output_pixel_size_um=10
    )
    assert coarse[0, 0] == pytest.approx(image[:2, :2].mean())
    rgb = resample(
        np.dstack([image] * 3), shift, pixel_size_um=5, output_shape=(4, 4), output_pixel_size_um=5
    )
    assert rgb.shape == (4, 4, 3)


def test_as_affine_on_every_kind():
    """Linear kinds give one matrix that maps like them; nonrigid kinds say they have none."""
    rng = np.random.default_rng(7)
    a, b = _random_affine(rng), _random_affine(rng)
    assert a.as_affine() is a
    chain = CompositeTransform([a, b])  # not collapsed: a chain of two linear steps
    np.testing.assert_allclose(chain.as_affine().apply(POINTS), b.apply(a.apply(POINTS)))
    for name, transform in _all_kinds(rng).items():
        if transform.is_linear:
            np.testing.assert_allclose(
                transform.as_affine().apply(POINTS), transform.apply(POINTS), atol=1e-9
            )
        else:
            with pytest.raises(ValueError, match="no single matrix"):
                transform.as_affine()
            assert name != "affine"
