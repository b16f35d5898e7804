"""zarr v3 sharding of a converted store's X (issue 17): thousands of files, not millions.

``convert_imzml`` writes X's chunks side by side in shards (one file per shard) by default; the
chunks, the unit reads use, stay as they were. A store of N chunks then has about
N / chunks_per_shard files, the same values, and is read as before.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

zarr = pytest.importorskip("zarr", minversion="3")
pytest.importorskip("dask.array")

from imzml_factory import grid_coords, write_simple  # noqa: E402

from spatialfuse.errors import FileFormatError  # noqa: E402
from spatialfuse.io import (  # noqa: E402
    convert_imzml,
    ion_image_from_zarr,
    read_imzml,
    read_msi_zarr,
)
from spatialfuse.io.zarr_msi._memory import (  # noqa: E402
    SHARD_TARGET_BYTES,
    parse_memory,
    plan_tiles,
    usable_memory,
)


def _files(folder) -> int:
    return sum(1 for _, _, names in os.walk(folder) for n in names if n != "zarr.json")


@pytest.fixture
def wide(tmp_path):
    # 30 × 20 pixels, 600 shared m/z values: with chunks of 100 × 4, 6 × 150 = 900 chunks.
    return write_simple(
        tmp_path, "wide", coords=grid_coords(30, 20), mode="continuous", n_peaks=600, seed=2
    )


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_a_sharded_store_has_one_file_per_shard_and_the_same_table(wide, tmp_path, compression):
    chunks = (100, 4)
    n_chunks = 6 * 150
    sharded = convert_imzml(wide.imzml, tmp_path / "s.zarr", chunks=chunks, compression=compression)
    plain = convert_imzml(
        wide.imzml, tmp_path / "p.zarr", chunks=chunks, compression=compression, shards=False
    )
    x = zarr.open_group(sharded, mode="r")["X"]
    rows, cols = x.shards
    assert tuple(x.chunks) == chunks and rows == chunks[0] and cols % chunks[1] == 0
    per_shard = cols // chunks[1]
    assert per_shard > 1
    info = zarr.open_group(sharded, mode="r").attrs["spatialfuse_store"]
    assert info["chunks"] == list(chunks) and info["shards"] == [rows, cols]
    assert zarr.open_group(plain, mode="r").attrs["spatialfuse_store"]["shards"] is None
    # files: one per shard (the count of chunks over the chunks per shard), one per chunk unsharded
    assert _files(plain / "X") == n_chunks
    assert _files(sharded / "X") == 6 * -(-150 // per_shard)
    assert _files(sharded / "X") <= 1.1 * n_chunks / per_shard
    # the same table, read lazily in the same chunks, and the same ion images
    lazy = read_msi_zarr(sharded)
    assert lazy.X.chunksize == chunks
    whole = read_msi_zarr(sharded, chunks="shards")
    assert (
        whole.X.chunksize == (rows, cols)
        and read_msi_zarr(plain, chunks="shards").X.chunksize == chunks
    )
    np.testing.assert_allclose(whole.X.sum(axis=1).compute(), lazy.X.sum(axis=1).compute(), 1e-6)
    ref = read_imzml(wide.imzml)
    np.testing.assert_array_equal(np.asarray(lazy.X.compute()), np.asarray(ref.X))
    np.testing.assert_array_equal(np.asarray(lazy.X.compute()), read_msi_zarr(plain).X.compute())
    mz = float(ref.var["mz"].iloc[123])
    np.testing.assert_array_equal(
        ion_image_from_zarr(sharded, mz, tol=1e-6), ion_image_from_zarr(plain, mz, tol=1e-6)
    )


def test_default_chunks_are_sharded_too(wide, tmp_path):
    out = convert_imzml(wide.imzml, tmp_path / "d.zarr")
    x = zarr.open_group(out, mode="r")["X"]
    # 600 pixels × 32 columns per chunk: 19 chunks, all in one shard
    assert tuple(x.chunks) == (600, 32) and x.shards == (600, 608)
    assert _files(out / "X") == 1
    np.testing.assert_array_equal(read_msi_zarr(out).X.compute(), read_imzml(wide.imzml).X)


def test_a_missing_shard_is_refused(wide, tmp_path):
    out = convert_imzml(wide.imzml, tmp_path / "m.zarr", chunks=(100, 4))
    shard = next(p for p in (out / "X").rglob("*") if p.is_file() and p.name != "zarr.json")
    shard.unlink()
    with pytest.raises(FileFormatError, match=r"shard files are stored: the store is incomplete"):
        read_msi_zarr(out)


@pytest.mark.parametrize("budget", ["16MiB", "64MiB", "2GB"])
@pytest.mark.parametrize("streamed", [False, True])
def test_shards_fit_the_budget_and_tiles_are_whole_shards(budget, streamed):
    n, k = 2_000_000, 10_000
    size = parse_memory(budget)
    for shape in [(50_000, 10_000), (n, k), (300, 146_000)]:
        try:
            plan = plan_tiles(*shape, size, whole_band=not streamed, streamed=streamed, shards=True)
        except ValueError:  # the budget cannot hold the per-spectrum state
            continue
        chunk_bytes = plan.chunk_bytes
        shard_bytes = plan.shard_chunks * chunk_bytes
        assert shard_bytes <= max(chunk_bytes, SHARD_TARGET_BYTES)
        # zarr encodes a whole shard per write: within the quarter of the budget set aside
        assert shard_bytes <= max(chunk_bytes, usable_memory(shape[0], size) // 4)
        width = plan.chunk_cols * plan.shard_chunks
        assert plan.stripe_chunks == plan.shard_chunks or plan.shard_chunks == 1
        for _, _, c0, c1 in plan.tiles()[:50]:
            assert c0 % width == 0 and (c1 % width == 0 or c1 == shape[1])
        unsharded = plan_tiles(*shape, size, whole_band=not streamed, streamed=streamed)
        assert (unsharded.chunk_rows, unsharded.chunk_cols) == (plan.chunk_rows, plan.chunk_cols)
