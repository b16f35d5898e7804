"""Damaged MSI zarr stores: every reader refuses them with a FileFormatError naming the store and
the fault, before allocating what a damaged shape declares."""

from __future__ import annotations

import json
import shutil
import tracemalloc
import warnings

import numpy as np
import pytest

zarr = pytest.importorskip("zarr", minversion="3")
pytest.importorskip("dask.array")

from spatialfuse.datasets._writers import write_imzml  # noqa: E402
from spatialfuse.errors import FileFormatError, MissingFileError  # noqa: E402
from spatialfuse.io import (  # noqa: E402
    convert_imzml,
    ion_image_from_zarr,
    read_msi_zarr,
)
from spatialfuse.io.zarr_msi import open_msi_store  # noqa: E402

COORDS = np.array([(x, y) for y in range(1, 4) for x in range(1, 5)])
AXIS = np.linspace(100.0, 200.0, 11)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    values = np.arange(len(COORDS) * AXIS.size, dtype=np.float32).reshape(len(COORDS), -1) + 1
    path = folder / "c.imzML"
    write_imzml(
        path,
        COORDS,
        AXIS,
        values,
        mode="continuous",
        pixel_size_um=(10.0, 10.0),
        uuid_bytes=bytes(range(16)),
        version="test",
    )
    return {
        "none": convert_imzml(
            path, folder / "none.zarr", chunks=(5, 4), compression="none", shards=False
        ),
        "lz4": convert_imzml(
            path, folder / "lz4.zarr", chunks=(5, 4), compression="lz4", shards=False
        ),
        "no_features": convert_imzml(path, folder / "k0.zarr", mz=[]),
    }


def _copy(stores, kind, tmp_path):
    out = tmp_path / f"{kind}.zarr"
    shutil.copytree(stores[kind], out)
    return out


def _edit(store, member, fn):
    meta = store / member / "zarr.json"
    doc = json.loads(meta.read_text())
    fn(doc)
    meta.write_text(json.dumps(doc))


def _chunk_files(store, member):
    return [f for f in (store / member).rglob("*") if f.is_file() and f.name != "zarr.json"]


def _assert_refused(store, message):
    for read in (
        open_msi_store,
        read_msi_zarr,
        lambda s: ion_image_from_zarr(s, 150.0, tol=20.0),
    ):
        with pytest.raises(FileFormatError, match=message) as info:
            read(store)
        assert str(store) in str(info.value)


def _set(key, value):
    def fn(doc):
        doc[key] = value

    return fn


def _set_chunks(shape):
    def fn(doc):
        doc["chunk_grid"]["configuration"]["chunk_shape"] = shape

    return fn


def _set_attr(name, value):
    def fn(doc):
        doc["attributes"][name] = value

    return fn


def _set_info(name, value):
    def fn(doc):
        doc["attributes"]["spatialfuse_store"][name] = value

    return fn


def _set_provenance(name, value):
    def fn(doc):
        doc["attributes"]["spatialfuse"][name] = value

    return fn


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("X", "damaged MSI store: X is missing"),
        ("obs", "damaged MSI store: obs is missing"),
        ("var", "damaged MSI store: var is missing"),
        ("obsm", "damaged MSI store: obsm is missing"),
        ("obs/imzml_x", "damaged MSI store: obs/imzml_x is missing"),
        ("obs/_index", "damaged MSI store: obs/_index is missing"),
        ("var/mz", "damaged MSI store: var/mz is missing"),
        ("obsm/spatial", "damaged MSI store: obsm/spatial is missing"),
    ],
)
def test_missing_member(stores, tmp_path, member, message):
    store = _copy(stores, "none", tmp_path)
    shutil.rmtree(store / member)
    _assert_refused(store, message)


@pytest.mark.parametrize(
    ("member", "edit", "message"),
    [
        ("X", _set("shape", [10**9, 10**9]), r"X declares 1,000,000,000 × 1,000,000,000 values"),
        ("X", _set("shape", [13, 11]), "the provenance says 12 spectra, X has 13 rows"),
        ("X", _set("shape", [12, 13]), r"12 × 13 values in 12 chunks of 5 × 4, but 9 chunk files"),
        ("X", _set("shape", [12]), r"X cannot be opened \(ValueError: `chunk_shape` and `shape`"),
        ("X", _set("data_type", "int8"), "X's first chunk has 80 bytes, not the 20 it declares"),
        ("X", _set("data_type", "bool"), "X is 2-D bool, not a 2-D numeric table"),
        ("X", _set_chunks([0, 0]), "X's chunks of 0 × 0 do not fit X's 12 × 11 values"),
        ("X", _set_chunks([10**6, 4]), "X's chunks of 1000000 × 4 do not fit"),
        ("obs/imzml_x", _set("shape", [10**12]), r"obs/imzml_x has shape \(1000000000000,\)"),
        ("obs/tic", _set("shape", [11]), r"obs/tic has shape \(11,\), X implies \(12,\)"),
        ("var/mz", _set("shape", [3]), r"var/mz has shape \(3,\), X implies \(11,\)"),
        ("obs/imzml_y", _set("data_type", "float64"), "obs/imzml_y holds float64, not integers"),
        ("var/mz", _set("data_type", "bool"), "var/mz holds bool, not numbers"),
        ("obsm/spatial", _set("shape", [12, 3]), r"obsm/spatial is \(12, 3\) float64"),
        ("obs", _set_attr("_index", 7), "obs's _index attribute is 7, not a column name"),
        (".", _set_attr("spatialfuse", 5), "the root attribute 'spatialfuse' .* not a mapping"),
        (".", _set_provenance("n_spectra", 13), "the provenance says 13 spectra, X has 12 rows"),
        (
            ".",
            _set_info("nonfinite_intensities", [1]),
            r"nonfinite_intensities is \[1\], not two counts",
        ),
    ],
)
def test_inconsistent_metadata(stores, tmp_path, member, edit, message):
    store = _copy(stores, "none", tmp_path)
    _edit(store, member, edit)
    _assert_refused(store, message)


def test_missing_and_truncated_chunks_of_x(stores, tmp_path):
    store = _copy(stores, "none", tmp_path)
    _chunk_files(store, "X")[0].unlink()  # would read as zeros
    _assert_refused(store, r"12 × 11 values in 9 chunks of 5 × 4, but 8 chunk files are stored")
    store = _copy(stores, "none", tmp_path / "t")
    first = store / "X" / "c" / "0" / "0"
    first.write_bytes(first.read_bytes()[:7])
    _assert_refused(store, r"X declares chunks of 5 × 4 \(80 bytes\), more than its 7 stored bytes")


def test_corrupt_compressed_chunk_is_a_file_format_error_when_read(stores, tmp_path):
    store = _copy(stores, "lz4", tmp_path)
    for chunk in _chunk_files(store, "X"):
        chunk.write_bytes(b"\x02\x01" + b"garbage" * 20)
    adata = read_msi_zarr(store)  # metadata is sound: X is read lazily
    with pytest.raises(FileFormatError, match=r"damaged MSI store: X at .* cannot be read") as info:
        adata.X.compute()
    assert str(store) in str(info.value)
    with pytest.raises(FileFormatError, match=r"damaged MSI store: X at .* cannot be read"):
        ion_image_from_zarr(store, 150.0, tol=20.0)


def test_root_that_is_not_json(stores, tmp_path):
    store = _copy(stores, "none", tmp_path)
    (store / "zarr.json").write_text("{not json")
    _assert_refused(store, "is not a zarr store")
    with pytest.raises(MissingFileError, match="no such MSI zarr store"):
        read_msi_zarr(tmp_path / "absent.zarr")


def test_huge_consistent_declaration_is_refused_before_allocating(stores, tmp_path):
    # A store without features has no chunks of X to count: every per-pixel array declares 10¹²
    # rows, consistently. Only the names' stored bytes bound them.
    store = _copy(stores, "no_features", tmp_path)
    huge = 10**12
    _edit(store, "X", _set("shape", [huge, 0]))
    for column in ("_index", "imzml_x", "imzml_y", "tic"):
        _edit(store, f"obs/{column}", _set("shape", [huge]))
        _edit(store, f"obs/{column}", _set_chunks([huge]))
    _edit(store, "obsm/spatial", _set("shape", [huge, 2]))
    _edit(store, ".", _set_provenance("n_spectra", huge))
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match=r"obs/_index declares 1,000,000,000,000 names"):
            read_msi_zarr(store)
        assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    finally:
        tracemalloc.stop()


def test_positions_spanning_a_huge_grid(stores, tmp_path):
    store = _copy(stores, "none", tmp_path)
    xs = zarr.open_array(store / "obs" / "imzml_x", mode="r+")
    xs[0] = 10**9
    assert read_msi_zarr(store).n_obs == 12  # the table itself is sound
    with pytest.raises(FileFormatError, match=r"positions span 1,000,000,000 × 3 grid cells"):
        ion_image_from_zarr(store, 150.0, tol=20.0)


def test_sound_stores_still_read(stores):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kind in ("none", "lz4"):
            adata = read_msi_zarr(stores[kind])
            assert adata.shape == (12, 11) and float(adata.X.sum().compute()) > 0
            assert ion_image_from_zarr(stores[kind], 150.0, tol=20.0).shape == (3, 4)
        assert read_msi_zarr(stores["no_features"]).shape == (12, 0)
