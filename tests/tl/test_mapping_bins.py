"""sf.tl.map_to_bins / aggregate_bins (Visium HD bins) against exact overlaps and direct sums."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse
from test_mapping import make_msi  # tests/tl/test_mapping.py

import spatialfuse as sf
from spatialfuse._limits import limits
from spatialfuse.errors import CalibrationError, DataWarning, FileFormatError
from spatialfuse.reg import AffineTransform
from spatialfuse.tl._bins import MEASURED_SAMPLING_ERROR, BinGrid, _sampled_weights


def make_bins(
    nc,
    nr,
    size,
    *,
    rotation_deg=0.0,
    origin=(0.0, 0.0),
    start=(0, 0),
    genes=3,
    um_per_px=0.25,
    seed=0,
    drop=None,
):
    """HD-like bins: an nc × nr grid of ``size`` µm squares, rotated, as read_visium lays it out."""
    import anndata as ad
    import pandas as pd

    col, row = np.meshgrid(np.arange(nc) + start[0], np.arange(nr) + start[1])
    col, row = col.ravel(), row.ravel()
    if drop is not None:
        keep = ~drop(col, row)
        col, row = col[keep], row[keep]
    t = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * size
    centres = np.stack([col, row], axis=1) @ rot.T + np.asarray(origin)
    counts = np.random.default_rng(seed).poisson(2.0, (len(col), genes)).astype(np.float32)
    names = pd.Index(
        [f"s_{int(size):03d}um_{r:05d}_{c:05d}-1" for r, c in zip(row, col, strict=True)], dtype=str
    )
    adata = ad.AnnData(
        X=sparse.csr_matrix(counts),
        obs=pd.DataFrame(
            {"in_tissue": np.ones(len(col), np.int64), "array_row": row, "array_col": col},
            index=names,
        ),
        var=pd.DataFrame(index=pd.Index([f"g{j}" for j in range(genes)], dtype=str)),
    )
    adata.obsm["spatial"] = centres / um_per_px - 0.5
    adata.obsm["spatial_um"] = centres
    adata.uns["spatial"] = {
        "lib": {
            "images": {},
            "scalefactors": {
                "bin_size_um": float(size),
                "spot_diameter_fullres": size / um_per_px,
                "tissue_hires_scalef": 0.1,
            },
            "metadata": {},
        }
    }
    adata.uns["spatialfuse"] = {
        "um_per_px": um_per_px,
        "reader": "test",
        "positions_format": "visium_hd_parquet",
        "grid_pitch_um": float(size),
        "spot_diameter_um": float(size),
    }
    return adata


def exact_weights(bins, msi, transform):
    """Dense bins × pixels overlap areas (fraction of the bin) from shapely polygons."""
    from shapely.geometry import Polygon

    grid = BinGrid(bins)
    px, py = msi.uns["spatialfuse"]["pixel_size_um"]
    gx = np.asarray(msi.obs["imzml_x"])
    gy = np.asarray(msi.obs["imzml_y"])
    pixels = []
    for x, y in zip(gx, gy, strict=True):
        square = np.array([[x - 1, y - 1], [x, y - 1], [x, y], [x - 1, y]], float) * [px, py]
        pixels.append(Polygon(transform.apply(square)))
    out = np.zeros((grid.n, msi.n_obs))
    unit = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    for b in range(grid.n):
        corners = grid.xy[b] + unit @ grid.matrix[:, :2].T  # its own centre, the grid's shape
        cell = Polygon(corners)
        for p, pixel in enumerate(pixels):
            if cell.intersects(pixel):
                out[b, p] = cell.intersection(pixel).area / cell.area
    return out


CASES = {
    "identity": AffineTransform.from_params(),
    "rotated_stretched": AffineTransform.from_params(
        rotation_deg=30.0, scale=(1.07, 0.95), translation=(4.0, -3.0), center=(20.0, 20.0)
    ),
    "mirrored_sheared": AffineTransform.from_params(
        rotation_deg=-113.0, shear=0.1, mirror=True, translation=(60.0, 40.0), center=(20.0, 20.0)
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("bin_rotation", [0.0, 7.0])
def test_exact_overlaps_match_shapely(case, bin_rotation):
    transform = CASES[case]
    msi = make_msi(8, 7, 6.5, X=lambda c: np.eye(len(c)), drop=[(3, 3), (5, 1)])
    # 26 × 26 bins of 2 µm centred on the mapped MSI (52 × 45.5 µm): its edges and holes inside
    middle = transform.apply(np.array([[26.0, 22.75]]))[0]
    bins = make_bins(26, 26, 2.0, rotation_deg=bin_rotation, origin=middle - 25.0)
    out = sf.tl.map_to_bins(msi, bins, transform=transform, aggregate="sum", fill_value=0.0)
    reference = exact_weights(bins, msi, transform)
    det = abs(np.linalg.det(transform.as_affine().matrix[:2, :2]))
    pixel_area = 6.5 * 6.5 * det
    # aggregate="sum" of a one-hot MSI: row = overlap area / pixel area, i.e. fraction·bin/pixel
    expected = reference * 4.0 / pixel_area
    assert np.abs(np.asarray(out.X) - expected).max() < 1e-9
    np.testing.assert_allclose(out.obs["msi_coverage"], reference.sum(axis=1), atol=1e-9)
    assert (out.obs["has_msi"] == (reference.sum(axis=1) > 1e-12)).all()
    assert out.uns["spatialfuse"]["mapping"]["geometry"]["kind"] == "exact"


@pytest.mark.parametrize("pixel", [4.0, 3.0])
def test_bin_edges_on_pixel_lines(pixel):
    """Bin edges lying on pixel edges (aligned grids) count each overlap once."""
    transform = CASES["identity"]
    msi = make_msi(6, 6, pixel, X=lambda c: np.eye(len(c)))
    bins = make_bins(10, 10, 2.0, origin=(1.0, 2.0))  # x edges on even µm, y edges on odd µm
    out = sf.tl.map_to_bins(msi, bins, transform=transform, aggregate="sum", fill_value=0.0)
    expected = exact_weights(bins, msi, transform) * 4.0 / (pixel * pixel)
    assert np.abs(np.asarray(out.X) - expected).max() < 1e-12


def test_mean_of_a_linear_pattern_and_constant():
    """A linear MSI pattern: a fully covered bin's area mean is the pattern at the bin centre."""
    transform = CASES["rotated_stretched"]
    a, b, c = 0.3, -0.7, 5.0
    inverse = transform.inverse()

    def pattern(centres):
        return np.stack([a * centres[:, 0] + b * centres[:, 1] + c, np.full(len(centres), 2.5)], 1)

    msi = make_msi(30, 30, 6.5, X=pattern)
    bins = make_bins(40, 40, 2.0, rotation_deg=5.0, origin=(40.0, 40.0))
    out = sf.tl.map_to_bins(msi, bins, transform=transform)
    full = out.obs["msi_coverage"].to_numpy() > 1 - 1e-12
    assert full.sum() > 1000
    # the mean of a linear function over pixel pieces is linear in the pieces' centroids only when
    # the pixels are small; here each pixel value is the pattern at its centre, so compare with
    # the exact overlap weights instead, and the constant exactly.
    some = np.flatnonzero(full)[::25]
    reference = exact_weights(bins[some], msi, transform)
    np.testing.assert_allclose(reference.sum(axis=1), 1.0, atol=1e-9)
    ref_mean = reference @ np.asarray(msi.X)[:, 0]
    np.testing.assert_allclose(np.asarray(out.X)[some, 0], ref_mean, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.X)[full, 1], 2.5, rtol=1e-12)
    centre_msi = inverse.apply(bins.obsm["spatial_um"][full])
    # within a pixel of the pattern at the bin centre
    err = np.abs(np.asarray(out.X)[full, 0] - (centre_msi @ [a, b] + c))
    assert err.max() <= (abs(a) + abs(b)) * 6.5


def test_chunks_and_block_limit_do_not_change_the_result():
    transform = CASES["rotated_stretched"]
    msi = make_msi(12, 12, 6.5, n_features=4)
    bins = make_bins(40, 36, 2.0, origin=(10.0, 10.0))
    whole = sf.tl.map_to_bins(msi, bins, transform=transform)
    with limits(max_block_bytes=1):
        small = sf.tl.map_to_bins(msi, bins, transform=transform, show_progress=True)
    assert small.uns["spatialfuse"]["mapping"]["bins_per_chunk"] == 1024
    np.testing.assert_array_equal(np.asarray(whole.X), np.asarray(small.X))
    sparse_in = msi.copy()
    sparse_in.X = sparse.csr_matrix(np.asarray(msi.X))
    out = sf.tl.map_to_bins(sparse_in, bins, transform=transform, fill_value=0.0)
    expected = np.nan_to_num(np.asarray(whole.X), nan=0.0)
    np.testing.assert_allclose(out.X.toarray(), expected, rtol=1e-6)


def test_map_to_spots_routes_hd_bins_and_layout():
    transform = CASES["identity"]
    msi = make_msi(6, 6, 10.0)
    bins = make_bins(15, 15, 2.0, origin=(20.0, 20.0))
    out = sf.tl.map_to_spots(msi, bins, transform=transform)
    direct = sf.tl.map_to_bins(msi, bins, transform=transform)
    np.testing.assert_array_equal(np.asarray(out.X), np.asarray(direct.X))
    record = out.uns["spatialfuse"]["mapping"]
    assert record["method"] == "bin_area" and record["bin_size_um"] == 2.0
    assert list(out.obs_names) == list(bins.obs_names)
    for key in ("n_msi_pixels", "msi_coverage", "has_msi", "array_row", "array_col"):
        assert key in out.obs
    assert out.uns["spatialfuse"]["modality"] == "msi" and "spatial" in out.uns
    # the old path treated each 2 µm bin as a 55 µm disc: far wider than the bin
    import anndata as ad

    as_spots = ad.AnnData(obs=bins.obs, obsm={"spatial_um": bins.obsm["spatial_um"]})
    old = sf.tl.map_to_spots(msi, as_spots, transform=transform)
    assert (old.obs["n_msi_pixels"] > out.obs["n_msi_pixels"]).any()
    # other rules keep treating bins as points
    radius = sf.tl.map_to_spots(msi, bins, transform=transform, method="radius")
    assert radius.uns["spatialfuse"]["mapping"]["method"] == "radius"


def test_sampling_error_against_exact_overlap():
    """The documented error of the ``s × s`` sampling (the nonrigid path) against exact areas."""
    from spatialfuse.core.msi_raster import MsiRaster

    msi = make_msi(10, 10, 6.5, X=lambda c: np.eye(len(c)))
    raster = MsiRaster.from_anndata(msi)
    worst = {s: [0.0, 0.0] for s in MEASURED_SAMPLING_ERROR}
    for case in ("rotated_stretched", "mirrored_sheared"):
        transform = CASES[case]
        middle = transform.apply(np.array([[32.5, 32.5]]))[0]
        bins = make_bins(26, 26, 2.0, origin=middle - 25.0)
        grid = BinGrid(bins)
        exact = sf.tl.map_to_bins(msi, bins, transform=transform, aggregate="sum", fill_value=0)
        det = abs(np.linalg.det(transform.as_affine().matrix[:2, :2]))
        fraction = np.asarray(exact.X) * 6.5 * 6.5 * det / 4.0
        for s in MEASURED_SAMPLING_ERROR:
            sampled = _sampled_weights(grid.xy, grid, transform, raster, s)[0].toarray()
            err = np.abs(sampled - fraction)
            touched = (sampled > 0) | (fraction > 0)
            worst[s][0] = max(worst[s][0], float(err.max()))
            worst[s][1] = max(worst[s][1], float(np.sqrt((err[touched] ** 2).mean())))
    for s, (bound, rms) in MEASURED_SAMPLING_ERROR.items():
        assert worst[s][0] <= bound, (s, worst[s])
        assert worst[s][1] <= rms, (s, worst[s])
        assert worst[s][0] > 0.8 * bound, (s, worst[s])  # the stated number is the measured one
    forced = sf.tl.map_to_bins(msi, bins, transform=CASES["mirrored_sheared"], subsamples=4)
    assert forced.uns["spatialfuse"]["mapping"]["geometry"]["subsamples"] == 4


def test_nonrigid_transform_uses_sampling():
    from test_mapping import smooth_field

    transform = sf.reg.compose(AffineTransform.from_params(rotation_deg=10.0), smooth_field())
    msi = make_msi(10, 10, 20.0)
    bins = make_bins(20, 20, 8.0, origin=(40.0, 40.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        out = sf.tl.map_to_bins(msi, bins, transform=transform)
    geometry = out.uns["spatialfuse"]["mapping"]["geometry"]
    assert geometry["kind"] == "sampled" and geometry["subsamples"] == 4
    assert out.obs["has_msi"].any()


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("start", [(0, 0), (3, 5)])
def test_aggregate_matches_direct_computation(factor, start):
    transform = CASES["rotated_stretched"]
    msi = make_msi(14, 14, 6.5, n_features=3)
    fine = make_bins(24, 20, 2.0, rotation_deg=3.0, origin=(15.0, 12.0), start=start)
    size = 2.0 * factor
    coarse_rna = sf.tl.aggregate_bins(fine, size)
    # counts: the direct sum of each k × k block
    col, row = fine.obs["array_col"].to_numpy(), fine.obs["array_row"].to_numpy()
    X = fine.X.toarray()
    for name, r, c in zip(
        coarse_rna.obs_names, coarse_rna.obs["array_row"], coarse_rna.obs["array_col"], strict=True
    ):
        members = (col // factor == c) & (row // factor == r)
        np.testing.assert_allclose(coarse_rna[name].X.toarray().ravel(), X[members].sum(axis=0))
        assert coarse_rna.obs.loc[name, "n_bins"] == members.sum()
    assert coarse_rna.uns["spatialfuse"]["aggregated"]["how"] == "sum"
    assert coarse_rna.uns["spatial"]["lib"]["scalefactors"]["bin_size_um"] == size
    # the coarse grid is a bin grid of its own: mapping onto it = aggregating the fine mapping
    fine_msi = sf.tl.map_to_bins(msi, fine, transform=transform)
    coarse_msi = sf.tl.aggregate_bins(fine_msi, size)
    direct = sf.tl.map_to_bins(msi, coarse_rna, transform=transform)
    complete = coarse_rna.obs["n_bins"].to_numpy() == factor * factor
    a, b = np.asarray(coarse_msi.X)[complete], np.asarray(direct.X)[complete]
    np.testing.assert_allclose(a, b, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(
        coarse_msi.obs["msi_coverage"].to_numpy()[complete],
        direct.obs["msi_coverage"].to_numpy()[complete],
        atol=1e-9,
    )
    np.testing.assert_allclose(
        coarse_rna.obsm["spatial_um"], direct.obsm["spatial_um"], rtol=0, atol=0
    )
    # centres: the mean of the member centres for complete blocks
    mean_centre = np.stack(
        [
            fine.obsm["spatial_um"][(col // factor == c) & (row // factor == r)].mean(axis=0)
            for r, c in zip(coarse_rna.obs["array_row"], coarse_rna.obs["array_col"], strict=True)
        ]
    )
    np.testing.assert_allclose(coarse_rna.obsm["spatial_um"][complete], mean_centre[complete])


def test_aggregate_mean_weights_by_coverage_and_skips_unmeasured():
    fine = make_bins(4, 2, 2.0, genes=1)
    fine.X = np.array([[1.0], [3.0], [np.nan], [5.0], [2.0], [2.0], [2.0], [2.0]])
    fine.obs["msi_coverage"] = [1.0, 0.5, 0.0, 0.25, 1.0, 1.0, 1.0, 1.0]
    fine.obs["has_msi"] = [True, True, False, True, True, True, True, True]
    fine.uns["spatialfuse"]["modality"] = "msi"
    fine.uns["spatialfuse"]["mapping"] = {"aggregate": "mean", "fill_value": float("nan")}
    out = sf.tl.aggregate_bins(fine, 4.0)
    # block (0,0): bins (0,0)=1 cov 1, (1,0)=3 cov .5, (0,1)=2, (1,1)=2
    np.testing.assert_allclose(out.X[0, 0], (1 + 1.5 + 2 + 2) / 3.5)
    np.testing.assert_allclose(out.X[1, 0], (0.25 * 5 + 2 + 2) / 2.25)
    np.testing.assert_allclose(out.obs["msi_coverage"], [3.5 / 4, 2.25 / 4])
    assert out.uns["spatialfuse"]["aggregated"]["how"] == "mean"
    fine.uns["spatialfuse"]["mapping"]["aggregate"] = "sum"
    summed = sf.tl.aggregate_bins(fine, 4.0)
    assert summed.uns["spatialfuse"]["aggregated"]["how"] == "sum"
    np.testing.assert_allclose(summed.X[:, 0], [1 + 3 + 2 + 2, 5 + 2 + 2])  # the NaN bin skipped
    # a coarse bin none of whose bins has MSI data: the fill value, not 0
    unmeasured = fine.obs["array_col"].to_numpy() >= 2
    fine.obs["has_msi"] = ~unmeasured
    gone = sf.tl.aggregate_bins(fine, 4.0)
    assert gone.X[0, 0] == 1 + 3 + 2 + 2 and np.isnan(gone.X[1, 0])
    assert list(gone.obs["has_msi"]) == [True, False]


def test_errors():
    msi = make_msi(4, 4, 10.0)
    transform = CASES["identity"]
    bins = make_bins(5, 5, 2.0)
    jitter = bins.copy()
    jitter.obsm["spatial_um"] = jitter.obsm["spatial_um"].copy()
    jitter.obsm["spatial_um"][7] += [0.7, 0.0]
    with pytest.raises(FileFormatError, match="not on a regular grid: the bin at array_row 1"):
        sf.tl.map_to_bins(msi, jitter, transform=transform)
    with pytest.raises(FileFormatError, match="not on a regular grid"):
        sf.tl.aggregate_bins(jitter, 8)
    unknown = bins.copy()
    del unknown.uns["spatial"]["lib"]["scalefactors"]["bin_size_um"]
    del unknown.uns["spatialfuse"]["grid_pitch_um"]
    with pytest.raises(CalibrationError, match="unknown bin size"):
        sf.tl.map_to_bins(msi, unknown, transform=transform)
    with pytest.raises(CalibrationError, match="unknown bin size"):
        sf.tl.aggregate_bins(unknown, 8)
    bad = bins.copy()
    bad.uns["spatial"]["lib"]["scalefactors"]["bin_size_um"] = -2
    with pytest.raises(CalibrationError, match="positive number"):
        sf.tl.map_to_bins(msi, bad, transform=transform)
    for size in (3.0, 1.0, 0, "x", float("nan")):
        with pytest.raises(ValueError, match="whole multiple of the bins' size 2 µm"):
            sf.tl.aggregate_bins(bins, size)
    with pytest.raises(ValueError, match="how must be one of"):
        sf.tl.aggregate_bins(bins, 8, how="median")
    with pytest.raises(ValueError, match="aggregate must be one of"):
        sf.tl.map_to_bins(msi, bins, transform=transform, aggregate="max")
    with pytest.raises(ValueError, match="subsamples"):
        sf.tl.map_to_bins(msi, bins, transform=transform, subsamples=0)
    with pytest.raises(TypeError, match="must be a spatialfuse Transform"):
        sf.tl.map_to_bins(msi, bins, transform=np.eye(3))
    no_grid = bins.copy()
    del no_grid.obs["array_col"]
    with pytest.raises(FileFormatError, match=r"lacks obs\['array_col'\]"):
        sf.tl.map_to_bins(msi, no_grid, transform=transform)
    stretched = make_bins(5, 5, 2.0)
    stretched.uns["spatial"]["lib"]["scalefactors"]["bin_size_um"] = 2.5
    with pytest.warns(DataWarning, match="pitch is 2 × 2 µm but its bin size is 2.5"):
        sf.tl.map_to_bins(msi, stretched, transform=transform)
    far = AffineTransform.from_params(translation=(1e4, 1e4))
    with pytest.warns(DataWarning, match="none of the 25 Visium HD bins overlaps"):
        sf.tl.map_to_bins(msi, bins, transform=far)


@pytest.mark.parametrize(("nc", "nr"), [(6, 1), (1, 6), (1, 1)])
def test_a_line_or_one_bin_is_a_grid(nc, nr):
    bins = make_bins(nc, nr, 8.0, rotation_deg=10.0 if nc * nr > 1 else 0.0, origin=(30.0, 30.0))
    grid = BinGrid(bins)
    t = np.deg2rad(10.0 if nc * nr > 1 else 0.0)
    expected = 8.0 * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    np.testing.assert_allclose(grid.matrix[:, :2], expected, atol=1e-9)
    out = sf.tl.map_to_bins(make_msi(10, 10, 10.0), bins, transform=CASES["identity"])
    assert out.obs["has_msi"].all()


def _load_test_module(folder: str, name: str):
    """A test module of another tests/ folder, by path (test folders are not packages)."""
    import importlib.util
    import sys
    from pathlib import Path

    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_read_visium_hd_bin_folder_end_to_end(tmp_path):
    """A Space Ranger HD bin folder read by read_visium maps as squares and aggregates."""
    visium_tests = _load_test_module("io", "test_visium")
    HD_SCALEFACTORS, _make_hd_bin = visium_tests.HD_SCALEFACTORS, visium_tests._make_hd_bin

    bin_dir, _ = _make_hd_bin(tmp_path / "outs", scalefactors=HD_SCALEFACTORS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        bins = sf.io.read_visium(bin_dir)
    assert sf.tl._bins.is_hd_bins(bins)
    transform = AffineTransform.from_params(rotation_deg=20.0, translation=(30.0, 10.0))
    msi = make_msi(12, 12, 10.0, X=lambda c: np.eye(len(c)))
    out = sf.tl.map_to_spots(msi, bins, transform=transform, aggregate="sum", fill_value=0.0)
    assert out.uns["spatialfuse"]["mapping"]["method"] == "bin_area"
    # the bins are the fitted grid's cells: 29.2184 px × 0.2738 µm/px = 7.999998 µm, not 8
    area = BinGrid(bins).area_um2
    assert area == pytest.approx(64.0, rel=1e-6)
    expected = exact_weights(bins, msi, transform) * area / 100.0
    assert np.abs(np.asarray(out.X) - expected).max() < 1e-9
    coarse = sf.tl.aggregate_bins(bins, 16)
    assert coarse.n_obs == 18  # 6 in-tissue rows × 12 columns of 8 µm → 3 × 6 blocks of 16 µm
    np.testing.assert_allclose(coarse.X.sum(axis=0), bins.X.sum(axis=0))
    assert coarse.uns["spatial"]["square_008um"]["scalefactors"]["bin_size_um"] == 16.0


def test_dask_msi_matches_dense():
    import dask.array as da

    transform = CASES["rotated_stretched"]
    msi = make_msi(12, 12, 6.5, n_features=5)
    bins = make_bins(30, 30, 2.0, origin=(10.0, 10.0))
    dense = sf.tl.map_to_bins(msi, bins, transform=transform)
    lazy = msi.copy()
    lazy.X = da.from_array(np.asarray(msi.X), chunks=(20, 2))
    with limits(max_block_bytes=1):
        out = sf.tl.map_to_bins(lazy, bins, transform=transform)
    np.testing.assert_allclose(np.asarray(out.X), np.asarray(dense.X), rtol=1e-6, equal_nan=True)


def test_bins_larger_than_pixels_match_shapely():
    """16 µm bins over 3 µm pixels: each bin gathers many pixels, cut ones at its edges."""
    transform = CASES["mirrored_sheared"]
    msi = make_msi(20, 18, 3.0, X=lambda c: np.eye(len(c)), drop=[(7, 7), (8, 7)])
    middle = transform.apply(np.array([[30.0, 27.0]]))[0]
    bins = make_bins(5, 5, 16.0, rotation_deg=12.0, origin=middle - 32.0)
    out = sf.tl.map_to_bins(msi, bins, transform=transform, aggregate="sum", fill_value=0.0)
    det = abs(np.linalg.det(transform.as_affine().matrix[:2, :2]))
    expected = exact_weights(bins, msi, transform) * 256.0 / (9.0 * det)
    assert np.abs(np.asarray(out.X) - expected).max() < 1e-9
    assert out.obs["n_msi_pixels"].max() > 20


def test_overlap_rule_on_bin_squares():
    transform = CASES["rotated_stretched"]
    msi = make_msi(8, 8, 6.5, n_features=2)
    middle = transform.apply(np.array([[26.0, 26.0]]))[0]
    bins = make_bins(12, 12, 4.0, origin=middle - 22.0)
    out = sf.tl.map_to_spots(msi, bins, transform=transform, method="overlap", fill_value=0.0)
    assert out.uns["spatialfuse"]["mapping"]["method"] == "bin_overlap"
    fraction = exact_weights(bins, msi, transform)
    chosen = fraction >= 0.2
    counts = chosen.sum(axis=1)
    X = np.asarray(msi.X, dtype=np.float64)
    expected = np.where(counts[:, None] > 0, chosen @ X / np.maximum(counts, 1)[:, None], 0.0)
    np.testing.assert_allclose(np.asarray(out.X), expected, rtol=1e-6)
    np.testing.assert_array_equal(out.obs["n_msi_pixels"], counts)
    with pytest.raises(ValueError, match="overlap_fraction must lie in"):
        sf.tl.map_to_bins(msi, bins, transform=transform, overlap_fraction=0)


def test_bins_off_the_fitted_grid_sit_on_their_own_centres():
    """A smooth distortion of the bin centres (< a quarter bin) is followed, bin by bin."""
    transform = CASES["rotated_stretched"]
    msi = make_msi(10, 10, 6.5, X=lambda c: np.eye(len(c)))
    middle = transform.apply(np.array([[32.5, 32.5]]))[0]
    bins = make_bins(20, 20, 2.0, origin=middle - 20.0)
    xy = bins.obsm["spatial_um"]
    bins.obsm["spatial_um"] = xy + 0.3 * np.sin((xy - xy.min(axis=0)) / 15.0)  # up to 0.3 µm
    out = sf.tl.map_to_bins(msi, bins, transform=transform, aggregate="sum", fill_value=0.0)
    det = abs(np.linalg.det(transform.as_affine().matrix[:2, :2]))
    area = BinGrid(bins).area_um2
    expected = exact_weights(bins, msi, transform) * area / (6.5 * 6.5 * det)
    assert np.abs(np.asarray(out.X) - expected).max() < 1e-9
    assert 0.1 < BinGrid(bins).residual_um < 0.5
    coarse = sf.tl.aggregate_bins(bins, 8)
    col, row = bins.obs["array_col"].to_numpy(), bins.obs["array_row"].to_numpy()
    mean_centre = np.stack(
        [
            bins.obsm["spatial_um"][(col // 4 == c) & (row // 4 == r)].mean(axis=0)
            for r, c in zip(coarse.obs["array_row"], coarse.obs["array_col"], strict=True)
        ]
    )
    np.testing.assert_allclose(coarse.obsm["spatial_um"], mean_centre, atol=1e-9)
