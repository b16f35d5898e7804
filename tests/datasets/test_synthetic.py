"""The synthetic trio: files readable by spatialfuse's readers, and a ground truth that is right."""

from __future__ import annotations

import ast
import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.datasets import SyntheticTrio, synthetic_trio
from spatialfuse.reg import AffineTransform, CompositeTransform, DisplacementField, Transform

SMALL = dict(
    tissue_size_um=(1500.0, 1200.0),
    he_pixel_size_um=2.0,
    msi_pixel_size_um=40.0,
    n_ions=60,
    n_genes=80,
)
_ELAPSED: dict[str, float] = {}
# region pairs that exactly one modality separates
MSI_ONLY = (0, 1)  # tumor_a / tumor_b
GENES_ONLY = (2, 3)  # stroma / reactive_stroma
HE_ONLY = (4, 5)  # vascular / adipose


def _dense(x) -> np.ndarray:
    return np.asarray(x.todense() if hasattr(x, "todense") else x, dtype=np.float64)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def default_trio(tmp_path_factory) -> SyntheticTrio:
    """The default settings, timed (the runtime test reads the timing)."""
    folder = tmp_path_factory.mktemp("default")
    start = time.perf_counter()
    trio = synthetic_trio(folder / "trio", seed=0)
    _ELAPSED["default"] = time.perf_counter() - start
    return trio


@pytest.fixture(scope="module")
def default_msi(default_trio):
    return sf.io.read_imzml(default_trio.msi)


@pytest.fixture(scope="module")
def default_visium(default_trio):
    return sf.io.read_visium(default_trio.visium)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SyntheticTrio:
    return synthetic_trio(tmp_path_factory.mktemp("small") / "trio", seed=7, **SMALL)


@pytest.fixture(scope="module")
def warped(tmp_path_factory) -> SyntheticTrio:
    """Continuous MSI with rectangular pixels and a nonrigid warp."""
    params = {**SMALL, "msi_pixel_size_um": (40.0, 50.0)}
    return synthetic_trio(
        tmp_path_factory.mktemp("warped") / "trio",
        seed=11,
        msi_mode="continuous",
        warp_um=25.0,
        **params,
    )


# --------------------------------------------------------------------------------------------------
# determinism and API


def test_same_seed_same_bytes_and_truth(tmp_path):
    a = synthetic_trio(tmp_path / "a", seed=3, warp_um=15.0, **SMALL)
    b = synthetic_trio(tmp_path / "b", seed=3, warp_um=15.0, **SMALL)
    files_a, files_b = _files(a.folder), _files(b.folder)
    assert set(files_a) == set(files_b)
    assert {"he.ome.tif", "he_serial.ome.tif", "msi.imzML", "msi.ibd", "truth.json"} <= set(files_a)
    for name in files_a:
        assert files_a[name] == files_b[name], name
    assert a.msi_to_he == b.msi_to_he and a.visium_to_he == b.visium_to_he
    assert a.msi_to_visium == b.msi_to_visium
    assert a.params == b.params
    for field in ("label_map", "msi_labels", "msi_fractions", "spot_labels", "landmarks_msi_um"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    # the UUID comes from the seed: same in the imzML XML and the first 16 ibd bytes
    uuid = sf.io.read_imzml(a.msi).uns["spatialfuse"]["uuid"]
    assert a.msi_ibd.read_bytes()[:16].hex() == uuid

    c = synthetic_trio(tmp_path / "c", seed=4, warp_um=15.0, **SMALL)
    files_c = _files(c.folder)
    for name in ("he.ome.tif", "msi.ibd", "visium/spatial/tissue_positions.csv"):
        assert files_c[name] != files_a[name]
    assert c.msi_to_he != a.msi_to_he
    assert not np.array_equal(c.label_map, a.label_map)


def test_default_runtime(default_trio):
    elapsed = _ELAPSED["default"]
    print(f"synthetic_trio() at defaults: {elapsed:.2f} s; stages: {default_trio.timings}")
    assert elapsed < 20.0


def test_temporary_folder_and_repr():
    trio = synthetic_trio(seed=1, **SMALL)
    try:
        assert trio.folder.is_dir() and trio.he.is_file() and trio.msi_ibd.is_file()
        assert "SyntheticTrio(seed=1" in repr(trio)
    finally:
        shutil.rmtree(trio.folder)


def test_given_parameters_are_used_and_drawn_ones_are_in_range(tmp_path, small):
    trio = synthetic_trio(
        tmp_path / "t", seed=2, rotation_deg=30.0, mirror=False, scale=1.05, shear=0.0, **SMALL
    )
    p = trio.params["msi_affine"]
    assert p["rotation_deg"] == 30.0 and p["mirror"] is False
    assert p["scale"] == [1.05, 1.05] and p["shear"] == 0.0
    assert trio.params["drawn"] == ["serial_rotation_deg"]
    d = trio.msi_affine.decompose()
    assert d["rotation_deg"] == pytest.approx(30.0) and not d["mirror"]

    p = small.params["msi_affine"]
    assert 0.0 <= p["rotation_deg"] < 360.0
    assert all(0.88 <= s <= 1.12 for s in p["scale"]) and -0.05 <= p["shear"] <= 0.05
    assert set(small.params["drawn"]) >= {"rotation_deg", "mirror", "scale", "shear"}
    # the params rebuild the transforms exactly
    for name in ("msi_affine", "visium_affine"):
        rebuilt = AffineTransform.from_params(**small.params[name])
        np.testing.assert_allclose(rebuilt.matrix, getattr(small, name).matrix, atol=1e-9)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="msi_mode"):
        synthetic_trio(tmp_path, msi_mode="profile")
    with pytest.raises(ValueError, match="msi_pixel_size_um"):
        synthetic_trio(tmp_path, msi_pixel_size_um=-5)
    with pytest.raises(ValueError, match="seed"):
        synthetic_trio(tmp_path, seed=-1)
    with pytest.raises(ValueError, match="n_ions"):
        synthetic_trio(tmp_path, n_ions=10, **{k: v for k, v in SMALL.items() if k != "n_ions"})


def test_truth_json_round_trips(small):
    truth = json.loads(small.truth_file.read_text())
    assert truth["seed"] == 7
    assert Transform.from_dict(truth["transforms"]["msi_to_he"]) == small.msi_to_he
    assert Transform.from_dict(truth["transforms"]["visium_to_he"]) == small.visium_to_he
    assert [r["name"] for r in truth["regions"]] == list(small.region_names)
    np.testing.assert_array_equal(truth["landmarks_um"]["msi"], small.landmarks_msi_um)


def test_heavy_imports_are_deferred():
    import spatialfuse.datasets as package

    heavy = {"scipy", "skimage", "h5py", "anndata", "pyimzml", "PIL", "tifffile", "pandas"}
    for file in Path(package.__file__).parent.glob("*.py"):
        tree = ast.parse(file.read_text())
        top = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                top.add(node.module.split(".")[0])
        assert not top & heavy, file.name


# --------------------------------------------------------------------------------------------------
# the readers read everything back


def test_readers_read_back(small):
    for path in (small.he, small.he_serial):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            img = sf.io.read_histology(path)
        assert img.pixel_size_um == (2.0, 2.0) and img.pixel_size_source == "ome"
        assert img.n_channels == 3 and img.dtype == np.uint8
    he = sf.io.read_histology(small.he)
    k = round(small.label_pixel_size_um / small.he_pixel_size_um)
    assert he.shape == (small.label_map.shape[0] * k, small.label_map.shape[1] * k)

    msi = sf.io.read_imzml(small.msi)
    info = msi.uns["spatialfuse"]
    assert info["pixel_size_um"] == [40.0, 40.0] and info["pixel_size_source"] == "file"
    assert info["mode"] == "processed"
    np.testing.assert_array_equal(msi.obs[["imzml_x", "imzml_y"]].to_numpy(), small.msi_coords)
    # the jittered centroids merge back into exactly one feature per ion
    assert msi.n_vars == len(small.ions)
    np.testing.assert_allclose(msi.var["mz"], small.ions["mz"], rtol=5e-6)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vis = sf.io.read_visium(small.visium)
    assert vis.uns["spatialfuse"]["um_per_px_source"] == "spot_pitch"
    assert vis.uns["spatialfuse"]["um_per_px"] == pytest.approx(small.visium_um_per_px, rel=0.01)
    assert list(vis.obs_names) == list(small.spot_barcodes)
    assert (vis.obs["in_tissue"] == 1).all()
    assert vis.n_vars == len(small.genes)
    assert set(vis.uns["spatial"][next(iter(vis.uns["spatial"]))]["images"]) == {"hires", "lowres"}
    raw = sf.io.read_visium(small.visium, counts_file="raw_feature_bc_matrix.h5")
    assert list(raw.obs_names) == list(small.all_spot_barcodes)
    np.testing.assert_array_equal(raw.obs["in_tissue"].to_numpy() == 1, small.all_spot_in_tissue)


def test_pyimzml_reads_the_file_too(small):
    from pyimzml.ImzMLParser import ImzMLParser

    msi = sf.io.read_imzml(small.msi, mz=small.ions["mz"].to_numpy()[:3], ppm=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = ImzMLParser(str(small.msi))
    assert [c[:2] for c in parser.coordinates] == [tuple(c) for c in small.msi_coords.tolist()]
    mz, intensity = parser.getspectrum(5)
    assert np.all(np.diff(mz) > 0) and len(mz) == len(intensity)
    assert intensity.sum() == pytest.approx(float(msi.obs["tic"].iloc[5]), rel=1e-5)


def test_continuous_warped_files(warped):
    msi = sf.io.read_imzml(warped.msi)
    assert msi.uns["spatialfuse"]["mode"] == "continuous"
    assert msi.uns["spatialfuse"]["pixel_size_um"] == [40.0, 50.0]
    assert msi.n_vars == 2000
    centres = msi.obsm["spatial"]
    np.testing.assert_allclose(centres, (warped.msi_coords - 0.5) * (40.0, 50.0))
    assert isinstance(warped.msi_to_he, CompositeTransform)
    assert isinstance(warped.msi_warp, DisplacementField)
    # the warp has the asked magnitude and does not fold
    rows, cols = warped.msi_grid_shape
    grid = np.stack(np.meshgrid(np.linspace(0, cols * 40, 40), np.linspace(0, rows * 50, 40)), -1)
    grid = grid.reshape(-1, 2)
    magnitude = np.hypot(*warped.msi_warp.displacement_at(grid).T)
    assert 15.0 < magnitude.max() < 27.0
    assert warped.msi_to_he.jacobian_determinant(grid).min() > 0.5
    for t in (warped.visium_warp,):
        assert t is not None and t.jacobian_determinant(grid).min() > 0.5


# --------------------------------------------------------------------------------------------------
# the ground truth is right


@pytest.mark.parametrize("name", ["small", "warped"])
def test_msi_pixels_land_on_their_labels(name, request):
    trio = request.getfixturevalue(name)
    centres = sf.io.read_imzml(trio.msi, mz=[500.0]).obsm["spatial"]
    labels = trio.label_at(trio.msi_to_he.apply(centres))
    np.testing.assert_array_equal(labels, trio.msi_labels)
    for r in range(len(trio.region_names)):
        assert (trio.msi_labels == r).sum() >= 5, trio.region_names[r]
    # fractions: rows sum to the tissue fraction, and pure pixels carry their centre's label
    assert np.all(trio.msi_fractions.sum(axis=1) <= 1.0 + 1e-12)
    pure = trio.msi_fractions.max(axis=1) >= 0.999
    np.testing.assert_array_equal(trio.msi_fractions[pure].argmax(axis=1), trio.msi_labels[pure])


@pytest.mark.parametrize("name", ["small", "warped", "default_trio"])
def test_marker_ions_are_high_exactly_where_their_regions_are(name, request):
    trio = request.getfixturevalue(name)
    for region in trio.region_names:
        mz = trio.marker_ions[region]
        assert len(mz) >= 2
        if trio.msi_mode == "processed":
            table = sf.io.read_imzml(trio.msi, mz=mz, ppm=10)
        else:
            table = sf.io.read_imzml(trio.msi, mz=mz, tol=0.4)
        signal = _dense(table.X).sum(axis=1)
        group = [
            i
            for i, other in enumerate(trio.region_names)
            if trio.region_design[other]["ion_group"] == trio.region_design[region]["ion_group"]
        ]
        inside = trio.msi_fractions[:, group].sum(axis=1)
        high, low = signal[inside >= 0.999], signal[inside == 0]
        assert len(high) >= 5 and len(low) >= 5
        # (processed files drop peaks below the detection limit, so "low" is often 0)
        threshold = np.sqrt(np.median(high) * max(np.median(low), 100.0))
        assert np.median(high) > 10 * np.median(low), region
        assert (high > threshold).mean() > 0.99, region
        assert (low < threshold).mean() > 0.99, region
        # the label map says the same through the pixel centres
        centre_in_group = np.isin(trio.msi_labels, group)
        assert (signal[centre_in_group] > threshold).mean() > 0.9, region
        assert (signal[~centre_in_group] < threshold).mean() > 0.9, region


def test_tic_image_is_the_tissue_under_the_transform(small):
    msi = sf.io.read_imzml(small.msi)
    rows, cols = small.msi_grid_shape
    tic = np.zeros((rows, cols))
    tic[small.msi_coords[:, 1] - 1, small.msi_coords[:, 0] - 1] = msi.obs["tic"]
    shape = (small.label_map.shape[0] // 10, small.label_map.shape[1] // 10)
    size = small.label_pixel_size_um * 10
    mask = sf.reg.resample(
        small.tissue_mask.astype(float),
        AffineTransform.identity(),
        pixel_size_um=small.label_pixel_size_um,
        output_shape=shape,
        output_pixel_size_um=size,
    )

    def corr(transform):
        image = sf.reg.resample(
            tic,
            transform,
            pixel_size_um=small.msi_pixel_size_um,
            output_shape=shape,
            output_pixel_size_um=size,
            fill=np.nan,
        )
        ok = np.isfinite(image)
        return np.corrcoef(image[ok], mask[ok])[0, 1]

    good = corr(small.msi_to_he)
    assert good > 0.7
    # a wrong map (mirrored, or rotated by 45°, about the raster's centre) fits clearly worse
    centre = (cols * small.msi_pixel_size_um[0] / 2, rows * small.msi_pixel_size_um[1] / 2)
    for wrong in (
        AffineTransform.from_params(mirror=True, center=centre),
        AffineTransform.from_params(rotation_deg=45.0, center=centre),
    ):
        assert corr(sf.reg.compose(small.msi_to_he, wrong)) < good - 0.1


@pytest.mark.parametrize("name", ["small", "default_trio"])
def test_visium_spots_land_on_their_labels(name, request):
    trio = request.getfixturevalue(name)
    vis = sf.io.read_visium(trio.visium, counts_file="raw_feature_bc_matrix.h5")
    labels = trio.label_at(trio.visium_to_he.apply(vis.obsm["spatial_um"]))
    np.testing.assert_array_equal(labels, trio.all_spot_labels)
    in_tissue = vis.obs["in_tissue"].to_numpy() == 1
    assert (labels[in_tissue] >= 0).all() and (labels[~in_tissue] == -1).all()
    assert in_tissue.sum() >= 50 and (~in_tissue).sum() >= 50
    # the spot grid: 100 µm pitch in the Visium frame
    from scipy.spatial import cKDTree

    xy = vis.obsm["spatial_um"]
    dist, _ = cKDTree(xy).query(xy, k=2)
    np.testing.assert_allclose(dist[:, 1], 100.0, rtol=1e-9)
    # marker genes are high where their group is
    counts = _dense(vis.X)
    genes = list(vis.var_names)
    for region in trio.region_names:
        cols = [genes.index(g) for g in trio.marker_genes[region]]
        group = [
            i
            for i, other in enumerate(trio.region_names)
            if trio.region_design[other]["gene_group"] == trio.region_design[region]["gene_group"]
        ]
        inside = np.zeros(len(labels))
        inside[in_tissue] = trio.spot_fractions[:, group].sum(axis=1)
        share = counts[:, cols].sum(axis=1) / np.maximum(counts.sum(axis=1), 1)
        pure_in, pure_out = share[inside >= 0.999], share[in_tissue & (inside == 0)]
        assert len(pure_in) >= 3
        assert np.median(pure_in) > 5 * np.median(pure_out), region


def test_serial_section_maps_onto_the_he(small):
    he = sf.io.read_histology(small.he)
    serial = sf.io.read_histology(small.he_serial)
    he_img, he_size = he.downsampled(factor=4)
    serial_img, serial_size = serial.downsampled(factor=4)
    moved = sf.reg.resample(
        serial_img.mean(axis=2),
        small.he_serial_to_he,
        pixel_size_um=serial_size,
        output_shape=he_img.shape[:2],
        output_pixel_size_um=he_size,
        fill=255.0,
    )
    tissue_he = he_img.mean(axis=2) < 225
    tissue_serial = moved < 225
    iou = (tissue_he & tissue_serial).sum() / (tissue_he | tissue_serial).sum()
    assert iou > 0.9
    # and the H&E itself is white exactly off tissue
    k = round(small.label_pixel_size_um / small.he_pixel_size_um)
    full = he.read()
    off = np.repeat(np.repeat(~small.tissue_mask, k, axis=0), k, axis=1)
    assert full[off].mean() > 245 and full[~off].mean() < 215


def test_landmarks_correspond(small, warped):
    for trio in (small, warped):
        assert len(trio.landmarks_he_um) >= 8
        np.testing.assert_allclose(
            trio.msi_to_he.apply(trio.landmarks_msi_um), trio.landmarks_he_um, atol=1e-6
        )
        np.testing.assert_allclose(
            trio.visium_to_he.apply(trio.landmarks_visium_um), trio.landmarks_he_um, atol=1e-6
        )
        np.testing.assert_allclose(
            trio.msi_to_visium.apply(trio.landmarks_msi_um), trio.landmarks_visium_um, atol=1e-5
        )
        # they fall inside the MSI raster and the tissue
        rows, cols = trio.msi_grid_shape
        extent = np.array([cols, rows]) * trio.msi_pixel_size_um
        assert np.all((trio.landmarks_msi_um > 0) & (trio.landmarks_msi_um < extent))
        assert (trio.label_at(trio.landmarks_he_um[-6:]) == np.arange(6)).all()


def test_same_section_visium(tmp_path):
    trio = synthetic_trio(tmp_path / "same", seed=5, serial_section=False, **SMALL)
    assert trio.he_serial is None
    assert trio.visium_to_he == AffineTransform.identity()
    vis = sf.io.read_visium(trio.visium)
    labels = trio.label_at(vis.obsm["spatial_um"])
    np.testing.assert_array_equal(labels, trio.spot_labels)
    # the full-res image is the H&E itself: the hires image is its reduction
    he = sf.io.read_histology(trio.he).read()
    hires = vis.uns["spatial"][next(iter(vis.uns["spatial"]))]["images"]["hires"]
    scale = vis.uns["spatial"][next(iter(vis.uns["spatial"]))]["scalefactors"][
        "tissue_hires_scalef"
    ]
    assert hires.shape[0] == round(he.shape[0] * scale)
    assert abs(float(hires.mean()) - float(he.mean())) < 2.0


# --------------------------------------------------------------------------------------------------
# each modality alone misses a boundary


def test_design_makes_each_modality_miss_one_pair(default_trio):
    trio = default_trio
    ions, genes = trio.ion_profiles, trio.gene_profiles
    textures = [trio.region_design[n]["texture"] for n in trio.region_names]
    same = np.array_equal
    assert not same(ions[0], ions[1]) and same(genes[0], genes[1]) and textures[0] == textures[1]
    assert same(ions[2], ions[3]) and not same(genes[2], genes[3]) and textures[2] == textures[3]
    assert same(ions[4], ions[5]) and same(genes[4], genes[5]) and textures[4] != textures[5]
    # every other pair differs in at least two modalities
    for i in range(6):
        for j in range(i + 1, 6):
            if (i, j) in (MSI_ONLY, GENES_ONLY, HE_ONLY):
                continue
            differs = [not same(ions[i], ions[j]), not same(genes[i], genes[j])]
            differs.append(textures[i] != textures[j])
            assert sum(differs) >= 2, (i, j)


def test_measured_profiles_follow_the_design(default_trio, default_msi, default_visium):
    trio = default_trio

    def mean_profiles(table, fractions):
        x = _dense(table.X)
        normalised = x / x.sum(axis=1, keepdims=True)  # TIC / library-size normalisation
        out = []
        for r in range(6):
            pure = fractions[:, r] >= 0.999
            assert pure.sum() >= 20, trio.region_names[r]
            out.append((normalised[pure].mean(axis=0), x[pure].mean(axis=0)))
        return out

    def log_difference(profiles, i, j, floor, both):
        (pi, xi), (pj, xj) = profiles[i], profiles[j]
        strong = np.minimum(xi, xj) > floor if both else np.maximum(xi, xj) > floor
        return np.abs(np.log((pi[strong] + 1e-12) / (pj[strong] + 1e-12))).max()

    ion = mean_profiles(default_msi, trio.msi_fractions)
    gene = mean_profiles(default_visium, trio.spot_fractions)
    # ions: tumor_a ≠ tumor_b, stroma = reactive_stroma, vascular = adipose
    assert log_difference(ion, *MSI_ONLY, 1000.0, both=False) > 2.0
    assert log_difference(ion, *GENES_ONLY, 1000.0, both=True) < 0.15
    assert log_difference(ion, *HE_ONLY, 1000.0, both=True) < 0.15
    # genes: tumor_a = tumor_b, stroma ≠ reactive_stroma, vascular = adipose
    assert log_difference(gene, *MSI_ONLY, 5.0, both=True) < 0.6
    assert log_difference(gene, *GENES_ONLY, 5.0, both=False) > 1.5
    assert log_difference(gene, *HE_ONLY, 5.0, both=True) < 0.6


def test_he_texture_misses_two_pairs_but_not_the_third(default_trio):
    trio = default_trio
    img, _ = sf.io.read_histology(trio.he).downsampled(factor=10)
    labels = trio.label_map[::5, ::5][: img.shape[0], : img.shape[1]]
    img = img[: labels.shape[0], : labels.shape[1]].astype(np.float64)
    means = np.array([img[labels == r].mean(axis=0) for r in range(6)])
    spread = np.array([img[labels == r].std(axis=0).mean() for r in range(6)])

    def distance(i, j):
        return np.abs(means[i] - means[j]).max() + abs(spread[i] - spread[j])

    assert distance(*MSI_ONLY) < 4.0
    assert distance(*GENES_ONLY) < 4.0
    assert distance(*HE_ONLY) > 20.0
    assert means[0].mean() < means[2].mean() < means[5].mean()  # nuclei-rich is darkest
    assert means[2][0] > means[2][1]  # eosin-rich is pink: more red than green
