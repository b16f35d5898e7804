"""convert_imzml on a dask.distributed cluster: identical stores, and lazy steps run on workers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

zarr = pytest.importorskip("zarr", minversion="3")
pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from imzml_factory import grid_coords, write_simple  # noqa: E402
from scipy import sparse  # noqa: E402

from spatialfuse.io import convert_imzml, read_msi_zarr, sparse_matmul  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    return {
        "continuous": write_simple(
            folder, "cont", coords=grid_coords(24, 15), mode="continuous", n_peaks=400
        ),
        "processed": write_simple(
            folder, "proc", coords=grid_coords(20, 18), mode="processed", n_peaks=(40, 120), seed=2
        ),
    }


def _same_store(a, b):
    ra, rb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    assert ra["X"].chunks == rb["X"].chunks
    np.testing.assert_array_equal(ra["X"][:], rb["X"][:])
    A, B = read_msi_zarr(a), read_msi_zarr(b)
    pd.testing.assert_frame_equal(A.obs, B.obs)
    pd.testing.assert_frame_equal(A.var, B.var)
    np.testing.assert_array_equal(A.obsm["spatial"], B.obsm["spatial"])
    assert A.uns == B.uns
    assert ra.attrs["spatialfuse_store"]["converted_with"] == "local"
    assert rb.attrs["spatialfuse_store"]["converted_with"] == "dask.distributed"


@pytest.mark.parametrize("kind", ["continuous", "processed"])
@pytest.mark.parametrize(
    "windows", [{}, {"mz": [200.0, 450.5, 451.0, 800.0], "tol": 4.0}], ids=["axis", "mz"]
)
def test_cluster_conversion_is_identical(client, files, tmp_path, kind, windows):
    truth = files[kind]
    # Small chunks and budget: many tiles, spread over both workers.
    options = dict(chunks=(64, 16), max_memory="16MiB", **windows)
    local = convert_imzml(truth.imzml, tmp_path / "local.zarr", **options)
    with distributed.get_task_stream(client) as stream:
        remote = convert_imzml(truth.imzml, tmp_path / "remote.zarr", client=client, **options)
    _same_store(local, remote)
    tiles = [t for t in stream.data if "run_tile" in t["key"]]
    assert len(tiles) > 2 and len({t["worker"] for t in tiles}) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_scheduler_address_and_lazy_steps_on_the_cluster(client, files, tmp_path):
    truth = files["continuous"]
    address = client.scheduler.address
    local = convert_imzml(truth.imzml, tmp_path / "local.zarr", chunks=(100, 64))
    remote = convert_imzml(truth.imzml, tmp_path / "remote.zarr", chunks=(100, 64), client=address)
    _same_store(local, remote)

    adata = read_msi_zarr(remote)
    X = adata.X
    dense = zarr.open_group(local, mode="r")["X"][:].astype(np.float64)
    tic = client.compute(X.sum(axis=1, dtype=np.float64)).result()
    np.testing.assert_allclose(tic, dense.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(tic, adata.obs["tic"], rtol=1e-12)
    normalised = client.compute((X / X.sum(axis=1, keepdims=True)).sum(axis=0)).result()
    np.testing.assert_allclose(normalised, (dense / dense.sum(1, keepdims=True)).sum(0), 1e-5)
    rng = np.random.default_rng(0)
    W = sparse.random(40, X.shape[0], density=0.02, format="csr", random_state=rng)
    product = client.compute(sparse_matmul(W, X)).result()
    np.testing.assert_allclose(product, W @ dense, rtol=1e-10)


def _break_tiles():
    from spatialfuse.io.zarr_msi import _convert

    def failing(spec, tile, reader=None):
        raise RuntimeError("worker lost its disk")

    _convert._original_run_tile = _convert.run_tile
    _convert.run_tile = failing


def _mend_tiles():
    from spatialfuse.io.zarr_msi import _convert

    _convert.run_tile = _convert._original_run_tile


def test_failure_on_a_worker_leaves_no_output(client, files, tmp_path):
    truth = files["continuous"]
    out = tmp_path / "broken.zarr"
    client.run(_break_tiles)
    try:
        with pytest.raises(RuntimeError, match="worker lost its disk"):
            convert_imzml(truth.imzml, out, chunks=(64, 16), client=client)
    finally:
        client.run(_mend_tiles)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # The workers are fine afterwards.
    convert_imzml(truth.imzml, out, chunks=(64, 16), client=client)
    assert read_msi_zarr(out).n_obs == truth.n


@pytest.mark.parametrize("mode", ["continuous", "processed"])
def test_cluster_reads_nan_and_inf_intensities_as_zero(client, tmp_path, mode):
    import warnings

    from spatialfuse.datasets._writers import write_imzml
    from spatialfuse.errors import DataWarning

    rng = np.random.default_rng(4)
    coords = grid_coords(12, 10)
    axis = np.linspace(100.0, 900.0, 200)
    values = rng.gamma(2.0, 20.0, (len(coords), axis.size)).astype(np.float32)
    bad = [(3, 10, np.nan), (50, 10, np.inf), (50, 11, -np.inf), (119, 199, np.nan)]
    for i, j, v in bad:
        values[i, j] = v
    path = tmp_path / f"{mode}.imzML"
    mzs = axis if mode == "continuous" else [axis] * len(coords)
    ints = values if mode == "continuous" else list(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the writer's own TIC
        write_imzml(
            path,
            np.asarray(coords),
            mzs,
            ints,
            mode=mode,
            pixel_size_um=(5.0, 5.0),
            uuid_bytes=bytes(16),
            version="test",
        )
    zeroed = np.where(np.isfinite(values), values, 0).astype(np.float64)
    options = dict(chunks=(32, 16), max_memory="16MiB", mz=axis[8:14], tol=2 * (axis[1] - axis[0]))
    stores = {}
    for where, extra in (("local", {}), ("remote", {"client": client})):
        with pytest.warns(DataWarning, match="4 NaN or infinite intensities in 3 spectra"):
            stores[where] = convert_imzml(path, tmp_path / f"{where}.zarr", **options, **extra)
    with pytest.warns(DataWarning):  # each read of the two stores
        _same_store(stores["local"], stores["remote"])
    info = zarr.open_group(stores["remote"], mode="r").attrs["spatialfuse_store"]
    assert info["nonfinite_intensities"] == [4, 3]
    with pytest.warns(DataWarning, match="4 NaN or infinite intensities in 3 spectra"):
        adata = read_msi_zarr(stores["remote"])
    np.testing.assert_allclose(adata.obs["tic"], zeroed.sum(axis=1), rtol=1e-12)
    lo, hi = adata.var["mz_lo"].to_numpy(), adata.var["mz_hi"].to_numpy()
    inside = (axis[None, :] >= lo[:, None]) & (axis[None, :] <= hi[:, None])
    np.testing.assert_allclose(adata.X.compute(), zeroed @ inside.T, rtol=1e-6)
