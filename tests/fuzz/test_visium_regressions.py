"""Regression tests for Visium reader bugs the fuzzer found; each writes its minimal input.

Before the fixes: a deeply nested scale-factors JSON raised a bare RecursionError; grid indices too
large for int64 wrapped around silently (1e300 became -9223372036854775808); a count matrix whose
``indices`` or (unsigned) ``indptr`` point outside it crashed the interpreter inside scipy
(segmentation fault); an HDF5 dataset declaring more values than the file holds was allocated,
and so was an image declaring more pixels than its bytes could hold; damaged HDF5 attribute
metadata raised a bare RuntimeError; a tiny image scale factor overflowed the image extent; a spot
at 1e300 pixels made the pitch estimate index past its arrays.
The crashing cases run in a subprocess, so a regression fails the test instead of killing pytest.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from spatialfuse.datasets._writers import write_visium
from spatialfuse.errors import DataWarning, FileFormatError
from spatialfuse.io import read_visium

H5 = "filtered_feature_bc_matrix.h5"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A small Space Ranger 2.x folder: 36 spots on the hexagonal grid, 12 genes."""
    rng = np.random.default_rng(11)
    rows, cols = np.meshgrid(np.arange(6), np.arange(12), indexing="ij")
    keep = (rows + cols) % 2 == 0
    array_row, array_col = rows[keep], cols[keep]
    n = array_row.size
    write_visium(
        tmp_path / "outs",
        barcodes=np.array([f"AAAC{i:012d}-1" for i in range(n)]),
        in_tissue=np.ones(n, dtype=np.int64),
        array_row=array_row,
        array_col=array_col,
        pxl_row=20 + array_row * 50 * math.sqrt(3) / 2,
        pxl_col=20 + array_col * 25.0,
        counts=rng.poisson(2.0, (n, 12)),
        gene_ids=np.array([f"ENSG{i:05d}" for i in range(12)]),
        gene_names=np.array([f"G{i}" for i in range(12)]),
        fullres=(rng.random((300, 300, 3)) * 255).astype(np.uint8),
        um_per_px=2.0,
        library_id="fuzz",
    )
    return tmp_path / "outs"


def _read(folder: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_visium(folder, load_images=False)


def _read_in_subprocess(folders: list[Path]) -> list[str]:
    """Read each folder in one fresh interpreter; per folder the error type and message, or
    "read". A crash fails the test here instead of killing pytest."""
    code = (
        "import sys, warnings; warnings.simplefilter('ignore')\n"
        "from spatialfuse.io import read_visium\n"
        "for folder in sys.argv[1:]:\n"
        "    try:\n"
        "        read_visium(folder, load_images=False)\n"
        "        print('read', flush=True)\n"
        "    except Exception as exc:\n"
        "        print((type(exc).__name__ + ': ' + str(exc)).replace('\\n', ' '), flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, folders)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"the reader crashed (exit {proc.returncode}): {proc.stderr[-2000:]}"
    )
    return proc.stdout.strip().splitlines()


def test_deeply_nested_scalefactors_are_refused(folder):
    file = folder / "spatial" / "scalefactors_json.json"
    file.write_text('{"deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(FileFormatError, match="nested too deeply") as info:
        _read(folder)
    assert str(file) in str(info.value)


@pytest.mark.parametrize(
    "value", ["1e300", "9223372036854775808", "-9007199254740993", "9007199254740992"]
)
@pytest.mark.parametrize("column", [1, 2, 3])
def test_grid_indices_beyond_exact_integers_are_refused(folder, value, column):
    file = folder / "spatial" / "tissue_positions.csv"
    lines = file.read_text().splitlines()
    cells = lines[5].split(",")
    cells[column] = value
    lines[5] = ",".join(cells)
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(FileFormatError, match="must hold integers") as info:
        _read(folder)
    assert "line 6" in str(info.value) and value in str(info.value)


def test_grid_indices_of_ordinary_size_are_read_exactly(folder):
    file = folder / "spatial" / "tissue_positions.csv"
    lines = file.read_text().splitlines()
    cells = lines[1].split(",")
    cells[2] = "9007199254740991"  # 2**53 - 1: still exact
    lines[1] = ",".join(cells)
    file.write_text("\n".join(lines) + "\n")
    adata = _read(folder)
    assert adata.obs.loc[cells[0], "array_row"] == 2**53 - 1


def _edit_h5(folder: Path, fn) -> None:
    with h5py.File(folder / H5, "r+") as fh:
        fn(fh["matrix"])


def _replace(group, name, values):
    del group[name]
    group[name] = values


MATRIX_DAMAGE = {
    "index-out-of-range": (
        lambda g: _replace(g, "indices", np.r_[g["indices"][:-1], 10**6]),
        "feature index",
    ),
    "pointer-past-end": (
        lambda g: _replace(
            g, "indptr", np.r_[g["indptr"][:3], g["indptr"][-1] + 7, g["indptr"][4:]]
        ),
        "indptr does not rise",
    ),
    "pointer-falls-uint32": (
        lambda g: _replace(
            g, "indptr", np.r_[g["indptr"][:-2], g["indptr"][-1] + 1, g["indptr"][-1:]]
        ),
        "indptr does not rise",
    ),
    "shape": (lambda g: _replace(g, "shape", np.array([12, 10**6])), "shape says"),
    "data-short": (lambda g: _replace(g, "data", g["data"][:-1]), "data has shape"),
}


def test_inconsistent_count_matrix_is_refused_not_crashed(folder):
    folders = []
    for name, (edit, _) in MATRIX_DAMAGE.items():
        copy = folder.parent / name
        shutil.copytree(folder, copy)

        def unsigned(g, edit=edit):  # Space Ranger writes indices and indptr as uint32
            edit(g)
            for dataset in ("indptr", "indices"):
                values = g[dataset][:]
                if values.min() >= 0:
                    _replace(g, dataset, values.astype(np.uint32))

        _edit_h5(copy, unsigned)
        folders.append(copy)
    outcomes = _read_in_subprocess(folders)
    assert len(outcomes) == len(folders)
    for (name, (_, match)), copy, outcome in zip(
        MATRIX_DAMAGE.items(), folders, outcomes, strict=True
    ):
        assert outcome.startswith("FileFormatError: "), (name, outcome)
        assert str(copy / H5) in outcome and match in outcome, (name, outcome)
        assert "not a readable 10x HDF5" in outcome, (name, outcome)


def test_dataset_declaring_more_than_the_file_holds_is_refused_before_reading(folder):
    def huge(g):
        del g["barcodes"]
        g.create_dataset("barcodes", shape=(10**10,), dtype="S18", chunks=(1 << 16,))

    _edit_h5(folder, huge)
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match="barcodes declares 10,000,000,000 values"):
            _read(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_consistent_uint32_matrix_is_still_read(folder):
    with h5py.File(folder / H5, "r") as fh:
        g = fh["matrix"]
        assert g["indptr"].dtype == np.dtype("int64") or g["indptr"].dtype.kind in "iu"
        barcodes = [b.decode() for b in g["barcodes"][:]]
        dense = np.zeros(tuple(g["shape"][:]))
        indptr, indices, data = g["indptr"][:], g["indices"][:], g["data"][:]
        for j in range(len(barcodes)):
            dense[indices[indptr[j] : indptr[j + 1]], j] = data[indptr[j] : indptr[j + 1]]

    def unsigned(g):
        for name in ("indptr", "indices"):
            _replace(g, name, g[name][:].astype(np.uint32))

    _edit_h5(folder, unsigned)
    adata = _read(folder)
    assert list(adata.obs_names) == barcodes
    np.testing.assert_array_equal(adata.X.toarray(), dense.T)
    assert json.loads((folder / "spatial" / "scalefactors_json.json").read_text())


def test_image_declaring_more_pixels_than_its_bytes_hold_is_not_decoded(folder):
    file = folder / "spatial" / "tissue_hires_image.png"
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 120, 90)).save(buffer, "PNG")
    data = buffer.getvalue()  # a few hundred bytes
    ihdr = bytearray(data[12:29])  # chunk type and the 13 bytes of IHDR
    ihdr[4:12] = struct.pack(">II", 9000, 9000)  # 243 MB of RGB declared
    file.write_bytes(data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:])
    # scale factors that agree with the declared size, so that the image-scale check (which reads
    # only the header) lets the reader reach the decode guard
    scalefactors = folder / "spatial" / "scalefactors_json.json"
    factors = json.loads(scalefactors.read_text())
    factors["tissue_hires_scalef"] = factors["tissue_lowres_scalef"] * 9000 / 300
    scalefactors.write_text(json.dumps(factors))
    with pytest.warns(DataWarning) as caught:
        adata = read_visium(folder)
    messages = [str(w.message) for w in caught]
    assert any(
        str(file) in m and "declares 9000 × 9000 pixels, more than its" in m for m in messages
    ), messages
    images = adata.uns["spatial"]["fuzz"]["images"]
    assert "hires" not in images and images["lowres"].dtype == np.uint8


def test_damaged_hdf5_attribute_metadata_is_refused(folder):
    """One flipped bit in an attribute's dataspace: h5py raised a bare RuntimeError."""
    h5 = folder / H5
    data = bytearray(h5.read_bytes())
    name = data.find(b"library_ids\x00")
    dims = data.find(struct.pack("<QQ", 1, 1), name)  # the dimension and its maximum, both 1
    assert name >= 0 and dims > name
    data[dims : dims + 8] = struct.pack("<Q", 2**42 + 1)
    h5.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="cannot be opened as HDF5") as info:
        _read(folder)
    assert str(h5) in str(info.value) and "dataspace" in str(info.value)


def test_absurd_image_scale_factor_is_refused(folder):
    """tissue_hires_scalef = 1e-300 made the full-resolution extent overflow int64; the
    cross-file check now refuses scale factors that do not fit the two images' sizes."""
    file = folder / "spatial" / "scalefactors_json.json"
    factors = json.loads(file.read_text())
    factors["tissue_hires_scalef"] = 1e-300
    file.write_text(json.dumps(factors))
    with pytest.raises(FileFormatError, match=r"scalefactors_json\.json: .*not from one run"):
        _read(folder)


def test_a_spot_far_outside_is_named(folder):
    """pxl coordinates of 1e300 overflowed every distance (the k-d tree reported no neighbour,
    which was used as an index); now the grid check, fitted to the spots that agree, names the
    one spot that lies off it."""
    file = folder / "spatial" / "tissue_positions.csv"
    lines = file.read_text().splitlines()
    cells = lines[7].split(",")
    cells[4] = "1e300"
    lines[7] = ",".join(cells)
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(FileFormatError, match=r"tissue_positions\.csv: .* 1 of 36 spots lie off"):
        _read(folder)
