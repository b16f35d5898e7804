"""The default m/z axis of processed data is bounded: noise does not grow it, a cap limits it.

Known answer: 20 ions present in every spectrum plus uniform noise peaks. With few noise peaks the
default axis is the 20 ions (as with the plain 1 % rule); with 3,000 noise peaks per spectrum the
plain rule keeps thousands of noise windows (each holds a noise peak in ~1.3-3.3 % of the
spectra), the default still the 20 ions.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from imzml_factory import grid_coords, write_imzml

from spatialfuse.io import convert_imzml, read_imzml
from spatialfuse.io.imzml import ImzMLReader, build_mz_axis
from spatialfuse.io.imzml._axis import DEFAULT_MAX_FEATURES

IONS = np.linspace(150.0, 950.0, 20) + 0.1234
#: Ion intensities, all distinct: the cap keeps the most intense.
LEVELS = np.linspace(100.0, 2000.0, IONS.size)


def _write(folder, n_noise: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    coords = grid_coords(30, 20)
    spectra = []
    for _ in coords:
        mz = np.concatenate(
            [IONS * (1 + 1e-6 * rng.standard_normal(IONS.size)), rng.uniform(100, 1000, n_noise)]
        )
        intensity = np.concatenate([LEVELS, rng.uniform(1.0, 5.0, n_noise)])
        order = np.argsort(mz)
        spectra.append((mz[order], intensity[order]))
    return write_imzml(folder / f"noise{n_noise}.imzML", spectra, coords, mode="processed")


def _found(axis) -> np.ndarray:
    """For each ion, whether one feature's window holds it."""
    return np.array([((axis.lo <= m) & (m <= axis.hi)).any() for m in IONS])


@pytest.mark.parametrize("n_noise", [20, 3000])
def test_noise_does_not_grow_the_default_axis(tmp_path, n_noise):
    truth = _write(tmp_path, n_noise)
    with ImzMLReader(truth.imzml) as reader:
        plain = build_mz_axis(reader, noise_factor=None, max_features=None)
        default = build_mz_axis(reader)
    assert _found(default).all()
    # no noise window: every feature is an ion (dense noise can join an ion's run of bins, which
    # is then cut in two: an ion may give two neighbouring features)
    nearest = np.abs(default.mz[:, None] / IONS[None] - 1).min(axis=1)
    assert (nearest < 5e-6).all()
    assert len(default) < 2 * IONS.size
    if n_noise == 20:
        assert len(plain) == len(default) == IONS.size
        np.testing.assert_array_equal(plain.mz, default.mz)
    else:
        assert len(plain) > 1000  # the plain frequency rule keeps the noise
    adata = read_imzml(truth.imzml)
    assert adata.n_vars == len(default)
    rule = adata.uns["spatialfuse"]["windows"]
    assert rule["noise_factor"] == 3.0 and rule["max_features"] == DEFAULT_MAX_FEATURES


def test_max_features_keeps_the_most_intense(tmp_path):
    truth = _write(tmp_path, 20)
    adata = read_imzml(truth.imzml, max_features=5)
    np.testing.assert_allclose(adata.var["mz"], IONS[-5:], rtol=5e-6)
    store = convert_imzml(truth.imzml, tmp_path / "capped.zarr", max_features=5)
    from spatialfuse.io import read_msi_zarr

    np.testing.assert_allclose(read_msi_zarr(store).var["mz"], adata.var["mz"])


def test_the_cap_is_the_default_of_both_readers():
    for function in (read_imzml, convert_imzml):
        default = inspect.signature(function).parameters["max_features"].default
        assert default == DEFAULT_MAX_FEATURES == 10_000


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_features", 0), ("max_features", 2.5), ("noise_factor", -1.0)],
)
def test_bad_axis_options_are_refused(tmp_path, option, value):
    truth = _write(tmp_path, 5)
    with ImzMLReader(truth.imzml) as reader, pytest.raises(ValueError, match=option):
        build_mz_axis(reader, **{option: value})
