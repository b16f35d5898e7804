from __future__ import annotations

import ast
import csv
import json
import math
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import sparse
from scipy.spatial import cKDTree

from spatialfuse.errors import DataWarning, FileFormatError, MissingFileError
from spatialfuse.io.visium import (
    SPOT_DIAMETER_UM,
    SPOT_PITCH_UM,
    describe_visium,
    read_visium,
)

# --------------------------------------------------------------------------------------------------
# independent readers and writers used as ground truth
# --------------------------------------------------------------------------------------------------


def read_positions_csv(path: Path) -> list[list[str]]:
    """Rows of a Space Ranger positions CSV, header removed, read with the csv module."""
    with open(path, newline="") as fh:
        rows = [row for row in csv.reader(fh) if row]
    if rows[0][0] == "barcode":
        rows = rows[1:]
    return rows


def positions_frame(rows: list[list[str]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "in_tissue": [int(r[1]) for r in rows],
            "array_row": [int(r[2]) for r in rows],
            "array_col": [int(r[3]) for r in rows],
            "pxl_row": [float(r[4]) for r in rows],
            "pxl_col": [float(r[5]) for r in rows],
        },
        index=[r[0] for r in rows],
    )
    return frame


def h5_barcodes(path: Path) -> list[str]:
    with h5py.File(path, "r") as fh:
        return [b.decode() for b in fh["matrix/barcodes"][()]]


def nn_median(xy: np.ndarray) -> float:
    dist, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(dist[:, 1]))


def affine_pitch_px(frame: pd.DataFrame) -> float:
    """Spot pitch from a least-squares affine fit array (row, col) -> full-res px.

    Independent of nearest neighbours: works on any subset of spots. Two columns apart on the hex
    grid is one pitch.
    """
    design = np.column_stack([frame["array_row"], frame["array_col"], np.ones(len(frame))])
    target = frame[["pxl_col", "pxl_row"]].to_numpy()
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return float(np.linalg.norm(2 * coef[1]))


def write_10x_h5(
    path: Path,
    barcodes: list[str],
    n_genes: int = 5,
    *,
    library_id: str | None = "synthetic_lib",
    seed: int = 0,
) -> np.ndarray:
    """Write a 10x Genomics HDF5 feature-barcode matrix (v3 layout); return the dense counts."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.0, size=(len(barcodes), n_genes)).astype(np.int32)
    csc = sparse.csc_matrix(counts.T)  # features x barcodes, one column per barcode
    with h5py.File(path, "w") as fh:
        if library_id is not None:
            fh.attrs["library_ids"] = np.array([library_id.encode()])
        fh.attrs["chemistry_description"] = np.array([b"Visium V1 Slide"])
        fh.attrs["software_version"] = "spaceranger-test"
        fh.attrs["filetype"] = np.array([b"matrix"])
        fh.attrs["version"] = np.array([2], dtype=np.int32)
        grp = fh.create_group("matrix")
        grp["barcodes"] = np.array([b.encode() for b in barcodes])
        grp["data"] = csc.data.astype(np.int32)
        grp["indices"] = csc.indices.astype(np.int64)
        grp["indptr"] = csc.indptr.astype(np.int64)
        grp["shape"] = np.array(csc.shape, dtype=np.int32)
        feat = grp.create_group("features")
        feat["id"] = np.array([f"ENSG{i:011d}".encode() for i in range(n_genes)])
        feat["name"] = np.array([f"Gene{i}".encode() for i in range(n_genes)])
        feat["feature_type"] = np.array([b"Gene Expression"] * n_genes)
        feat["genome"] = np.array([b"GRCh38"] * n_genes)
        feat["_all_tag_keys"] = np.array([b"genome"])
    return counts


def write_png(path: Path, height: int, width: int, *, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def hex_positions(
    n_rows: int = 6,
    n_cols: int = 12,
    *,
    pitch_px: float = 150.0,
    origin: tuple[float, float] = (300.0, 200.0),
) -> pd.DataFrame:
    """Visium hex grid: neighbours along a row are 2 array columns apart, rows sqrt(3)/2 apart."""
    rows = []
    for r in range(n_rows):
        for c in range(r % 2, n_cols, 2):
            rows.append(
                {
                    "barcode": f"AAAC{r:03d}{c:03d}-1",
                    "in_tissue": int(c < n_cols // 2),
                    "array_row": r,
                    "array_col": c,
                    "pxl_row_in_fullres": round(origin[1] + r * pitch_px * math.sqrt(3) / 2),
                    "pxl_col_in_fullres": round(origin[0] + c * pitch_px / 2),
                }
            )
    return pd.DataFrame(rows)


def write_positions_csv(path: Path, frame: pd.DataFrame, *, header: bool) -> None:
    frame.to_csv(path, header=header, index=False)


def make_visium(
    root: Path,
    *,
    positions: pd.DataFrame | None = None,
    positions_name: str = "tissue_positions.csv",
    header: bool = True,
    matrix_barcodes: list[str] | None = None,
    counts_name: str | None = "filtered_feature_bc_matrix.h5",
    scalefactors: dict | None = None,
    images: bool = True,
) -> pd.DataFrame:
    """Write a small Space Ranger outs folder; return the positions written."""
    spatial = root / "spatial"
    spatial.mkdir(parents=True)
    positions = hex_positions() if positions is None else positions
    write_positions_csv(spatial / positions_name, positions, header=header)
    if scalefactors is None:
        scalefactors = {
            "tissue_hires_scalef": 0.2,
            "tissue_lowres_scalef": 0.05,
            "spot_diameter_fullres": 90.0,
            "fiducial_diameter_fullres": 140.0,
        }
    (spatial / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    if images:
        write_png(spatial / "tissue_hires_image.png", 300, 320, seed=1)
        write_png(spatial / "tissue_lowres_image.png", 80, 80, seed=2)
    if counts_name is not None:
        barcodes = (
            list(positions["barcode"][positions["in_tissue"] == 1])
            if matrix_barcodes is None
            else matrix_barcodes
        )
        write_10x_h5(root / counts_name, barcodes)
    return positions


def read_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return read_visium(path, **kwargs)


def check_common(adata, positions: pd.DataFrame) -> None:
    """Coordinates, obs columns and µm layout against an independent reading of the positions."""
    pos = positions.loc[list(adata.obs_names)]
    spatial = adata.obsm["spatial"]
    assert spatial.dtype == np.float64
    assert spatial.shape == (adata.n_obs, 2)
    # (x, y) = (pxl_col_in_fullres, pxl_row_in_fullres)
    np.testing.assert_array_equal(spatial[:, 0], pos["pxl_col"].to_numpy())
    np.testing.assert_array_equal(spatial[:, 1], pos["pxl_row"].to_numpy())
    for col in ("in_tissue", "array_row", "array_col"):
        np.testing.assert_array_equal(adata.obs[col].to_numpy(), pos[col].to_numpy())
    info = adata.uns["spatialfuse"]
    um = info["um_per_px"]
    assert isinstance(um, float)
    np.testing.assert_array_equal(adata.obsm["spatial_um"], (spatial + 0.5) * um)
    assert info["reader"] == "read_visium"
    assert info["n_positions"] == len(positions)
    lib = info["library_id"]
    entry = adata.uns["spatial"][lib]
    assert set(entry) == {"images", "scalefactors", "metadata"}
    for key in ("tissue_hires_scalef", "tissue_lowres_scalef", "spot_diameter_fullres"):
        assert entry["scalefactors"][key] > 0
    for img in entry["images"].values():
        assert img.dtype == np.uint8
        assert img.ndim == 3
        assert img.shape[2] == 3


# --------------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------------


def test_scanpy_visium_1_0_0(shared_data):
    folder = shared_data / "visium" / "scanpy_visium_1.0.0"
    rows = read_positions_csv(folder / "spatial" / "tissue_positions_list.csv")
    assert len(rows) == 4992
    positions = positions_frame(rows)
    barcodes = h5_barcodes(folder / "filtered_feature_bc_matrix.h5")
    expected = [b for b in barcodes if b in positions.index]

    with pytest.warns(DataWarning, match=r"tissue_hires_image\.png: the hires image is blank"):
        adata = read_visium(folder)

    assert list(adata.obs_names) == expected
    assert adata.n_obs == len(expected) == 100
    assert adata.n_vars == 100
    check_common(adata, positions)

    info = adata.uns["spatialfuse"]
    assert info["positions_format"] == "spaceranger1"
    assert info["um_per_px_source"] == "spot_pitch"
    xy_all = positions[["pxl_col", "pxl_row"]].to_numpy()
    assert info["um_per_px"] == pytest.approx(SPOT_PITCH_UM / nn_median(xy_all), rel=1e-9)
    assert info["um_per_px"] == pytest.approx(SPOT_PITCH_UM / affine_pitch_px(positions), rel=0.01)
    assert 0.3 < info["um_per_px"] < 4
    # spot_diameter_fullres is not 55 µm wide on real data (60-65 µm); it is not used.
    sf = adata.uns["spatial"]["custom"]["scalefactors"]
    assert 60 < sf["spot_diameter_fullres"] * info["um_per_px"] < 70
    assert sf["tissue_hires_scalef"] == pytest.approx(0.150015)

    entry = adata.uns["spatial"]["custom"]
    assert set(entry["images"]) == {"lowres"}  # the all-black hires placeholder is dropped
    assert entry["images"]["lowres"].shape == (600, 600, 3)
    np.testing.assert_array_equal(
        entry["images"]["lowres"],
        np.asarray(Image.open(folder / "spatial" / "tissue_lowres_image.png").convert("RGB")),
    )
    assert entry["metadata"]["software_version"] == "spaceranger-1.0.0"
    assert entry["metadata"]["chemistry_description"] == "Single Cell 3' v3"


def test_squidpy_spatial_scatter_runs(shared_data):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import squidpy as sq

    adata = read_quietly(shared_data / "visium" / "scanpy_visium_1.0.0")
    sq.pl.spatial_scatter(adata, img_res_key="lowres", color="in_tissue")
    fig = plt.gcf()
    assert fig.axes
    plt.close("all")


def test_visiumio_section1_h5_and_mtx(shared_data):
    outs = shared_data / "visium" / "visiumio_section1" / "outs"
    rows = read_positions_csv(outs / "spatial" / "tissue_positions_list.csv")
    positions = positions_frame(rows)

    # only the raw matrix is present: no silent switch, the error names both files
    with pytest.raises(MissingFileError, match=r"filtered_feature_bc_matrix\.h5.*raw_feature_bc"):
        read_visium(outs)
    with pytest.raises(MissingFileError, match=r'counts_file="raw_feature_bc_matrix\.h5"'):
        read_visium(outs)

    with pytest.warns(DataWarning, match="no hires image"):
        adata = read_visium(outs, counts_file="raw_feature_bc_matrix.h5")
    barcodes = h5_barcodes(outs / "raw_feature_bc_matrix.h5")
    assert list(adata.obs_names) == [b for b in barcodes if b in positions.index]
    assert adata.n_obs == 50
    check_common(adata, positions)
    info = adata.uns["spatialfuse"]
    assert info["library_id"] == "visiumio_section1"  # no library_ids attr: the sample folder
    assert info["positions_format"] == "spaceranger1"
    # The file is a sparse subset of the grid (50 spots): the plain nearest-neighbour distance of
    # the subset is not the pitch, but an affine fit of the array grid is.
    assert info["um_per_px"] == pytest.approx(SPOT_PITCH_UM / affine_pitch_px(positions), rel=0.01)
    assert 0.3 < info["um_per_px"] < 4
    assert set(adata.uns["spatial"]["visiumio_section1"]["images"]) == {"lowres"}

    mtx = read_quietly(outs.parent, counts_file="raw_feature_bc_matrix")  # sample folder
    mtx_barcodes = (outs / "raw_feature_bc_matrix" / "barcodes.tsv").read_text().split()
    assert list(mtx.obs_names) == [b for b in mtx_barcodes if b in positions.index]
    check_common(mtx, positions)
    assert mtx.n_vars == 50
    assert mtx.uns["spatialfuse"]["um_per_px"] == info["um_per_px"]


def test_cytassist_ffpe_mouse_brain(shared_data):
    folder = shared_data / "visium" / "cytassist_ffpe_mouse_brain"
    rows = read_positions_csv(folder / "spatial" / "tissue_positions.csv")
    positions = positions_frame(rows)
    assert len(positions) == 4992

    with pytest.raises(MissingFileError, match=r"filtered_feature_bc_matrix\.h5.*not found"):
        read_visium(folder)

    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)  # a clean folder: nothing to warn about
        adata = read_visium(folder, require_counts=False)
    assert list(adata.obs_names) == list(positions.index)
    assert adata.shape == (4992, 0)
    assert int(adata.obs["in_tissue"].sum()) == int(positions["in_tissue"].sum()) == 2310
    check_common(adata, positions)
    info = adata.uns["spatialfuse"]
    assert info["positions_format"] == "spaceranger2"
    assert "counts_file" not in info
    xy_all = positions[["pxl_col", "pxl_row"]].to_numpy()
    assert info["um_per_px"] == pytest.approx(SPOT_PITCH_UM / nn_median(xy_all), rel=1e-9)
    assert 0.2 < info["um_per_px"] < 4  # CytAssist full-res images are scanned finely (~0.27)
    images = adata.uns["spatial"]["cytassist_ffpe_mouse_brain"]["images"]
    assert images["hires"].shape == (2000, 1872, 3)
    assert images["lowres"].shape == (600, 562, 3)
    sf = adata.uns["spatial"]["cytassist_ffpe_mouse_brain"]["scalefactors"]
    assert sf["regist_target_img_scalef"] == pytest.approx(0.17381229)


def _visium_roots(folder: Path) -> Path:
    return folder / "outs" if (folder / "outs" / "spatial").is_dir() else folder


def test_every_shared_visium_folder(shared_data):
    """Every folder under shared_data/visium reads and matches its positions file."""
    folders = sorted(p for p in (shared_data / "visium").iterdir() if p.is_dir())
    assert folders
    for folder in folders:
        root = _visium_roots(folder)
        spatial = root / "spatial"
        csvs = [spatial / n for n in ("tissue_positions.csv", "tissue_positions_list.csv")]
        pos_file = next(p for p in csvs if p.is_file())
        positions = positions_frame(read_positions_csv(pos_file))
        counts = next(
            (
                n
                for n in ("filtered_feature_bc_matrix.h5", "raw_feature_bc_matrix.h5")
                if (root / n).is_file()
            ),
            None,
        )
        if counts is None:
            adata = read_quietly(folder, require_counts=False)
            assert adata.n_obs == len(positions)
        else:
            adata = read_quietly(folder, counts_file=counts)
            in_pos = [b for b in h5_barcodes(root / counts) if b in positions.index]
            assert list(adata.obs_names) == in_pos
        check_common(adata, positions)
        assert 0.2 < adata.uns["spatialfuse"]["um_per_px"] < 4, folder
        assert describe_visium(adata)


# --------------------------------------------------------------------------------------------------
# synthetic folders
# --------------------------------------------------------------------------------------------------


def test_synthetic_h5_is_read_by_scanpy(tmp_path):
    import scanpy as sc

    counts = write_10x_h5(tmp_path / "m.h5", ["A-1", "B-1", "C-1"], n_genes=4)
    adata = sc.read_10x_h5(tmp_path / "m.h5")
    assert list(adata.obs_names) == ["A-1", "B-1", "C-1"]
    assert list(adata.var_names) == ["Gene0", "Gene1", "Gene2", "Gene3"]
    np.testing.assert_array_equal(adata.X.toarray(), counts)


def test_synthetic_values(tmp_path):
    positions = make_visium(tmp_path / "outs")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        adata = read_visium(tmp_path / "outs")
    in_tissue = positions[positions["in_tissue"] == 1]
    assert list(adata.obs_names) == list(in_tissue["barcode"])
    np.testing.assert_array_equal(
        adata.obsm["spatial"], in_tissue[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    )
    info = adata.uns["spatialfuse"]
    # 150 px pitch written, integer-rounded like Space Ranger
    assert info["um_per_px"] == pytest.approx(SPOT_PITCH_UM / 150.0, rel=0.01)
    assert info["library_id"] == "synthetic_lib"
    assert info["positions_format"] == "spaceranger2"
    assert info["spot_diameter_um"] == SPOT_DIAMETER_UM
    np.testing.assert_array_equal(
        adata.obsm["spatial_um"], (adata.obsm["spatial"] + 0.5) * info["um_per_px"]
    )
    images = adata.uns["spatial"]["synthetic_lib"]["images"]
    assert images["hires"].shape == (300, 320, 3)
    assert images["lowres"].shape == (80, 80, 3)
    np.testing.assert_array_equal(info["fullres_shape_px"], [1500, 1600])
    assert read_quietly(tmp_path / "outs", library_id="mine").uns["spatial"].keys() == {"mine"}


def test_spot_at_pixel_zero_is_centred_half_a_pixel_in(tmp_path):
    positions = hex_positions(origin=(0.0, 0.0))
    make_visium(tmp_path, positions=positions, counts_name=None, images=False)
    adata = read_quietly(tmp_path, require_counts=False)
    first = positions["barcode"][0]
    assert adata.obsm["spatial"][0].tolist() == [0.0, 0.0]
    assert adata.obs_names[0] == first
    um = adata.uns["spatialfuse"]["um_per_px"]
    assert adata.obsm["spatial_um"][0].tolist() == [0.5 * um, 0.5 * um]


def test_mtx_folder_gzipped_matches_h5(tmp_path):
    import gzip

    import scipy.io

    make_visium(tmp_path)
    h5 = read_quietly(tmp_path)
    mtx_dir = tmp_path / "filtered_feature_bc_matrix"
    mtx_dir.mkdir()
    with gzip.open(mtx_dir / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, sparse.coo_matrix(h5.X.T.astype(np.int64)))
    pairs = zip(h5.var["gene_ids"], h5.var_names, strict=True)
    features = "".join(f"{gid}\t{name}\tGene Expression\n" for gid, name in pairs)
    with gzip.open(mtx_dir / "features.tsv.gz", "wt") as fh:
        fh.write(features)
    with gzip.open(mtx_dir / "barcodes.tsv.gz", "wt") as fh:
        fh.write("".join(f"{b}\n" for b in h5.obs_names))
    mtx = read_quietly(tmp_path, counts_file="filtered_feature_bc_matrix")
    assert list(mtx.obs_names) == list(h5.obs_names)
    assert list(mtx.var_names) == list(h5.var_names)
    np.testing.assert_array_equal(mtx.X.toarray(), h5.X.toarray())
    np.testing.assert_array_equal(mtx.obsm["spatial"], h5.obsm["spatial"])


def test_header_detected_by_content_not_name(tmp_path):
    positions = hex_positions()
    # headerless file under the Space Ranger 2.x name
    make_visium(
        tmp_path / "a",
        positions=positions,
        positions_name="tissue_positions.csv",
        header=False,
        counts_name=None,
    )
    # headered file under the 1.x name
    make_visium(
        tmp_path / "b",
        positions=positions,
        positions_name="tissue_positions_list.csv",
        header=True,
        counts_name=None,
    )
    a = read_quietly(tmp_path / "a", require_counts=False)
    b = read_quietly(tmp_path / "b", require_counts=False)
    assert a.n_obs == b.n_obs == len(positions)
    assert list(a.obs_names) == list(b.obs_names) == list(positions["barcode"])
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    assert a.uns["spatialfuse"]["positions_format"] == "spaceranger1"
    assert b.uns["spatialfuse"]["positions_format"] == "spaceranger2"


def _make_hd_bin(outs: Path, *, scalefactors: dict, n: int = 12, pitch_px: float = 29.2184):
    bin_dir = outs / "binned_outputs" / "square_008um"
    spatial = bin_dir / "spatial"
    spatial.mkdir(parents=True)
    (outs / "spatial").mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(n):
        for c in range(n):
            rows.append(
                {
                    "barcode": f"s_008um_{r:05d}_{c:05d}-1",
                    "in_tissue": int(r < n // 2),
                    "array_row": r,
                    "array_col": c,
                    "pxl_row_in_fullres": 100.25 + r * pitch_px,
                    "pxl_col_in_fullres": 50.5 + c * pitch_px,
                }
            )
    frame = pd.DataFrame(rows)
    frame.to_parquet(spatial / "tissue_positions.parquet", index=False)
    (spatial / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    # the images live in outs/spatial only: they are found there
    write_png(outs / "spatial" / "tissue_hires_image.png", 60, 60, seed=3)
    write_png(outs / "spatial" / "tissue_lowres_image.png", 30, 30, seed=4)
    in_tissue = list(frame["barcode"][frame["in_tissue"] == 1])
    write_10x_h5(bin_dir / "filtered_feature_bc_matrix.h5", in_tissue, library_id=None)
    return bin_dir, frame


HD_SCALEFACTORS = {
    "spot_diameter_fullres": 29.2184,
    "bin_size_um": 8.0,
    "microns_per_pixel": 0.2738,
    "regist_target_img_scalef": 0.2,
    "tissue_hires_scalef": 0.1,
    "tissue_lowres_scalef": 0.05,
    "fiducial_diameter_fullres": 300.0,
}


def test_visium_hd_parquet_with_microns_per_pixel(tmp_path):
    bin_dir, frame = _make_hd_bin(tmp_path / "outs", scalefactors=HD_SCALEFACTORS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        adata = read_visium(bin_dir)
    in_tissue = frame[frame["in_tissue"] == 1]
    assert list(adata.obs_names) == list(in_tissue["barcode"])
    np.testing.assert_array_equal(
        adata.obsm["spatial"], in_tissue[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    )
    info = adata.uns["spatialfuse"]
    assert info["positions_format"] == "visium_hd_parquet"
    assert info["um_per_px_source"] == "microns_per_pixel"
    assert info["um_per_px"] == 0.2738
    assert info["spot_diameter_um"] == 8.0
    np.testing.assert_array_equal(adata.obsm["spatial_um"], (adata.obsm["spatial"] + 0.5) * 0.2738)
    assert info["library_id"] == "square_008um"
    assert set(adata.uns["spatial"]["square_008um"]["images"]) == {"hires", "lowres"}

    # the HD outs folder itself holds no positions: the error points at the bin folders
    with pytest.raises(MissingFileError, match="square_008um"):
        read_visium(tmp_path / "outs")


def test_visium_hd_bin_size_calibration_and_mismatch(tmp_path):
    sf = {k: v for k, v in HD_SCALEFACTORS.items() if k != "microns_per_pixel"}
    bin_dir, _ = _make_hd_bin(tmp_path / "a" / "outs", scalefactors=sf)
    adata = read_quietly(bin_dir)
    assert adata.uns["spatialfuse"]["um_per_px_source"] == "bin_size"
    assert adata.uns["spatialfuse"]["um_per_px"] == pytest.approx(8.0 / 29.2184, rel=1e-9)

    bad = dict(HD_SCALEFACTORS, microns_per_pixel=0.5)
    bin_dir, _ = _make_hd_bin(tmp_path / "b" / "outs", scalefactors=bad)
    with pytest.warns(DataWarning, match="microns_per_pixel = 0.5 but the grid pitch gives 0.27"):
        adata = read_visium(bin_dir)
    assert adata.uns["spatialfuse"]["um_per_px"] == 0.5


def test_negative_coordinates_warn_and_are_kept(tmp_path):
    positions = hex_positions(origin=(-200.0, -100.0))
    make_visium(tmp_path, positions=positions, images=False)
    n_neg = int(
        ((positions["pxl_col_in_fullres"] < 0) | (positions["pxl_row_in_fullres"] < 0))[
            positions["in_tissue"] == 1
        ].sum()
    )
    assert n_neg > 0
    with pytest.warns(DataWarning, match=rf"{n_neg} of \d+ spots have negative full-res"):
        adata = read_visium(tmp_path, load_images=False)
    assert adata.n_obs == int(positions["in_tissue"].sum())
    assert (adata.obsm["spatial"] < 0).any()
    assert (adata.obsm["spatial_um"] < 0).any()


def test_matrix_barcodes_missing_from_positions_are_dropped(tmp_path):
    positions = hex_positions()
    on_tissue = list(positions["barcode"][positions["in_tissue"] == 1])  # a filtered matrix's
    barcodes = [*on_tissue[:5], "GHOST00001-1", "GHOST00002-1", *on_tissue[5:8]]
    make_visium(tmp_path, positions=positions, matrix_barcodes=barcodes)
    with pytest.warns(
        DataWarning, match=r"2 of 10 barcodes .* no position \(e\.g\. 'GHOST00001-1'\)"
    ):
        adata = read_visium(tmp_path)
    assert list(adata.obs_names) == [b for b in barcodes if not b.startswith("GHOST")]
    assert adata.uns["spatialfuse"]["n_dropped_barcodes"] == 2

    make_visium(tmp_path / "none", matrix_barcodes=["GHOST00001-1"])
    with pytest.raises(FileFormatError, match="none of the 1 barcodes"):
        read_visium(tmp_path / "none")


def test_missing_matrix(tmp_path):
    make_visium(tmp_path / "a", counts_name=None)
    with pytest.raises(MissingFileError, match=r"filtered_feature_bc_matrix\.h5.*not found") as exc:
        read_visium(tmp_path / "a")
    assert isinstance(exc.value, FileNotFoundError)
    assert exc.value.path.endswith("filtered_feature_bc_matrix.h5")
    adata = read_visium(tmp_path / "a", require_counts=False)
    assert adata.shape == (len(hex_positions()), 0)

    make_visium(tmp_path / "b", counts_name="raw_feature_bc_matrix.h5")
    with pytest.raises(MissingFileError, match=r'pass counts_file="raw_feature_bc_matrix\.h5"'):
        read_visium(tmp_path / "b")
    # a run config's user is told the config key, not only the Python argument
    with pytest.raises(MissingFileError, match=r"in a run config: require_counts: false"):
        read_visium(tmp_path / "b")
    with pytest.warns(DataWarning, match=r'counts_file="raw_feature_bc_matrix\.h5" would read'):
        read_visium(tmp_path / "b", require_counts=False)
    assert read_visium(tmp_path / "b", counts_file="raw_feature_bc_matrix.h5").n_obs > 0
    # the .h5 itself is accepted as the path
    assert read_visium(tmp_path / "b" / "raw_feature_bc_matrix.h5").n_obs > 0


def test_missing_folders(tmp_path):
    with pytest.raises(MissingFileError, match="folder does not exist"):
        read_visium(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="no spatial/ folder"):
        read_visium(tmp_path / "empty")
    (tmp_path / "nopos" / "spatial").mkdir(parents=True)
    with pytest.raises(MissingFileError, match="no positions file"):
        read_visium(tmp_path / "nopos")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("AAAC-1,1,0,0,10\nAAAG-1,1,0,2,10\n", "expected 6 columns"),
        ("AAAC-1,1,0,0,10,20\nAAAG-1,1,0,2,ten,40\n", "column 'pxl_row_in_fullres'.*'ten'.*line 2"),
        ("AAAC-1,1,0,0,10,20\nAAAG-1,1,0,2,30,40,50,60\n", "not a valid positions CSV"),
        (
            "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres\n",
            "no spots",
        ),
        ("", "empty"),
        ("AAAC-1,1,0,0,10,20\nAAAC-1,1,0,2,30,40\n", "'AAAC-1' appears more than once"),
        ("AAAC-1,1,0,0.5,10,20\nAAAG-1,1,0,2,30,40\n", "'array_col' must hold integers"),
    ],
)
def test_malformed_positions_csv(tmp_path, content, match):
    make_visium(tmp_path, counts_name=None)
    (tmp_path / "spatial" / "tissue_positions.csv").write_text(content)
    with pytest.raises(FileFormatError, match=match) as exc:
        read_visium(tmp_path, require_counts=False)
    assert exc.value.path.endswith("tissue_positions.csv")


def test_malformed_h5(tmp_path):
    make_visium(tmp_path)
    (tmp_path / "filtered_feature_bc_matrix.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(FileFormatError, match="not an HDF5 file"):
        read_visium(tmp_path)
    with h5py.File(tmp_path / "filtered_feature_bc_matrix.h5", "w") as fh:
        fh.create_group("matrix")["barcodes"] = np.array([b"A-1"])
    with pytest.raises(FileFormatError, match="not a readable 10x HDF5 matrix"):
        read_visium(tmp_path)


def test_scalefactors_malformed_and_missing(tmp_path):
    make_visium(tmp_path)
    sf_file = tmp_path / "spatial" / "scalefactors_json.json"
    sf_file.write_text("{not json")
    with pytest.raises(FileFormatError, match=r"scalefactors_json\.json: not valid JSON"):
        read_visium(tmp_path)
    sf_file.write_text(json.dumps({"tissue_hires_scalef": "big"}))
    with pytest.raises(FileFormatError, match="tissue_hires_scalef is 'big'"):
        read_visium(tmp_path)

    # keys missing: defaults, the image without its scale factor is not placed
    sf_file.write_text(json.dumps({"tissue_lowres_scalef": 0.05}))
    with pytest.warns(DataWarning) as record:
        adata = read_visium(tmp_path)
    messages = " | ".join(str(w.message) for w in record)
    assert "tissue_hires_scalef missing" in messages
    assert "no spot_diameter_fullres; using 55 µm" in messages
    entry = adata.uns["spatial"]["synthetic_lib"]
    assert set(entry["images"]) == {"lowres"}
    um = adata.uns["spatialfuse"]["um_per_px"]
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(SPOT_DIAMETER_UM / um)

    sf_file.unlink()
    with pytest.warns(DataWarning, match="scalefactors file missing"):
        adata = read_visium(tmp_path)
    entry = adata.uns["spatial"]["synthetic_lib"]
    assert entry["images"] == {}
    assert entry["scalefactors"]["tissue_hires_scalef"] == 1.0
    assert adata.uns["spatialfuse"]["um_per_px_source"] == "spot_pitch"  # unaffected


def test_blank_and_missing_images(tmp_path):
    make_visium(tmp_path)
    Image.fromarray(np.zeros((300, 320, 4), dtype=np.uint8)).save(
        tmp_path / "spatial" / "tissue_hires_image.png"
    )
    (tmp_path / "spatial" / "tissue_lowres_image.png").unlink()
    with pytest.warns(DataWarning) as record:
        adata = read_visium(tmp_path)
    messages = " | ".join(str(w.message) for w in record)
    assert "hires image is blank" in messages
    assert "no lowres image" in messages
    assert adata.uns["spatial"]["synthetic_lib"]["images"] == {}
    # an unreadable image is a warning, not a crash
    (tmp_path / "spatial" / "tissue_lowres_image.png").write_bytes(b"garbage")
    with pytest.warns(DataWarning) as record:
        read_visium(tmp_path)
    assert any("lowres_image.png: cannot be read as an image" in str(w.message) for w in record)


def test_sample_folder_and_library_id_fallback(tmp_path):
    make_visium(tmp_path / "sampleA" / "outs", counts_name=None)
    adata = read_quietly(tmp_path / "sampleA", require_counts=False)
    assert adata.uns["spatialfuse"]["library_id"] == "sampleA"
    assert "sampleA" in adata.uns["spatial"]
    via_spatial = read_quietly(tmp_path / "sampleA" / "outs" / "spatial", require_counts=False)
    assert via_spatial.n_obs == adata.n_obs


def test_describe_and_h5ad_round_trip(tmp_path):
    import anndata as ad

    make_visium(tmp_path / "outs")
    adata = read_quietly(tmp_path / "outs")
    text = describe_visium(adata)
    um = adata.uns["spatialfuse"]["um_per_px"]
    assert "synthetic_lib" in text
    assert f"spots: {adata.n_obs}" in text
    assert "positions file: 36 spots (18 in tissue)" in text
    assert f"genes: {adata.n_vars}" in text
    assert f"{um:.4g} (from spot_pitch)" in text
    assert "1,600 × 1,500 px" in text
    assert "mm" in text
    assert "hires 320 × 300 px" in text
    assert "spaceranger2" in text

    adata.write_h5ad(tmp_path / "x.h5ad")
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert back.uns["spatialfuse"]["um_per_px"] == um
    assert describe_visium(back) == text


def test_heavy_imports_are_deferred():
    import spatialfuse.io.visium as module

    tree = ast.parse(Path(module.__file__).read_text())
    heavy = {"anndata", "scanpy", "squidpy", "pandas", "h5py", "scipy", "PIL"}
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert not top & heavy


def test_input_files_follow_the_counts_file_the_reader_is_given(tmp_path):
    from spatialfuse.io import input_files

    (tmp_path / "spatial").mkdir()
    (tmp_path / "spatial" / "tissue_positions.csv").write_text("barcode\n", encoding="utf-8")
    for name in ("filtered_feature_bc_matrix.h5", "raw_feature_bc_matrix.h5"):
        (tmp_path / name).write_bytes(b"")
    default = input_files(tmp_path, "visium")
    raw = input_files(tmp_path, "visium", counts_file="raw_feature_bc_matrix.h5")
    assert tmp_path / "filtered_feature_bc_matrix.h5" in default
    assert tmp_path / "raw_feature_bc_matrix.h5" in raw
    assert tmp_path / "filtered_feature_bc_matrix.h5" not in raw
