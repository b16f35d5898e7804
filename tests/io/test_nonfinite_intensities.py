"""NaN and ±inf intensities are read as 0 on every path that turns intensities into values.

Each path (read_imzml, the ImzMLReader methods, convert_imzml and the zarr readers) is compared
with numpy on the written intensities with the non-finite ones set to 0, and warns exactly once,
naming the file and the counts, with no RuntimeWarning from the arithmetic.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse

from spatialfuse.datasets._writers import write_imzml
from spatialfuse.errors import DataWarning
from spatialfuse.io import (
    ImzMLReader,
    convert_imzml,
    ion_image_from_zarr,
    read_imzml,
    read_msi_zarr,
)

COORDS = np.array([(x, y) for y in range(1, 4) for x in range(1, 5)])  # 4 × 3 grid, 12 spectra
AXIS = 100.0 + 10.0 * np.arange(40)  # 100, 110, ..., 490
#: (spectrum, point, value): windows of ± 15 around 150/160 hold finite and non-finite values.
BAD = [(1, 5, np.nan), (2, 5, np.inf), (2, 6, -np.inf), (7, 0, np.nan), (7, 39, np.inf)]
N_BAD, N_BAD_SPECTRA = 5, 3
WINDOWS = {"mz": [150.0, 160.0, 300.0, 490.0], "tol": 15.0}


def _write(path, mode):
    rng = np.random.default_rng(5)
    values = rng.gamma(2.0, 20.0, (len(COORDS), AXIS.size)).astype(np.float32)
    for i, j, v in BAD:
        values[i, j] = v
    if mode == "continuous":
        mzs, intensities = AXIS, values
    else:  # each spectrum keeps its own subset of the axis (and every bad point)
        keep = rng.random(values.shape) < 0.6
        for i, j, _ in BAD:
            keep[i, j] = True
        mzs = [AXIS[k] for k in keep]
        intensities = [values[i][keep[i]] for i in range(len(COORDS))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the writer sums the NaN for its TIC
        write_imzml(
            path,
            COORDS,
            mzs,
            intensities,
            mode=mode,
            pixel_size_um=(10.0, 10.0),
            uuid_bytes=bytes(range(16)),
            version="test",
        )
    if mode == "continuous":
        return [AXIS] * len(COORDS), list(values)
    return mzs, intensities


class Truth:
    """The written spectra, and numpy's answers with non-finite intensities as 0."""

    def __init__(self, path, mode):
        self.path = path
        self.mode = mode
        mzs, intensities = _write(path, mode)
        self.mzs = [np.asarray(m, dtype=np.float64) for m in mzs]
        self.values = [np.where(np.isfinite(v), v, 0).astype(np.float64) for v in intensities]

    def tic(self):
        return np.array([v.sum() for v in self.values])

    def window_sums(self, lo, hi):
        return np.array(
            [
                [v[(m >= a) & (m <= b)].sum() for a, b in zip(lo, hi, strict=True)]
                for m, v in zip(self.mzs, self.values, strict=True)
            ]
        )

    def image(self, sums):
        image = np.full((3, 4), np.nan)
        image[COORDS[:, 1] - 1, COORDS[:, 0] - 1] = sums
        return image


@pytest.fixture(scope="module", params=["continuous", "processed"])
def truth(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    return Truth(folder / f"{request.param}.imzML", request.param)


def _windows():
    centres = np.asarray(WINDOWS["mz"])
    return centres - WINDOWS["tol"], centres + WINDOWS["tol"]


def _warned_once(fn, *args, counts=(N_BAD, N_BAD_SPECTRA), **kwargs):
    """``fn(*args, **kwargs)``, checking it warned once with ``counts`` and nothing else."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    messages = [(w.category, str(w.message)) for w in caught]
    if counts is None:
        assert messages == [], messages
        return result
    assert len(messages) == 1, messages
    category, message = messages[0]
    assert category is DataWarning
    assert f"{counts[0]} NaN or infinite intensities in {counts[1]} spectra" in message
    assert "read as 0" in message and "imzML" in message
    return result


def _dense(x):
    if hasattr(x, "compute"):
        x = x.compute()
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


# ------------------------------------------------------------------------------ read_imzml


def test_read_imzml_windows(truth):
    adata = _warned_once(read_imzml, truth.path, **WINDOWS)
    lo, hi = _windows()
    expected = truth.window_sums(lo, hi)
    assert expected[2, 0] > 0 and expected[1, 0] > 0  # the windows also hold finite values
    np.testing.assert_allclose(_dense(adata.X), expected, rtol=1e-6)
    np.testing.assert_allclose(adata.obs["tic"], truth.tic(), rtol=1e-12)


def test_read_imzml_own_axis(truth):
    adata = _warned_once(read_imzml, truth.path)
    table = _dense(adata.X)
    assert np.isfinite(table).all()
    expected = truth.window_sums(adata.var["mz_lo"].to_numpy(), adata.var["mz_hi"].to_numpy())
    np.testing.assert_allclose(table, expected, rtol=1e-6)
    np.testing.assert_allclose(adata.obs["tic"], truth.tic(), rtol=1e-12)


# ------------------------------------------------------------------------------ ImzMLReader


def test_reader_tic_ion_images_and_window_sums(truth):
    lo, hi = _windows()
    expected = truth.window_sums(lo, hi)
    with ImzMLReader(truth.path) as reader:
        np.testing.assert_allclose(_warned_once(reader.tic), truth.tic(), rtol=1e-12)
        images = _warned_once(reader.ion_images, WINDOWS["mz"], tol=WINDOWS["tol"])
        for j in range(len(WINDOWS["mz"])):
            np.testing.assert_allclose(images[j], truth.image(expected[:, j]), rtol=1e-12)
        # One window, one NaN spectrum (1) and one with +inf and -inf (2) inside it.
        image = _warned_once(reader.ion_image, 155.0, tol=5.0, counts=(3, 2))
        np.testing.assert_allclose(image, truth.image(truth.window_sums([150], [160])[:, 0]))
        # A window without any non-finite value: nothing to say.
        _warned_once(reader.ion_image, 300.0, tol=5.0, counts=None)
        dense = _warned_once(reader.window_sums, WINDOWS["mz"], tol=WINDOWS["tol"])
        np.testing.assert_allclose(dense, expected, rtol=1e-12)
        csr = _warned_once(
            reader.window_sums, WINDOWS["mz"], tol=WINDOWS["tol"], sparse=True, dtype=np.float32
        )
        assert sparse.issparse(csr) and (csr.data != 0).all()
        np.testing.assert_allclose(csr.toarray(), expected, rtol=1e-6)
        ints = _warned_once(reader.window_sums, WINDOWS["mz"], tol=WINDOWS["tol"], dtype=np.int64)
        np.testing.assert_array_equal(ints, expected.astype(np.int64))
        # Spectra come back exactly as stored, NaN included.
        assert np.isnan(reader.spectrum(1)[1]).sum() == 1


def test_reader_mean_spectrum(truth):
    with ImzMLReader(truth.path) as reader:
        if truth.mode == "continuous":
            mz, mean = _warned_once(reader.mean_spectrum)
            np.testing.assert_array_equal(mz, AXIS)
            np.testing.assert_allclose(mean, np.mean(truth.values, axis=0), rtol=1e-12)
        centres = [150.0, 160.0, 490.0]
        mz, mean = _warned_once(reader.mean_spectrum, mz=centres, ppm=100)
        half = np.asarray(centres) * 100e-6
        expected = truth.window_sums(centres - half, centres + half).mean(axis=0)
        np.testing.assert_allclose(mean, expected, rtol=1e-12)


# ------------------------------------------------------------------------------ zarr


@pytest.mark.parametrize("windows", [False, True], ids=["own-axis", "mz-windows"])
def test_convert_and_zarr_readers(truth, tmp_path, windows):
    pytest.importorskip("zarr", minversion="3")
    kwargs = WINDOWS if windows else {}
    ref = _warned_once(read_imzml, truth.path, **kwargs)
    store = _warned_once(
        convert_imzml, truth.path, tmp_path / "s.zarr", chunks=(5, 3), max_memory="64MB", **kwargs
    )
    lazy = _warned_once(read_msi_zarr, store)
    table = _dense(lazy.X)
    assert np.isfinite(table).all()
    np.testing.assert_array_equal(table, _dense(ref.X))
    expected = truth.window_sums(lazy.var["mz_lo"].to_numpy(), lazy.var["mz_hi"].to_numpy())
    np.testing.assert_allclose(table, expected, rtol=1e-6)
    np.testing.assert_allclose(lazy.obs["tic"], truth.tic(), rtol=1e-12)
    image = _warned_once(ion_image_from_zarr, store, 155.0, tol=15.0)
    centres = lazy.var["mz"].to_numpy()
    chosen = (centres >= 140.0) & (centres <= 170.0)
    np.testing.assert_allclose(image, truth.image(expected[:, chosen].sum(axis=1)), rtol=1e-6)
