"""Every real imzML file in the shared data reads exactly like an independent reading (pyimzML)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from spatialfuse.io.imzml import ImzMLReader
from spatialfuse.io.imzml._header import parse_header
from spatialfuse.io.imzml._scan_fast import scan_fast
from spatialfuse.io.imzml._scan_generic import scan_generic


def _imzml_files(shared_data: Path) -> list[Path]:
    files = sorted(p for p in (shared_data / "imzml").rglob("*") if p.suffix.lower() == ".imzml")
    assert len(files) >= 40, "expected the ~41 shared imzML files"
    return files


@pytest.fixture(scope="module")
def imzml_files(shared_data):
    return _imzml_files(shared_data)


def _pyimzml(path: Path):
    from pyimzml.ImzMLParser import ImzMLParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImzMLParser(str(path))


def test_every_spectrum_equals_pyimzml(imzml_files):
    for path in imzml_files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = ImzMLReader(path, cache=False)
        parser = _pyimzml(path)
        assert reader.n_spectra == len(parser.coordinates), path
        np.testing.assert_array_equal(reader.coordinates, np.array(parser.coordinates))
        for i in range(reader.n_spectra):
            mz, intensity = reader.spectrum(i)
            ref_mz, ref_int = parser.getspectrum(i)
            assert mz.dtype == ref_mz.dtype and intensity.dtype == ref_int.dtype, path
            np.testing.assert_array_equal(mz, ref_mz, err_msg=f"{path} spectrum {i}")
            np.testing.assert_array_equal(intensity, ref_int, err_msg=f"{path} spectrum {i}")
        assert (
            reader.mz_dtype == parser.mzPrecision or np.dtype(parser.mzPrecision) == reader.mz_dtype
        )


def test_fast_and_general_scanners_agree(imzml_files):
    for path in imzml_files:
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = parse_header(data, path)
        fast = scan_fast(data, header).to_arrays()  # every shared file has a regular layout
        general = scan_generic(path, header).to_arrays()
        for key, values in general.items():
            np.testing.assert_array_equal(fast[key], values, err_msg=f"{path}: {key}")


@pytest.mark.parametrize(
    ("name", "mode", "pixel_size", "dtypes"),
    [
        ("pyimzML_examples/Example_Continuous.imzML", "continuous", (100.0, 100.0), ("<f4", "<f4")),
        ("pyimzML_examples/Example_Processed.imzML", "processed", (100.0, 100.0), ("<f4", "<f4")),
        ("galaxyp_maldiquant/outfile1.imzml", "continuous", (100.0, 100.0), ("<f8", "<f8")),
        ("galaxyp_maldiquant/peak_detection4.imzml", "processed", (100.0, 100.0), ("<f8", "<f8")),
        ("galaxyp_i2nca/combined_pc.imzML", "processed", (20.0, 20.0), ("<f4", "<f4")),
        ("galaxyp_cardinal/out4.imzml", "continuous", (2.0, 1.0), ("<f4", "<f4")),
        ("galaxyp_cardinal/Example_Continuous.imzML", "continuous", None, ("<f4", "<f4")),
    ],
)
def test_metadata(shared_data, name, mode, pixel_size, dtypes):
    reader = ImzMLReader(shared_data / "imzml" / name)
    assert reader.mode == mode
    assert reader.pixel_size_um == pixel_size
    assert (reader.mz_dtype, reader.intensity_dtype) == tuple(np.dtype(d) for d in dtypes)
    assert reader.uuid is not None and len(reader.uuid) == 32
    assert bytes.fromhex(reader.uuid) == reader.ibd_path.read_bytes()[:16]


def test_infinite_pixel_size_is_ignored_with_warning(shared_data):
    from spatialfuse.errors import DataWarning

    with pytest.warns(DataWarning, match="IMS:1000047 is 'Inf'"):
        reader = ImzMLReader(shared_data / "imzml/galaxyp_cardinal/out3.imzml")
    assert reader.pixel_size_um == (1.0, 1.0)  # only x remains: square pixels


def test_mismatched_array_lengths_pair_over_the_shorter(shared_data):
    from spatialfuse.errors import DataWarning

    path = shared_data / "imzml/galaxyp_i2nca/cc.imzML"
    with pytest.warns(DataWarning, match="different lengths"):
        reader = ImzMLReader(path)
    mz, intensity = reader.spectrum(1)
    assert (mz.size, intensity.size) == (1999, 1997)  # exactly as stored
    sums = reader.window_sums([mz[1996], mz[1998]], tol=1e-4)
    assert sums[1, 0] == pytest.approx(float(intensity[1996]))
    assert sums[1, 1] == 0.0  # m/z 1998 has no intensity to pair with


def _reference_sums(parser, centres, tol):
    out = np.zeros((len(parser.coordinates), len(centres)))
    for i in range(len(parser.coordinates)):
        mz, intensity = parser.getspectrum(i)
        n = min(mz.size, intensity.size)
        mz, intensity = mz[:n], intensity[:n]
        for j, c in enumerate(centres):
            a = np.searchsorted(mz, c - tol, side="left")
            b = np.searchsorted(mz, c + tol, side="right")
            out[i, j] = intensity[a:b].sum(dtype=np.float64)
    return out


@pytest.mark.filterwarnings("ignore::spatialfuse.errors.DataWarning")
def test_ion_images_equal_reference_on_every_file(imzml_files):
    for path in imzml_files:
        reader = ImzMLReader(path)
        low, high = reader.mz_range()
        tol = (high - low) / 200
        centres = np.linspace(low - 2 * tol, high + 2 * tol, 97)
        reference = _reference_sums(_pyimzml(path), centres, tol)
        np.testing.assert_allclose(reader.window_sums(centres, tol=tol), reference, rtol=1e-12)
        few = reader.window_sums(centres[40:43], tol=tol)  # the few-windows code path
        np.testing.assert_allclose(few, reference[:, 40:43], rtol=1e-12)
        sparse = reader.window_sums(centres, tol=tol, sparse=True, dtype=np.float64)
        np.testing.assert_allclose(sparse.toarray(), reference, rtol=1e-12)
        image = reader.ion_image(centres[50], tol=tol)
        x0, y0 = reader.grid_origin
        coords = reader.coordinates
        np.testing.assert_allclose(
            image[coords[:, 1] - y0, coords[:, 0] - x0], reference[:, 50], rtol=1e-12
        )
        np.testing.assert_allclose(
            reader.tic(), [p.sum(dtype=np.float64) for p in _intensities(reader)], rtol=1e-12
        )


def _intensities(reader):
    return [reader.spectrum(i)[1] for i in range(reader.n_spectra)]
