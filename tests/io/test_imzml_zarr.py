"""convert_imzml / read_msi_zarr: the zarr store equals read_imzml, memory stays in budget, writes
are atomic, and the all-pixel steps run chunk by chunk on the dask-backed table."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("zarr", minversion="3")
da = pytest.importorskip("dask.array")

from click.testing import CliRunner  # noqa: E402
from imzml_factory import grid_coords, make_spectra, write_imzml, write_simple  # noqa: E402
from pyimzml.ImzMLWriter import ImzMLWriter  # noqa: E402
from scipy import sparse  # noqa: E402

from spatialfuse.cli.main import cli  # noqa: E402
from spatialfuse.errors import FileFormatError, MissingFileError  # noqa: E402
from spatialfuse.io import (  # noqa: E402
    ImzMLReader,
    build_mz_axis,
    convert_imzml,
    ion_image_from_zarr,
    read_imzml,
    read_msi_zarr,
    sparse_matmul,
)
from spatialfuse.io.zarr_msi import _tiles, parse_memory  # noqa: E402
from spatialfuse.io.zarr_msi._memory import plan_tiles  # noqa: E402

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

WINDOWS = {"mz": [150.5, 300.0, 300.2, 555.5, 900.0], "tol": 3.0}


def _dense(x):
    if isinstance(x, da.Array):
        x = x.compute()
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


def assert_same_table(store_adata, ref):
    """The store's table equals read_imzml's: X exactly, obs/var/obsm, provenance but the reader."""
    assert isinstance(store_adata.X, da.Array)
    assert store_adata.X.dtype == np.float32
    np.testing.assert_array_equal(_dense(store_adata.X), _dense(ref.X))
    pd.testing.assert_frame_equal(store_adata.obs, ref.obs)
    pd.testing.assert_frame_equal(store_adata.var, ref.var)
    np.testing.assert_array_equal(store_adata.obsm["spatial"], ref.obsm["spatial"])
    ours, theirs = dict(store_adata.uns["spatialfuse"]), dict(ref.uns["spatialfuse"])
    assert ours.pop("reader") == "convert_imzml"
    theirs.pop("reader")
    assert ours == theirs


@pytest.fixture
def continuous(tmp_path):
    # 9 × 7 pixels from (3, 2), 300 shared m/z values, integer-valued float32 intensities.
    return write_simple(
        tmp_path, "cont", coords=grid_coords(9, 7, x0=3, y0=2), mode="continuous", n_peaks=300
    )


@pytest.fixture
def processed(tmp_path):
    return write_simple(
        tmp_path, "proc", coords=grid_coords(8, 6), mode="processed", n_peaks=(30, 90), seed=3
    )


# -------------------------------------------------------------------------------- equality


@pytest.mark.parametrize("kind", ["continuous", "processed"])
@pytest.mark.parametrize("windows", [False, True], ids=["own-axis", "mz-windows"])
@pytest.mark.parametrize("chunks", [None, (10, 7)], ids=["default-chunks", "small-chunks"])
def test_store_equals_read_imzml(request, tmp_path, kind, windows, chunks):
    truth = request.getfixturevalue(kind)
    kwargs = dict(WINDOWS) if windows else {}
    out = convert_imzml(truth.imzml, tmp_path / "out.zarr", chunks=chunks, **kwargs)
    assert out == (tmp_path / "out.zarr").absolute() and out.is_dir()
    assert_same_table(read_msi_zarr(out), read_imzml(truth.imzml, **kwargs))


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd", None, "auto", "LZ4"])
def test_compressions_store_the_same_values(continuous, tmp_path, compression):
    out = convert_imzml(continuous.imzml, tmp_path / "c.zarr", compression=compression)
    assert_same_table(read_msi_zarr(out), read_imzml(continuous.imzml))


def test_auto_compression_raw_for_own_axis_lz4_for_binned(continuous, processed, tmp_path):
    import zarr

    def stored(path, **kwargs):
        out = convert_imzml(path, tmp_path / "s.zarr", overwrite=True, **kwargs)
        codecs = [c.to_dict()["name"] for c in zarr.open_array(out / "X").compressors]
        return zarr.open_group(out).attrs["spatialfuse_store"]["compression"], codecs

    assert stored(continuous.imzml) == ("none", [])
    assert stored(continuous.imzml, **WINDOWS) == ("lz4", ["blosc"])
    assert stored(processed.imzml) == ("lz4", ["blosc"])
    assert stored(processed.imzml, compression="zstd") == ("zstd", ["zstd"])


def test_compressed_ibd_and_float64_intensities(tmp_path):
    # zlib arrays: no strided matrix view, so tiles and the TIC go spectrum by spectrum.
    truth = write_simple(
        tmp_path,
        "z",
        coords=grid_coords(6, 5),
        mode="continuous",
        n_peaks=200,
        intensity_dtype=np.float64,
        compression="zlib",
    )
    for kwargs in ({}, WINDOWS):
        out = convert_imzml(truth.imzml, tmp_path / "z.zarr", overwrite=True, **kwargs)
        ref = read_imzml(truth.imzml, **kwargs)
        assert_same_table(read_msi_zarr(out), ref)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.int64])
def test_other_intensity_dtypes_become_float32(tmp_path, dtype):
    rng = np.random.default_rng(4)
    spectra = make_spectra(20, mode="continuous", n_peaks=64, intensity_dtype=dtype, seed=4)
    if dtype is np.float64:  # values float32 cannot hold exactly: both round the same way
        spectra = [(mz, rng.random(mz.size) * 1e3) for mz, _ in spectra]
    truth = write_imzml(tmp_path / "d.imzML", spectra, grid_coords(5, 4), intensity_dtype=dtype)
    for kwargs in ({}, WINDOWS):
        out = convert_imzml(truth.imzml, tmp_path / "d.zarr", overwrite=True, **kwargs)
        assert_same_table(read_msi_zarr(out), read_imzml(truth.imzml, **kwargs))


def test_mz_axis_object_uses_its_own_windows(processed, tmp_path):
    with ImzMLReader(processed.imzml) as reader:
        axis = build_mz_axis(reader, ppm=20, min_frequency=0)
    out = convert_imzml(processed.imzml, tmp_path / "a.zarr", mz=axis)
    adata = read_msi_zarr(out)
    np.testing.assert_array_equal(adata.var["mz_lo"], axis.lo)
    np.testing.assert_array_equal(adata.var["mz_hi"], axis.hi)
    ref = read_imzml(processed.imzml, ppm=20, min_frequency=0)
    np.testing.assert_array_equal(_dense(adata.X), _dense(ref.X))
    assert adata.uns["spatialfuse"]["windows"] == {"kind": "axis"}
    with pytest.raises(ValueError, match="carries its own windows"):
        convert_imzml(processed.imzml, tmp_path / "b.zarr", mz=axis, ppm=5)


def test_three_d_coordinates_and_pixel_size_argument(tmp_path):
    coords = [(x, y, z) for z in (1, 2) for y in (1, 2) for x in (1, 2, 3)]
    spectra = make_spectra(len(coords), mode="continuous", n_peaks=40, seed=5)
    truth = write_imzml(tmp_path / "d3.imzML", spectra, coords, pixel_size=None)
    out = convert_imzml(truth.imzml, tmp_path / "d3.zarr", pixel_size_um=(10, 20))
    adata = read_msi_zarr(out)
    assert "imzml_z" in adata.obs and adata.obs_names[0] == "1_1_1"
    assert adata.uns["spatialfuse"]["pixel_size_source"] == "argument"
    assert_same_table(adata, read_imzml(truth.imzml, pixel_size_um=(10, 20)))


def test_anndata_read_zarr_opens_the_store_in_memory(continuous, tmp_path):
    import anndata as ad

    out = convert_imzml(continuous.imzml, tmp_path / "c.zarr")
    adata = ad.read_zarr(out)
    ref = read_imzml(continuous.imzml)
    np.testing.assert_array_equal(adata.X, ref.X)
    pd.testing.assert_frame_equal(adata.obs, ref.obs)
    assert adata.uns["spatialfuse"]["mode"] == "continuous"


# -------------------------------------------------------------------------------- memory


def _traced_peak(fn):
    """``fn()`` and the tracemalloc peak above what was allocated when it began.

    Modules a conversion imports lazily (zarr codecs, anndata's writers) are imported first, by
    a tiny conversion, so the peak is the conversion's, not the imports'.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        truth = write_simple(folder, "warm", coords=grid_coords(2, 2), n_peaks=10)
        for mode_kwargs in ({}, {"mz": [300.0], "compression": "lz4"}):
            convert_imzml(truth.imzml, Path(folder) / "w.zarr", overwrite=True, **mode_kwargs)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak - before


def test_few_hundred_mb_file_converts_within_64mb(tmp_path):
    """A 256 MB continuous file, max_memory="64MB": traced peak under it, table exact."""
    path = tmp_path / "big.imzML"
    n_mz, nx, ny = 10_000, 80, 80
    axis = np.linspace(100.0, 1000.0, n_mz)
    rng = np.random.default_rng(11)
    with ImzMLWriter(
        str(path), mz_dtype=np.float64, intensity_dtype=np.float32, mode="continuous"
    ) as writer:
        for y in range(1, ny + 1):
            block = rng.standard_exponential((nx, n_mz), dtype=np.float32)
            for x in range(1, nx + 1):
                writer.addSpectrum(axis, block[x - 1], (x, y, 1))
    assert path.with_suffix(".ibd").stat().st_size > 250e6
    with ImzMLReader(path):
        pass  # fill the offset-table cache, as a first open would

    out, peak = _traced_peak(
        lambda: convert_imzml(path, tmp_path / "big.zarr", max_memory="64MB", pixel_size_um=20)
    )
    assert peak < parse_memory("64MB"), f"traced peak {peak / 1e6:.1f} MB"

    adata = read_msi_zarr(out)
    ref = read_imzml(path, pixel_size_um=20)
    # Row bands at a time, so the comparison itself stays small.
    step = adata.X.chunks[0][0]
    for a in range(0, nx * ny, step):
        np.testing.assert_array_equal(adata.X[a : a + step].compute(), ref.X[a : a + step])
    pd.testing.assert_frame_equal(adata.obs, ref.obs)
    pd.testing.assert_frame_equal(adata.var, ref.var)


def test_processed_file_converts_within_32mb(tmp_path):
    """20,000 processed spectra (72 MB .ibd, 3,000+ features): tiles and peaks within budget."""
    rng = np.random.default_rng(12)
    path = tmp_path / "peaks.imzML"
    ions = np.sort(rng.uniform(100, 1000, 3000))
    with ImzMLWriter(
        str(path), mz_dtype=np.float64, intensity_dtype=np.float32, mode="processed"
    ) as writer:
        for y in range(1, 101):
            for x in range(1, 201):
                k = int(rng.integers(200, 400))
                drawn = rng.choice(ions, k // 2, replace=False)
                mz = drawn * (1 + 1e-6 * rng.standard_normal(k // 2))
                mz = np.sort(np.concatenate([mz, rng.uniform(100, 1000, k - k // 2)]))
                writer.addSpectrum(mz, rng.standard_exponential(k).astype(np.float32), (x, y, 1))
    with ImzMLReader(path) as reader:
        axis = build_mz_axis(reader)  # outside the budget (see docs/out_of_core.md)
    assert len(axis) > 3000

    out, peak = _traced_peak(
        lambda: convert_imzml(
            path, tmp_path / "p.zarr", mz=axis, max_memory="32MB", pixel_size_um=10
        )
    )
    assert peak < parse_memory("32MB"), f"traced peak {peak / 1e6:.1f} MB"
    adata = read_msi_zarr(out)
    assert len(adata.X.chunks[0]) > 1 and len(adata.X.chunks[1]) > 10
    ref = read_imzml(path, pixel_size_um=10)
    np.testing.assert_array_equal(adata.X.compute(), ref.X.toarray())
    pd.testing.assert_frame_equal(adata.obs, ref.obs)


@pytest.mark.parametrize("kind", ["processed", "continuous"])
def test_small_budget_tiles_give_the_same_table(request, tmp_path, kind, monkeypatch):
    # A tiny budget and one-row work blocks: tiles, row blocks and write stripes all split.
    truth = request.getfixturevalue(kind)
    import dataclasses

    from spatialfuse.io.zarr_msi import _convert, _memory

    monkeypatch.setattr(_memory, "MIN_MEMORY", 1)
    monkeypatch.setattr(_memory, "BASE_OVERHEAD", 0)
    monkeypatch.setattr(_memory, "PER_SPECTRUM_BYTES", 0)
    plans = []

    def tiny_work(*args, **kwargs):
        plans.append(dataclasses.replace(_memory.plan_tiles(*args, **kwargs), work_bytes=1))
        return plans[-1]

    monkeypatch.setattr(_convert, "plan_tiles", tiny_work)
    for kwargs in ({}, WINDOWS):
        out = convert_imzml(
            truth.imzml,
            tmp_path / "t.zarr",
            max_memory=20_000,
            chunks=(5, 20),
            overwrite=True,
            **kwargs,
        )
        assert_same_table(read_msi_zarr(out), read_imzml(truth.imzml, **kwargs))
    if kind == "processed":  # its own axis: ~2,000 features, several tiles per row band
        assert len(plans[0].tiles()) > 2 * -(-truth.n // 5)
    assert plans[0].stripe_chunks < plans[0].tile_cols // 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GB", 2 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1.5 gb", 1_500_000_000),
        ("64mb", 64 * 10**6),
        ("1e9", 10**9),
        (123456789, 123456789),
        (2.5e8, 250_000_000),
    ],
)
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "lots", "2 XB", "-1GB", "0", "0MB", "GB", "1.2.3GB", "nan", None, True, [1], -5]
)
def test_bad_max_memory_is_a_value_error(continuous, tmp_path, bad):
    with pytest.raises(ValueError, match="max_memory"):
        convert_imzml(continuous.imzml, tmp_path / "x.zarr", max_memory=bad)
    assert not (tmp_path / "x.zarr").exists()


def test_budget_too_small_or_chunks_too_large(continuous, tmp_path):
    with pytest.raises(ValueError, match="below the minimum"):
        convert_imzml(continuous.imzml, tmp_path / "x.zarr", max_memory="1MB")
    with pytest.raises(ValueError, match="do not fit max_memory"):
        plan_tiles(10**4, 10**4, parse_memory("256MiB"), chunks=(10**4, 10**3))
    # Per-spectrum state (offset table, names) counts too: a million spectra need ~680 MiB.
    with pytest.raises(ValueError, match=r"too small for 1,000,000 spectra.*at least"):
        plan_tiles(10**6, 100, parse_memory("512MiB"))
    assert plan_tiles(10**6, 100, parse_memory("1GiB")).chunk_rows > 0
    # Chunks larger than the table are cut to it, so these fit.
    convert_imzml(continuous.imzml, tmp_path / "y.zarr", max_memory="16MiB", chunks=(10**6, 10**3))
    with pytest.raises(ValueError, match="chunks must be"):
        convert_imzml(continuous.imzml, tmp_path / "x.zarr", chunks=(0, 5))
    assert not (tmp_path / "x.zarr").exists()


# -------------------------------------------------------------------------------- safety


def test_refuses_to_overwrite_unless_asked(continuous, processed, tmp_path):
    out = convert_imzml(continuous.imzml, tmp_path / "s.zarr")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_imzml(processed.imzml, out)
    assert read_msi_zarr(out).uns["spatialfuse"]["mode"] == "continuous"
    convert_imzml(processed.imzml, out, overwrite=True)
    assert read_msi_zarr(out).uns["spatialfuse"]["mode"] == "processed"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_overwrite_never_replaces_something_that_is_not_a_store(continuous, tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.txt").write_text("do not delete")
    with pytest.raises(FileExistsError, match="not a zarr store"):
        convert_imzml(continuous.imzml, folder, overwrite=True)
    afile = tmp_path / "file.zarr"
    afile.write_text("x")
    with pytest.raises(FileExistsError, match="not a zarr store"):
        convert_imzml(continuous.imzml, afile, overwrite=True)
    assert (folder / "thesis.txt").read_text() == "do not delete"
    assert afile.read_text() == "x"


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_failure_midway_leaves_nothing_at_the_output(continuous, tmp_path, monkeypatch, existing):
    out = tmp_path / "atomic.zarr"
    if existing:
        convert_imzml(continuous.imzml, out, compression="none")
        before = read_msi_zarr(out).X.compute()
    real = _tiles.write_stripes
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(_tiles, "write_stripes", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert_imzml(
            continuous.imzml, out, chunks=(10, 20), max_memory="16MiB", overwrite=existing
        )
    assert len(calls) == 4  # it did fail mid-way, after writing some chunks
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    if existing:
        np.testing.assert_array_equal(read_msi_zarr(out).X.compute(), before)
    else:
        assert not out.exists()


def test_keyboard_interrupt_cleans_up(continuous, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_tiles, "write_stripes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_imzml(continuous.imzml, tmp_path / "k.zarr")
    assert list(tmp_path.glob("*k.zarr*")) == []


def test_ppm_and_tol_together_and_bad_compression(continuous, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        convert_imzml(continuous.imzml, tmp_path / "x.zarr", mz=[300.0], ppm=5, tol=0.1)
    with pytest.raises(ValueError, match="compression must be"):
        convert_imzml(continuous.imzml, tmp_path / "x.zarr", compression="gzip9")
    assert not (tmp_path / "x.zarr").exists()


def test_read_msi_zarr_errors(tmp_path, continuous):
    import zarr

    with pytest.raises(MissingFileError):
        read_msi_zarr(tmp_path / "absent.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    with pytest.raises(FileFormatError, match="not an MSI store"):
        read_msi_zarr(tmp_path / "other.zarr")
    with pytest.raises(FileFormatError):
        ion_image_from_zarr(tmp_path / "other.zarr", 300.0)


# -------------------------------------------------------------------------------- ion images


@pytest.mark.parametrize("chunks", [None, (8, 16)])
def test_ion_image_from_zarr_equals_reader(continuous, tmp_path, chunks):
    out = convert_imzml(continuous.imzml, tmp_path / "c.zarr", chunks=chunks)
    axis = continuous.mzs[0].astype(np.float64)
    with ImzMLReader(continuous.imzml) as reader:
        for mz, window in [
            (axis[10], {"tol": 0.0}),
            (axis[150], {"tol": 5.0}),
            ((axis[40] + axis[41]) / 2, {"ppm": 50}),
            (axis[299], {}),
            (50.0, {"tol": 1.0}),  # below the axis: nothing
            (555.5, {"tol": 400.0}),  # nearly everything
        ]:
            expected = reader.ion_image(mz, **window)
            got = ion_image_from_zarr(out, mz, **window)
            assert got.dtype == np.float64
            np.testing.assert_array_equal(got, expected)
        assert np.isnan(ion_image_from_zarr(out, axis[3], tol=0)).sum() == 0
    sparse_coords = write_simple(
        tmp_path, "holes", coords=[(1, 1), (4, 2), (2, 3)], mode="continuous", n_peaks=30
    )
    out = convert_imzml(sparse_coords.imzml, tmp_path / "h.zarr")
    with ImzMLReader(sparse_coords.imzml) as reader:
        mz = float(sparse_coords.mzs[0][7])
        np.testing.assert_array_equal(
            ion_image_from_zarr(out, mz, tol=0.5, fill=-1.0), reader.ion_image(mz, tol=0.5, fill=-1)
        )


def test_ion_image_from_binned_store_sums_features_in_window(processed, tmp_path):
    out = convert_imzml(processed.imzml, tmp_path / "p.zarr", ppm=50, min_frequency=0)
    adata = read_msi_zarr(out)
    centres = adata.var["mz"].to_numpy()
    mz, tol = float(centres[len(centres) // 2]), 2.0
    chosen = (centres >= mz - tol) & (centres <= mz + tol)
    values = _dense(adata.X)[:, chosen].sum(axis=1, dtype=np.float64)
    with ImzMLReader(processed.imzml) as reader:
        expected = reader.to_image(values)
    np.testing.assert_array_equal(ion_image_from_zarr(out, mz, tol=tol), expected)


# -------------------------------------------------------------------------------- lazy steps


class _LargestTask:
    """dask callback recording the largest array any task produced."""

    def __init__(self):
        from dask.callbacks import Callback

        self.largest = 0
        outer = self

        class _CB(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                outer.largest = max(outer.largest, getattr(result, "nbytes", 0))

        self.callback = _CB()


@pytest.fixture
def lazy_store(tmp_path):
    truth = write_simple(
        tmp_path, "lazy", coords=grid_coords(30, 20), mode="continuous", n_peaks=400, seed=9
    )
    out = convert_imzml(truth.imzml, tmp_path / "lazy.zarr", chunks=(100, 50))
    return read_msi_zarr(out), read_imzml(truth.imzml)


def test_tic_and_normalisation_run_chunk_by_chunk(lazy_store):
    adata, ref = lazy_store
    X, dense = adata.X, ref.X.astype(np.float64)
    chunk_bytes = 100 * 50 * 4
    tic = X.sum(axis=1, dtype=np.float64)
    normalised = X / tic[:, None]
    per_feature = normalised.mean(axis=0)
    assert isinstance(tic, da.Array) and isinstance(per_feature, da.Array)
    probe = _LargestTask()
    with probe.callback:
        tic_values, mean_values = da.compute(tic, per_feature, scheduler="sync")
    # No task ever held more than about two chunks (float64 copies of one float32 chunk).
    assert 0 < probe.largest <= 2 * chunk_bytes, probe.largest
    np.testing.assert_allclose(tic_values, dense.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(tic_values, adata.obs["tic"], rtol=1e-12)
    np.testing.assert_allclose(
        mean_values, (dense / dense.sum(axis=1, keepdims=True)).mean(axis=0), rtol=1e-6
    )
    stored = X / adata.obs["tic"].to_numpy()[:, None]
    np.testing.assert_allclose(stored[:7].compute(), dense[:7] / dense[:7].sum(1)[:, None], 1e-6)


def test_sparse_matmul_is_chunk_wise_and_matches_scipy(lazy_store):
    adata, ref = lazy_store
    X = adata.X
    rng = np.random.default_rng(1)
    n_pixels = X.shape[0]
    # Spots touching pixels 0–349 only: row blocks 4 and 5 (350–599) must never be read.
    rows = np.repeat(np.arange(25), 6)
    cols = rng.integers(0, 350, rows.size)
    W = sparse.csr_matrix((rng.random(rows.size), (rows, cols)), shape=(25, n_pixels))
    result = sparse_matmul(W, X)
    assert isinstance(result, da.Array) and result.shape == (25, X.shape[1])
    probe = _LargestTask()
    with probe.callback:
        values = result.compute(scheduler="sync")
    assert probe.largest <= 2 * 100 * 50 * 8
    np.testing.assert_allclose(values, W @ ref.X.astype(np.float64), rtol=1e-10)
    from dask.core import flatten

    needed = result.__dask_graph__().cull(set(flatten(result.__dask_keys__())))
    read = {k[1] for k in needed if isinstance(k, tuple) and k[0].startswith("from-zarr")}
    assert read == {0, 1, 2, 3}
    # csr_array, CSC, dense weights and a W touching nothing all work.
    np.testing.assert_allclose(sparse_matmul(sparse.csr_array(W), X).compute(), values, 1e-12)
    np.testing.assert_allclose(sparse_matmul(W.tocsc(), X).compute(), values, 1e-12)
    np.testing.assert_allclose(sparse_matmul(W.toarray(), X).compute(), values, 1e-12)
    empty = sparse_matmul(sparse.csr_matrix((3, n_pixels)), X)
    assert empty.shape == (3, X.shape[1]) and not empty.compute().any()
    with pytest.raises(ValueError, match="columns"):
        sparse_matmul(sparse.csr_matrix((3, n_pixels + 1)), X)
    # In memory, it is the plain product.
    np.testing.assert_allclose(sparse_matmul(W, ref.X), W @ ref.X)


def test_read_msi_zarr_custom_chunks(lazy_store, tmp_path):
    adata, _ = lazy_store
    path = adata.uns["spatialfuse"]["file"]
    assert path.endswith("lazy.imzML")
    out = tmp_path / "lazy.zarr"
    other = read_msi_zarr(out, chunks=(200, 100))
    assert other.X.chunks[0][0] == 200 and other.X.chunks[1][0] == 100
    np.testing.assert_array_equal(other.X.compute(), adata.X.compute())


# -------------------------------------------------------------------------------- CLI


def test_cli_convert(continuous, tmp_path):
    out = tmp_path / "cli.zarr"
    runner = CliRunner()
    args = ["convert", str(continuous.imzml), str(out), "--max-memory", "32MB"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "cli.zarr" in result.output
    assert_same_table(read_msi_zarr(out), read_imzml(continuous.imzml))

    again = runner.invoke(cli, args)
    assert again.exit_code != 0 and "--overwrite" in again.output
    windows = runner.invoke(
        cli,
        [*args, "--overwrite", "--mz", "300", "--mz", "555.5", "--tol", "3", "--chunks", "10,1"],
    )
    assert windows.exit_code == 0, windows.output
    assert read_msi_zarr(out).shape == (continuous.n, 2)
    bad = runner.invoke(cli, [*args, "--overwrite", "--max-memory", "lots"])
    assert bad.exit_code != 0 and "max_memory" in bad.output
    bad_chunks = runner.invoke(cli, [*args, "--overwrite", "--chunks", "ten"])
    assert bad_chunks.exit_code != 0 and "ROWS,COLS" in bad_chunks.output


# -------------------------------------------------------------------------------- benchmark


@pytest.mark.slow
def test_quick_benchmark_runs_and_checks_itself(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_zarr.py"
    out = tmp_path / "results.json"
    env = {
        **os.environ,
        "SPATIALFUSE_CACHE_DIR": str(tmp_path / "cache"),
        "SPATIALFUSE_BENCH_DATA": str(tmp_path / "data"),
    }
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--repeat", "1", "--json", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "MEANINGLESS" in proc.stdout
    result = json.loads(out.read_text())
    assert result["all_checks_passed"] and len(result["checks"]) >= 6
    assert set(result["sections"]) >= {"throughput", "processed", "memory", "reads", "lazy"}
    assert not (tmp_path / "data" / "zarr_work").exists()
