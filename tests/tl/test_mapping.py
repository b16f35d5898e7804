"""sf.tl.map_to_spots / map_to_pixels against known answers and independent brute force."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.errors import DataWarning
from spatialfuse.reg import AffineTransform, DisplacementField, Transform
from spatialfuse.tl._quadrature import (
    DEFAULT_N_SAMPLES,
    MEASURED_MAX_WEIGHT_ERROR,
    disc_samples,
)

R = 27.5  # Visium disc radius, µm
BOUND = MEASURED_MAX_WEIGHT_ERROR[DEFAULT_N_SAMPLES]  # stated accuracy of a weight


# -------------------------------------------------------------------------------------------------
# builders (the read_imzml and read_visium layouts, written out by hand)
# -------------------------------------------------------------------------------------------------


def make_msi(nx, ny, px, X=None, *, py=None, origin=(1, 1), drop=(), n_features=3, seed=0):
    """An MSI AnnData on an nx × ny raster with pixel size (px, py), grid starting at origin."""
    import anndata as ad
    import pandas as pd

    py = px if py is None else py
    gx, gy = np.meshgrid(np.arange(nx) + origin[0], np.arange(ny) + origin[1])
    gx, gy = gx.ravel(), gy.ravel()
    keep = np.array([(a, b) not in set(drop) for a, b in zip(gx, gy, strict=True)], dtype=bool)
    gx, gy = gx[keep], gy[keep]
    centres = np.stack([(gx - 0.5) * px, (gy - 0.5) * py], axis=1)
    if X is None:
        X = np.random.default_rng(seed).random((gx.size, n_features)).astype(np.float32)
    elif callable(X):
        X = X(centres)
    obs = pd.DataFrame(
        {"imzml_x": gx, "imzml_y": gy},
        index=pd.Index([f"{a}_{b}" for a, b in zip(gx, gy, strict=True)], dtype=str),
    )
    mz = np.linspace(100.0, 900.0, X.shape[1])
    var = pd.DataFrame({"mz": mz}, index=pd.Index([f"mz-{m:.4f}" for m in mz], dtype=str))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["spatial"] = centres
    adata.uns["spatialfuse"] = {"modality": "msi", "pixel_size_um": [float(px), float(py)]}
    return adata


def hex_lattice(nrow, ncol, *, pitch=100.0, origin=(0.0, 0.0)):
    """Visium-like hexagonal lattice of spot centres (odd rows shifted by half a pitch)."""
    pts = [
        (origin[0] + c * pitch + (pitch / 2 if r % 2 else 0.0), origin[1] + r * pitch * 0.75**0.5)
        for r in range(nrow)
        for c in range(ncol)
    ]
    return np.asarray(pts, dtype=np.float64)


def make_visium(centres, X=None, *, um_per_px=0.5):
    import anndata as ad
    import pandas as pd

    centres = np.asarray(centres, dtype=np.float64)
    n = len(centres)
    names = pd.Index([f"SPOT{i:04d}-1" for i in range(n)], dtype=str)
    if X is None:
        X = np.ones((n, 2), dtype=np.float32)
    genes = pd.Index([f"gene{j}" for j in range(X.shape[1])], dtype=str)
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame({"in_tissue": np.ones(n, dtype=np.int64)}, index=names),
        var=pd.DataFrame(index=genes),
    )
    adata.obsm["spatial"] = centres / um_per_px - 0.5
    adata.obsm["spatial_um"] = centres
    adata.uns["spatial"] = {
        "lib": {
            "images": {"hires": np.zeros((4, 4, 3), dtype=np.uint8)},
            "scalefactors": {"tissue_hires_scalef": 0.1, "spot_diameter_fullres": 55 / um_per_px},
            "metadata": {},
        }
    }
    adata.uns["spatialfuse"] = {"um_per_px": um_per_px, "reader": "test"}
    return adata


def one_hot_msi(nx, ny, px, **kw):
    """MSI whose feature j is 1 at pixel j only: the output rows are the spot weights."""
    n = nx * ny
    return make_msi(nx, ny, px, X=np.eye(n, dtype=np.float64), **kw)


# -------------------------------------------------------------------------------------------------
# independent references
# -------------------------------------------------------------------------------------------------


def _antiderivative(t, r):
    t = np.clip(t, -r, r)
    return 0.5 * (t * math.sqrt(max(r * r - t * t, 0.0)) + r * r * math.asin(t / r))


def disc_rect_area(r, x0, x1, y0, y1):
    """Exact area of the disc |p| <= r (centred at 0) ∩ [x0, x1] × [y0, y1] (closed form)."""
    a, b = max(x0, -r), min(x1, r)
    if a >= b:
        return 0.0
    knots = {a, b}
    for y in (y0, y1):
        if abs(y) < r:
            s = math.sqrt(r * r - y * y)
            knots.update((s, -s))
    knots = sorted(k for k in knots if a <= k <= b)
    total = 0.0
    for lo, hi in itertools.pairwise(knots):
        mid = 0.5 * (lo + hi)
        h = math.sqrt(max(r * r - mid * mid, 0.0))
        arc = _antiderivative(hi, r) - _antiderivative(lo, r)
        upper, upper_int = (y1, y1 * (hi - lo)) if y1 < h else (h, arc)
        lower, lower_int = (y0, y0 * (hi - lo)) if y0 > -h else (-h, -arc)
        if upper > lower:
            total += upper_int - lower_int
    return total


def exact_weights(centre, msi):
    """{row: exact fraction of the disc at ``centre`` covered by MSI pixel row} (axis-aligned)."""
    px, py = msi.uns["spatialfuse"]["pixel_size_um"]
    gx = msi.obs["imzml_x"].to_numpy()
    gy = msi.obs["imzml_y"].to_numpy()
    out = {}
    for i in range(len(gx)):
        x0, y0 = (gx[i] - 1) * px - centre[0], (gy[i] - 1) * py - centre[1]
        area = disc_rect_area(R, x0, x0 + px, y0, y0 + py)
        if area > 0:
            out[i] = area / (math.pi * R * R)
    return out


def brute_weights(centre, msi, transform, step=0.125):
    """Fraction of a fine square grid over the disc (mapped back by transform) in each pixel."""
    px, py = msi.uns["spatialfuse"]["pixel_size_um"]
    ticks = np.arange(-R + step / 2, R, step)
    u, v = np.meshgrid(ticks, ticks)
    inside = u**2 + v**2 <= R * R
    pts = np.stack([u[inside], v[inside]], axis=1) + centre
    back = transform.inverse().apply(pts)
    ix = np.floor(back[:, 0] / px).astype(np.int64) + 1
    iy = np.floor(back[:, 1] / py).astype(np.int64) + 1
    rows = {
        (a, b): i
        for i, (a, b) in enumerate(
            zip(msi.obs["imzml_x"].to_numpy(), msi.obs["imzml_y"].to_numpy(), strict=True)
        )
    }
    weights = np.zeros(msi.n_obs)
    cells, counts = np.unique(np.stack([ix, iy], 1), axis=0, return_counts=True)
    for (a, b), count in zip(cells, counts, strict=True):
        row = rows.get((int(a), int(b)))
        if row is not None:
            weights[row] += count
    return weights / len(pts)


# -------------------------------------------------------------------------------------------------
# the quadrature
# -------------------------------------------------------------------------------------------------


def test_disc_samples_are_deterministic_symmetric_and_uniform():
    for n in (64, 1024, 1025):
        s = disc_samples(n)
        assert s.shape == (n, 2)
        np.testing.assert_array_equal(s, disc_samples(n))
        assert np.hypot(*s.T).max() <= 1.0
        np.testing.assert_allclose(s.mean(axis=0), 0.0, atol=1e-15)  # centrally symmetric
        # Equal-area: r² is uniform on [0, 1] (each ring of equal area holds equal samples).
        r2 = np.sort(np.hypot(*s.T) ** 2)
        assert np.abs(r2 - (np.arange(n) + 0.5) / n).max() < 1.5 / n
    with pytest.raises(ValueError):
        disc_samples(1)


def _weight_errors(n_samples, spots, msi):
    from spatialfuse.core.msi_raster import MsiRaster
    from spatialfuse.tl._mapping import _disc_counts

    raster = MsiRaster.from_anndata(msi)
    counts, _ = _disc_counts(spots, R, disc_samples(n_samples), AffineTransform.identity(), raster)
    errors = []
    for s, centre in enumerate(spots):
        exact = exact_weights(centre, msi)
        row = counts.getrow(s)
        ours = dict(zip(row.indices.tolist(), (row.data / n_samples).tolist(), strict=True))
        for key in set(exact) | set(ours):
            errors.append(abs(ours.get(key, 0.0) - exact.get(key, 0.0)))
    return np.asarray(errors)


@pytest.mark.parametrize("px", [50.0, 20.0])
def test_quadrature_weights_match_exact_areas_and_converge(px):
    """Weights (fraction of the disc in each pixel) vs the closed-form disc ∩ square area."""
    n = int(400 / px) + 2
    msi = make_msi(n, n, px)
    rng = np.random.default_rng(7)
    spots = rng.uniform(px + R, (n - 1) * px - R, size=(60 if px == 50 else 25, 2))
    worst = {m: _weight_errors(m, spots, msi).max() for m in (256, DEFAULT_N_SAMPLES, 4096)}
    assert worst[DEFAULT_N_SAMPLES] <= BOUND, worst
    assert worst[256] > worst[DEFAULT_N_SAMPLES] > worst[4096], worst
    assert worst[4096] <= MEASURED_MAX_WEIGHT_ERROR[4096]


# -------------------------------------------------------------------------------------------------
# known answers
# -------------------------------------------------------------------------------------------------


def linear(c):
    return (2.0 * c[:, 0] + 3.0 * c[:, 1] + 5.0)[:, None]


def test_linear_function_identity_gives_value_at_spot_centre():
    msi = make_msi(24, 24, 50.0, X=linear)
    # Spot centres on symmetry points of the raster (pixel centres, corners, edge midpoints): the
    # pixels around each are symmetric about it, as are the quadrature samples, so the
    # area-weighted mean of a linear function is its value at the centre.
    grid = np.arange(200.0, 1000.0, 25.0)
    centres = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)[::7]
    out = sf.tl.map_to_spots(msi, make_visium(centres), transform=AffineTransform.identity())
    assert out.obs["has_msi"].all()
    np.testing.assert_allclose(out.obs["msi_coverage"], 1.0)
    np.testing.assert_allclose(out.X[:, 0], linear(centres)[:, 0], rtol=1e-12)


def test_linear_function_hex_spots_match_exact_area_mean():
    msi = make_msi(24, 24, 50.0, X=linear)
    centres = hex_lattice(10, 9, origin=(130.3, 141.7))
    out = sf.tl.map_to_spots(msi, make_visium(centres), transform=AffineTransform.identity())
    values = linear(msi.obsm["spatial"])[:, 0]
    gradient_span = 5.0 * (R + 50.0)  # |∂f/∂x| + |∂f/∂y| times the reach of a pixel centre
    for s, centre in enumerate(centres):
        exact = exact_weights(centre, msi)
        rows = np.fromiter(exact, dtype=np.int64)
        w = np.fromiter(exact.values(), dtype=np.float64)
        assert abs(w.sum() - 1.0) < 1e-9
        expected = float(w @ values[rows])
        # Σ_p |error of w_p| · |f(c_p) − mean| ≤ (#pixels · bound) · span
        assert abs(out.X[s, 0] - expected) <= len(w) * BOUND * gradient_span * 0.25
        # And close to f at the centre: pixels are piecewise constant, so within a fraction of
        # the change of f across one pixel.
        assert abs(out.X[s, 0] - linear(centre[None])[0, 0]) < 0.25 * 5.0 * 50.0


def test_constant_image_value_and_coverage():
    c = 7.25
    # MSI field [0, 1000] × [0, 800] µm, one spectrum missing at grid (10, 8).
    msi = make_msi(20, 16, 50.0, X=lambda p: np.full((len(p), 2), c), drop=[(10, 8)])
    centres = np.array(
        [
            [300.0, 300.0],  # inside
            [1000.0, 400.0],  # centred on the right edge: half covered
            [1000.0, 800.0],  # on the corner: a quarter
            [1500.0, 400.0],  # far outside
            [475.0, 375.0],  # centred on the missing pixel (10, 8) = [450, 500] × [350, 400]
            [-27.0, 500.0],  # just touching the left edge
        ]
    )
    out = sf.tl.map_to_spots(
        msi, make_visium(centres), transform=AffineTransform.identity(), min_coverage=0.0
    )
    cov = out.obs["msi_coverage"].to_numpy()
    has = out.obs["has_msi"].to_numpy()
    np.testing.assert_array_equal(has, [True, True, True, False, True, True])
    # The default (0, as in the run config) keeps every spot an MSI pixel touches; 0.5 drops
    # the corner, the missing pixel and the sliver (the half-covered spot sits at the limit).
    default = sf.tl.map_to_spots(msi, make_visium(centres), transform=AffineTransform.identity())
    np.testing.assert_array_equal(default.obs["has_msi"].to_numpy(), has)
    half = sf.tl.map_to_spots(
        msi, make_visium(centres), transform=AffineTransform.identity(), min_coverage=0.5
    )
    np.testing.assert_array_equal(half.obs["has_msi"].to_numpy()[[0, 2, 3, 4, 5]], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(out.X[has], c, rtol=1e-12)
    assert np.isnan(out.X[~has]).all()
    assert cov[0] == 1.0 and cov[3] == 0.0
    assert abs(cov[1] - 0.5) <= BOUND and abs(cov[2] - 0.25) <= BOUND
    missing = 1 - disc_rect_area(R, -25, 25, -25, 25) / (math.pi * R * R)
    assert abs(cov[4] - missing) <= BOUND
    sliver = disc_rect_area(R, 27.0, 100.0, -100.0, 100.0) / (math.pi * R * R)
    assert 0 < cov[5] and abs(cov[5] - sliver) <= BOUND
    assert out.obs["n_msi_pixels"].iloc[3] == 0
    # min_coverage turns partially covered spots into spots without MSI data.
    strict = sf.tl.map_to_spots(
        msi, make_visium(centres), transform=AffineTransform.identity(), min_coverage=0.6
    )
    # The missing 50 µm pixel takes ~90 % of the 55 µm disc centred on it.
    assert cov[4] < 0.6
    np.testing.assert_array_equal(strict.obs["has_msi"], [True, False, False, False, False, False])
    assert np.isnan(strict.X[1]).all()


def test_sum_versus_mean():
    c = 3.0
    msi = make_msi(20, 20, 50.0, X=lambda p: np.full((len(p), 1), c))
    centres = hex_lattice(4, 4, origin=(300.0, 300.0))
    vis = make_visium(centres)
    area = math.pi * R * R
    for scale in (1.0, 1.5):
        t = AffineTransform.from_params(scale=scale, rotation_deg=20.0, translation=(40, -30))
        vis_t = make_visium(t.apply(centres))
        mean = sf.tl.map_to_spots(msi, vis_t, transform=t)
        total = sf.tl.map_to_spots(msi, vis_t, transform=t, aggregate="sum")
        np.testing.assert_allclose(mean.X, c, rtol=1e-12)
        # Σ (overlap / pixel area in the Visium frame) · c = c · disc area / (2500 · scale²)
        np.testing.assert_allclose(total.X[:, 0], c * area / (2500.0 * scale**2), rtol=1e-12)
    identity = AffineTransform.identity()
    radius_mean = sf.tl.map_to_spots(msi, vis, transform=identity, method="radius")
    radius_sum = sf.tl.map_to_spots(
        msi, vis, transform=AffineTransform.identity(), method="radius", aggregate="sum"
    )
    np.testing.assert_allclose(radius_mean.X, c)
    np.testing.assert_allclose(radius_sum.X[:, 0], c * radius_sum.obs["n_msi_pixels"])
    # Random data: the sum over the radius rule is the mean times the pixel count.
    msi_r = make_msi(20, 20, 50.0, n_features=4)
    m = sf.tl.map_to_spots(msi_r, vis, transform=AffineTransform.identity(), method="radius")
    s = sf.tl.map_to_spots(
        msi_r, vis, transform=AffineTransform.identity(), method="radius", aggregate="sum"
    )
    np.testing.assert_allclose(s.X, m.X * m.obs["n_msi_pixels"].to_numpy()[:, None], rtol=1e-5)


@pytest.mark.parametrize(
    "transform",
    [
        AffineTransform.from_params(rotation_deg=33.0, translation=(60, -25), center=(300, 300)),
        AffineTransform.from_params(
            rotation_deg=-71.0, scale=(1.12, 0.9), mirror=True, center=(300, 300)
        ),
        AffineTransform.from_params(rotation_deg=90.0, scale=0.8, shear=0.1, center=(300, 300)),
    ],
    ids=["rigid", "mirrored-anisotropic", "sheared"],
)
def test_affine_against_brute_force(transform):
    msi = one_hot_msi(14, 14, 45.0)
    centres = transform.apply(np.array([[300.0, 310.0], [222.2, 401.5], [377.0, 211.0]]))
    centres = np.vstack([centres, [[5000.0, 5000.0]]])  # one spot far off the MSI
    out = sf.tl.map_to_spots(msi, make_visium(centres), transform=transform)
    total = sf.tl.map_to_spots(msi, make_visium(centres), transform=transform, aggregate="sum")
    det = abs(np.linalg.det(transform.matrix[:2, :2]))
    for s, centre in enumerate(centres[:3]):
        brute = brute_weights(centre, msi, transform)
        ours = out.X[s] * out.obs["msi_coverage"].iloc[s]  # mean weights × coverage = fractions
        assert np.abs(ours - brute).max() <= BOUND + 2e-3
        assert abs(out.obs["msi_coverage"].iloc[s] - brute.sum()) <= 2e-3
        assert out.obs["n_msi_pixels"].iloc[s] == np.count_nonzero(ours)
        expected_sum = brute * math.pi * R * R / (45.0 * 45.0 * det)
        assert np.abs(total.X[s] - expected_sum).max() <= (BOUND + 2e-3) * expected_sum.max()
    assert not out.obs["has_msi"].iloc[3]


def smooth_field():
    """A smooth displacement (up to ~20 µm) over the MSI field."""
    yy, xx = np.mgrid[0:9, 0:9] * 80.0
    u = np.stack(
        [12.0 * np.sin(xx / 200.0) + 6.0 * np.cos(yy / 150.0), 15.0 * np.sin((xx + yy) / 250.0)],
        axis=2,
    )
    return DisplacementField(u, origin_um=(0.0, 0.0), spacing_um=(80.0, 80.0))


def test_displacement_field_against_brute_force():
    field = smooth_field()
    transform = sf.reg.compose(AffineTransform.from_params(rotation_deg=10.0), field)
    msi = one_hot_msi(14, 14, 45.0)
    centres = transform.apply(np.array([[300.0, 310.0], [222.2, 401.5]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the numeric inverse must converge
        out = sf.tl.map_to_spots(msi, make_visium(centres), transform=transform)
    for s, centre in enumerate(centres):
        brute = brute_weights(centre, msi, transform, step=0.25)
        ours = out.X[s] * out.obs["msi_coverage"].iloc[s]
        assert np.abs(ours - brute).max() <= BOUND + 3e-3
    assert out.uns["spatialfuse"]["mapping"]["transform"]["is_linear"] is False


# -------------------------------------------------------------------------------------------------
# the rules of other tools, against a dense brute force
# -------------------------------------------------------------------------------------------------


def _rule_case():
    msi = make_msi(30, 30, 20.0, n_features=3, seed=3)
    transform = AffineTransform.from_params(
        rotation_deg=7.3, scale=1.05, translation=(13.1, -7.7), center=(300, 300)
    )
    centres = hex_lattice(8, 8, origin=(-31.4, -12.9))
    return msi, transform, centres


def test_radius_rule_matches_dense_brute_force():
    msi, transform, centres = _rule_case()
    out = sf.tl.map_to_spots(msi, make_visium(centres), transform=transform, method="radius")
    mapped = transform.apply(msi.obsm["spatial"])
    d = np.sqrt(((centres[:, None, :] - mapped[None, :, :]) ** 2).sum(axis=2))
    mask = d < 50.0
    n = mask.sum(axis=1)
    np.testing.assert_array_equal(out.obs["n_msi_pixels"], n)
    with np.errstate(invalid="ignore"):
        expected = (mask.astype(np.float64) @ msi.X.astype(np.float64)) / n[:, None]
    has = out.obs["has_msi"].to_numpy()
    np.testing.assert_array_equal(has, n > 0)
    assert 0 < has.sum() < len(has)
    np.testing.assert_allclose(out.X[has], expected[has], rtol=1e-6)
    assert np.isnan(out.X[~has]).all()
    # A custom radius.
    out30 = sf.tl.map_to_spots(
        msi, make_visium(centres), transform=transform, method="radius", radius_um=30.0
    )
    np.testing.assert_array_equal(out30.obs["n_msi_pixels"], (d < 30.0).sum(axis=1))


def test_nearest_rule_matches_dense_brute_force():
    msi, transform, centres = _rule_case()
    out = sf.tl.map_to_spots(msi, make_visium(centres), transform=transform, method="nearest")
    mapped = transform.apply(msi.obsm["spatial"])
    d = np.sqrt(((centres[:, None, :] - mapped[None, :, :]) ** 2).sum(axis=2))
    nearest = d.argmin(axis=1)
    # Default cutoff: max(50 µm, half the mapped pixel diagonal = 20·√2/2·1.05 µm) = 50 µm.
    ok = d.min(axis=1) <= 50.0
    np.testing.assert_array_equal(out.obs["has_msi"], ok)
    np.testing.assert_array_equal(out.obs["n_msi_pixels"], ok.astype(int))
    np.testing.assert_allclose(out.X[ok], msi.X[nearest[ok]], rtol=1e-6)
    # Large pixels: a spot centred on a pixel corner still gets a pixel by default.
    big = make_msi(5, 5, 150.0)
    corner = make_visium([[150.0, 150.0], [1000.0, 1000.0]])
    res = sf.tl.map_to_spots(big, corner, transform=AffineTransform.identity(), method="nearest")
    np.testing.assert_array_equal(res.obs["has_msi"], [True, False])


def test_overlap_rule_matches_exact_areas():
    # Axis-aligned 50 µm pixels, so the exact overlap of every pixel is known in closed form.
    msi = make_msi(16, 16, 50.0, n_features=2, seed=5)
    shift = np.array([11.3, -6.1])
    transform = AffineTransform.from_params(translation=tuple(shift))
    centres = hex_lattice(7, 7, origin=(50.0, 60.0)) + shift
    out = sf.tl.map_to_spots(
        msi, make_visium(centres), transform=transform, method="overlap", overlap_fraction=0.2
    )
    checked = 0
    for s, centre in enumerate(centres):
        exact = exact_weights(centre - shift, msi)
        if any(abs(f - 0.2) <= BOUND for f in exact.values()):
            continue  # too close to the threshold for the quadrature to decide
        chosen = sorted(p for p, f in exact.items() if f >= 0.2)
        assert out.obs["n_msi_pixels"].iloc[s] == len(chosen)
        if chosen:
            np.testing.assert_allclose(out.X[s], msi.X[chosen].mean(axis=0), rtol=1e-6)
        else:
            assert np.isnan(out.X[s]).all()
        checked += 1
    assert checked >= 30
    # Pixels far smaller than a spot never cover 20 % of it (SpaMTP's rule is for big pixels).
    small = make_msi(30, 30, 10.0)
    with pytest.warns(DataWarning, match="overlap_fraction"):
        res = sf.tl.map_to_spots(
            small,
            make_visium([[150.0, 150.0]]),
            transform=AffineTransform.identity(),
            method="overlap",
        )
    assert not res.obs["has_msi"].iloc[0] and res.obs["msi_coverage"].iloc[0] == 1.0


# -------------------------------------------------------------------------------------------------
# layout, inputs and errors
# -------------------------------------------------------------------------------------------------


def test_output_layout_and_h5ad_round_trip(tmp_path):
    import anndata as ad

    msi = make_msi(20, 20, 50.0, n_features=4)
    centres = hex_lattice(6, 6, origin=(100.0, 100.0))
    centres = np.vstack([centres, [[3000.0, 3000.0]]])
    vis = make_visium(centres)
    out = sf.tl.map_to_spots(msi, vis, transform=AffineTransform.identity())
    assert list(out.obs_names) == list(vis.obs_names)
    assert list(out.var_names) == list(msi.var_names)
    np.testing.assert_array_equal(out.var["mz"], msi.var["mz"])
    np.testing.assert_array_equal(out.obsm["spatial"], vis.obsm["spatial"])
    np.testing.assert_array_equal(out.obsm["spatial_um"], vis.obsm["spatial_um"])
    assert out.uns["spatial"]["lib"]["scalefactors"] == vis.uns["spatial"]["lib"]["scalefactors"]
    assert out.obs["in_tissue"].tolist() == vis.obs["in_tissue"].tolist()
    assert out.X.dtype == np.float32
    assert out.obs["has_msi"].dtype == bool
    record = out.uns["spatialfuse"]["mapping"]
    assert record["method"] == "area" and record["aggregate"] == "mean"
    assert record["quadrature"]["n_samples"] == DEFAULT_N_SAMPLES
    assert record["quadrature"]["max_abs_weight_error"] == BOUND
    assert record["quadrature"]["max_abs_weight_error_source"] == "measured"
    assert out.uns["spatialfuse"]["um_per_px"] == 0.5
    assert out.uns["spatialfuse"]["msi"]["pixel_size_um"] == [50.0, 50.0]
    path = tmp_path / "mapped.h5ad"
    out.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X, out.X)
    assert back.uns["spatialfuse"]["mapping"]["quadrature"]["n_samples"] == DEFAULT_N_SAMPLES
    # Other quadrature sizes say how their accuracy was obtained.
    odd = sf.tl.map_to_spots(msi, vis, transform=AffineTransform.identity(), n_samples=333)
    assert (
        "estimated"
        in odd.uns["spatialfuse"]["mapping"]["quadrature"]["max_abs_weight_error_source"]
    )


def test_sparse_input_and_layer_match_dense():
    from scipy import sparse

    msi = make_msi(20, 20, 50.0, n_features=5, seed=2)
    dense = msi.X.copy()
    dense[dense < 0.5] = 0
    msi.X = sparse.csr_matrix(dense)
    msi.layers["dense"] = dense
    centres = np.vstack([hex_lattice(5, 5, origin=(120.0, 80.0)), [[5000.0, 0.0]]])
    vis = make_visium(centres)
    t = AffineTransform.identity()
    a = sf.tl.map_to_spots(msi, vis, transform=t)
    b = sf.tl.map_to_spots(msi, vis, transform=t, layer="dense")
    assert sparse.issparse(a.X) and isinstance(b.X, np.ndarray)
    np.testing.assert_allclose(a.X.toarray(), b.X, rtol=1e-6)
    zero = sf.tl.map_to_spots(msi, vis, transform=t, fill_value=0.0)
    assert zero.X[-1].nnz == 0 and not zero.obs["has_msi"].iloc[-1]


def test_offset_and_scattered_acquisitions():
    # Grid positions that do not start at 1 keep their place; two regions far apart use the
    # sorted-key look-up instead of a dense table.
    import anndata as ad

    a = make_msi(10, 10, 50.0, X=lambda p: np.full((len(p), 1), 1.0), origin=(11, 1))
    b = make_msi(10, 10, 50.0, X=lambda p: np.full((len(p), 1), 2.0), origin=(200001, 1))
    both = ad.concat([a, b])
    both.uns["spatialfuse"] = a.uns["spatialfuse"]
    centres = [[750.0, 250.0], [200.0, 250.0], [10_000_000.0 + 250.0, 250.0]]
    out = sf.tl.map_to_spots(both, make_visium(centres), transform=AffineTransform.identity())
    np.testing.assert_allclose(out.X[[0, 2], 0], [1.0, 2.0])
    assert not out.obs["has_msi"].iloc[1]  # x = 200 µm lies left of grid column 11


def test_errors_are_clear():
    msi = make_msi(5, 5, 50.0)
    vis = make_visium([[100.0, 100.0]])
    t = AffineTransform.identity()
    no_size = msi.copy()
    no_size.uns["spatialfuse"] = {}
    with pytest.raises(ValueError, match="pixel size"):
        sf.tl.map_to_spots(no_size, vis, transform=t)
    no_grid = msi.copy()
    del no_grid.obs["imzml_x"]
    with pytest.raises(ValueError, match="imzml_x"):
        sf.tl.map_to_spots(no_grid, vis, transform=t)
    moved = msi.copy()
    moved.obsm["spatial"] = moved.obsm["spatial"] * 2
    with pytest.raises(ValueError, match="own frame"):
        sf.tl.map_to_spots(moved, vis, transform=t)
    with pytest.raises(TypeError, match="AffineTransform"):
        sf.tl.map_to_spots(msi, vis, transform=np.eye(3))
    with pytest.raises(TypeError, match="Transform"):
        sf.tl.map_to_pixels(vis, msi, transform="identity")
    with pytest.raises(TypeError, match="AnnData"):
        sf.tl.map_to_spots(np.zeros((3, 3)), vis, transform=t)
    no_um = vis.copy()
    del no_um.obsm["spatial_um"]
    with pytest.raises(ValueError, match="spatial_um"):
        sf.tl.map_to_spots(msi, no_um, transform=t)
    with pytest.raises(ValueError, match="spatial_um"):
        sf.tl.map_to_pixels(no_um, msi, transform=t)
    # Swapped arguments: the Visium AnnData has no MSI layout.
    with pytest.raises(ValueError, match="pixel size"):
        sf.tl.map_to_spots(vis, msi, transform=t)
    for kwargs, pattern in (
        ({"method": "circle"}, "method"),
        ({"aggregate": "median"}, "aggregate"),
        ({"n_samples": 1}, "n_samples"),
        ({"spot_diameter_um": -1}, "spot_diameter_um"),
        ({"min_coverage": 2}, "min_coverage"),
        ({"method": "overlap", "overlap_fraction": 0}, "overlap_fraction"),
        ({"layer": "nope"}, "layer"),
    ):
        with pytest.raises(ValueError, match=pattern):
            sf.tl.map_to_spots(msi, vis, transform=t, **kwargs)
    dup = make_msi(3, 3, 50.0)
    dup.obs["imzml_x"] = 1
    dup.obsm.pop("spatial")
    with pytest.raises(ValueError, match="share the grid position"):
        sf.tl.map_to_spots(dup, vis, transform=t)
    three_d = msi.copy()
    three_d.obs["imzml_z"] = np.arange(msi.n_obs) % 2 + 1
    with pytest.raises(ValueError, match="3-D"):
        sf.tl.map_to_spots(three_d, vis, transform=t)


def test_wrong_direction_warns():
    msi = make_msi(10, 10, 50.0)
    vis = make_visium([[200.0, 200.0]])
    far = AffineTransform.from_params(translation=(1e5, 0.0))
    with pytest.warns(DataWarning, match="not the reverse"):
        out = sf.tl.map_to_spots(msi, vis, transform=far)
    assert not out.obs["has_msi"].any()


# -------------------------------------------------------------------------------------------------
# map_to_pixels
# -------------------------------------------------------------------------------------------------


def test_map_to_pixels_nearest_known_answer():
    from scipy import sparse

    msi = make_msi(30, 30, 10.0)
    centres = hex_lattice(3, 3, origin=(60.0, 60.0))
    expression = np.arange(1, len(centres) + 1, dtype=np.float32)[:, None] * [1.0, 10.0]
    vis = make_visium(centres, X=sparse.csr_matrix(expression.astype(np.float32)))
    t = AffineTransform.from_params(rotation_deg=12.0, translation=(5.0, -3.0), center=(150, 150))
    vis_t = make_visium(t.apply(centres), X=sparse.csr_matrix(expression.astype(np.float32)))
    out = sf.tl.map_to_pixels(vis_t, msi, transform=t)
    assert out.n_obs == msi.n_obs and list(out.obs_names) == list(msi.obs_names)
    assert list(out.var_names) == list(vis.var_names)
    assert sparse.issparse(out.X)
    X = out.X.toarray()
    # A pixel under spot s (its centre within the disc, in the Visium frame) has s's expression.
    mapped = t.apply(msi.obsm["spatial"])
    d = np.sqrt(((mapped[:, None, :] - t.apply(centres)[None, :, :]) ** 2).sum(axis=2))
    under = d.min(axis=1) <= R
    np.testing.assert_array_equal(out.obs["has_visium"], under)
    np.testing.assert_allclose(X[under], expression[d[under].argmin(axis=1)])
    assert (X[~under] == 0).all()
    assert (out.obs["visium_barcode"][under] == vis.obs_names[d[under].argmin(axis=1)]).all()
    assert out.obs["visium_barcode"][~under].isna().all()
    np.testing.assert_allclose(out.obsm["spatial_visium_um"], mapped)
    assert out.uns["spatialfuse"]["pixel_size_um"] == [10.0, 10.0]
    assert out.uns["spatialfuse"]["mapping"]["method"] == "nearest"
    # Each spot's disc (π·27.5² µm² ≈ 23.8 pixels of 100 µm²) holds about that many pixels.
    per_spot = np.bincount(d[under].argmin(axis=1), minlength=len(centres))
    inside = ((centres > R + 10) & (centres < 300 - R - 10)).all(axis=1)
    assert inside.sum() >= 4
    assert np.all(np.abs(per_spot[inside] - math.pi * R * R / 100.0) <= 6)
    # The result keeps the read_imzml layout, so it maps back onto the spots (the pixel nearest
    # to a spot's centre lies under that spot).
    back = sf.tl.map_to_spots(out, vis_t, transform=t, method="nearest")
    np.testing.assert_allclose(back.X.toarray()[:, 0], expression[:, 0], rtol=1e-6)


def test_map_to_pixels_gaussian_and_genes():
    msi = make_msi(40, 40, 10.0)
    centres = hex_lattice(4, 4, origin=(50.0, 50.0))
    rng = np.random.default_rng(1)
    expression = rng.random((len(centres), 3)).astype(np.float32)
    vis = make_visium(centres, X=expression)
    t = AffineTransform.identity()
    out = sf.tl.map_to_pixels(
        vis, msi, transform=t, method="gaussian", genes=["gene2", "gene0"], key_added="gauss"
    )
    assert list(out.var_names) == ["gene2", "gene0"]
    assert "gauss" in out.uns["spatialfuse"]
    sigma = R
    mapped = msi.obsm["spatial"]
    d2 = ((mapped[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    w = np.exp(-d2 / (2 * sigma**2)) * (d2 <= (3 * sigma) ** 2)
    has = w.sum(axis=1) > 0
    expected = (w @ expression[:, [2, 0]])[has] / w.sum(axis=1)[has][:, None]
    np.testing.assert_array_equal(out.obs["has_visium"], has)
    np.testing.assert_allclose(out.X[has], expected, rtol=1e-5)
    assert (out.X[~has] == 0).all()
    # A constant expression stays constant wherever a spot is in reach.
    const = make_visium(centres, X=np.full((len(centres), 1), 4.0, dtype=np.float32))
    flat = sf.tl.map_to_pixels(const, msi, transform=t, method="gaussian", fill_value=np.nan)
    has = flat.obs["has_visium"].to_numpy()
    np.testing.assert_allclose(flat.X[has], 4.0, rtol=1e-6)
    assert np.isnan(flat.X[~has]).all()
    with pytest.raises(ValueError, match="genes"):
        sf.tl.map_to_pixels(vis, msi, transform=t, genes=["nope"])
    with pytest.raises(ValueError, match="method"):
        sf.tl.map_to_pixels(vis, msi, transform=t, method="area")


def test_public_api_conventions():
    import inspect

    for fn in (sf.tl.map_to_spots, sf.tl.map_to_pixels):
        params = inspect.signature(fn).parameters
        positional = [
            p for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        ]
        assert len(positional) == 2
        assert params["transform"].kind is inspect.Parameter.KEYWORD_ONLY
        assert "Returns" in fn.__doc__ and "Slots written" in fn.__doc__
    assert isinstance(AffineTransform.identity(), Transform)


def test_dask_backed_msi_is_mapped_without_loading_everything():
    """A lazy (dask) MSI table gives the same spot values as the in-memory one."""
    da = pytest.importorskip("dask.array")
    msi = make_msi(40, 30, 50.0)
    visium = make_visium(hex_lattice(6, 8, origin=(300.0, 300.0)))
    identity = AffineTransform.identity()
    eager = sf.tl.map_to_spots(msi, visium, transform=identity)
    lazy_msi = msi.copy()
    lazy_msi.X = da.from_array(np.asarray(msi.X), chunks=(200, 3))
    lazy = sf.tl.map_to_spots(lazy_msi, visium, transform=identity)
    np.testing.assert_array_equal(np.asarray(lazy.X), np.asarray(eager.X))
