"""sf.pp.recalibrate straight from an imzML path: streamed over the .ibd, lazily resampled,
the same numbers as the in-memory table, in blocks of bounded size."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from spectra_data import PEAKS, profile_table

import spatialfuse as sf
from spatialfuse.datasets._writers import write_imzml
from spatialfuse.pp import _recalibrate

DRIFT = np.linspace(-12.0, 12.0, 24)


def _write(path, table, nx: int, *, mode: str = "continuous"):
    n = table.n_obs
    coords = np.array([(i % nx + 1, i // nx + 1) for i in range(n)])
    mz = table.var["mz"].to_numpy()
    x = np.asarray(table.X)
    if mode == "processed":
        mz, x = [mz] * n, list(x)
    write_imzml(
        path,
        coords,
        mz,
        x,
        mode=mode,
        pixel_size_um=(20.0, 20.0),
        uuid_bytes=bytes(range(16)),
        version="1.1.0",
    )
    return path


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    table = profile_table(n_pixels=24, drift_ppm=DRIFT, seed=3)
    return _write(tmp_path_factory.mktemp("stream") / "drifted.imzML", table, 6)


@pytest.mark.parametrize("references", [None, [PEAKS[1], PEAKS[4], PEAKS[6]]])
def test_a_path_gives_the_in_memory_result_lazily(drifted, references):
    streamed = sf.pp.recalibrate(drifted, reference_mz=references, n_references=6)
    assert hasattr(streamed.X, "dask")  # nothing read beyond what was measured
    assert streamed.obsm["spatial"].shape == (24, 2) and "imzml_x" in streamed.obs
    table = sf.io.read_imzml(drifted)
    sf.pp.recalibrate(table, reference_mz=references, n_references=6)
    # (the mean spectrum is summed in float64 from the file, in float32 from the table)
    np.testing.assert_allclose(
        streamed.obs["recalibration_ppm"], table.obs["recalibration_ppm"], atol=1e-3
    )
    got, want = streamed.uns["recalibration"], table.uns["recalibration"]
    assert got["median_abs_ppm_before"] == pytest.approx(want["median_abs_ppm_before"], abs=1e-3)
    assert got["median_abs_ppm_after"] == pytest.approx(want["median_abs_ppm_after"], abs=1e-3)
    assert got["median_abs_ppm_before"] > 5 and got["median_abs_ppm_after"] < 1
    np.testing.assert_allclose(np.asarray(streamed.X.compute()), table.X, rtol=1e-6, atol=1e-4)
    # and peak picking streams the lazy table into the same peaks
    a, b = sf.pp.pick_peaks(streamed), sf.pp.pick_peaks(table)
    np.testing.assert_allclose(a.var["mz"], b.var["mz"], rtol=1e-9)
    np.testing.assert_allclose(np.asarray(a.X), np.asarray(b.X), rtol=1e-5)
    error = np.abs(a.var["mz"].to_numpy() - PEAKS) / PEAKS * 1e6
    assert a.n_vars == PEAKS.size and error.max() < 1, error


def test_blocks_are_bounded_rows_of_the_file(drifted, monkeypatch):
    """With a chunk of 5 spectra, no block read or resampled holds more than 5 rows."""
    import dask

    n_points = sf.io.read_imzml(drifted).n_vars
    monkeypatch.setattr(_recalibrate, "_CHUNK_VALUES", 5 * n_points)
    seen = []

    class Watch(dask.callbacks.Callback):
        def _posttask(self, key, result, dsk, state, id):
            # chunk tasks have (name, i, j) keys; the final assembly of compute() does not
            if isinstance(key, tuple) and isinstance(result, np.ndarray):
                seen.append(result.shape[0])

    streamed = sf.pp.recalibrate(drifted, n_references=6)
    assert streamed.X.chunks[0] == (5, 5, 5, 5, 4)
    with Watch():
        streamed.X.compute()
    assert seen and max(seen) <= 5


@pytest.mark.slow
def test_memory_is_set_by_the_chunk_not_the_file(tmp_path, monkeypatch):
    """400 px × 84,731 points (129 MiB dense as float32), chunks of 4 spectra: recalibrating
    and picking from the path allocate a fraction of the table (numpy arrays traced); the
    working memory is a few times one chunk (float64 copies), whatever the file's size."""
    from spatialfuse.pp import _peaks

    table = profile_table(n_pixels=400, drift_ppm=np.linspace(-10, 10, 400), seed=1)
    path = _write(tmp_path / "big.imzML", table, 20)
    dense = table.X.nbytes
    chunk = 4 * table.n_vars
    del table
    monkeypatch.setattr(_recalibrate, "_CHUNK_VALUES", chunk)
    monkeypatch.setattr(_peaks, "_CHUNK_VALUES", chunk)
    tracemalloc.start()
    try:
        streamed = sf.pp.recalibrate(path, n_references=6)
        peaks = sf.pp.pick_peaks(streamed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peaks.n_vars == PEAKS.size
    assert streamed.uns["recalibration"]["median_abs_ppm_after"] < 1
    assert peak < 0.3 * dense, (peak / 2**20, dense / 2**20)


def test_a_processed_file_is_refused_naming_it(tmp_path):
    """Processed profile spectra whose m/z move from pixel to pixel (here 0.4 ppm a pixel)
    are refused by name; on one shared grid they are read (test_recalibrate_centroid)."""
    table = profile_table(n_pixels=4, seed=2)
    path = tmp_path / "processed.imzML"
    mz = table.var["mz"].to_numpy()
    write_imzml(
        path,
        np.array([(i % 2 + 1, i // 2 + 1) for i in range(4)]),
        [mz * (1 + 0.4e-6 * i) for i in range(4)],
        list(np.asarray(table.X)),
        mode="processed",
        pixel_size_um=(20.0, 20.0),
        uuid_bytes=bytes(range(16)),
        version="1.1.0",
    )
    with pytest.raises(ValueError, match=r"processed\.imzML.*continuous imzML"):
        sf.pp.recalibrate(path)
