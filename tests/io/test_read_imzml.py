"""read_imzml: the AnnData layout, units, windows and the common m/z axis, against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from pyimzml.ImzMLWriter import ImzMLWriter

from spatialfuse.errors import CalibrationError
from spatialfuse.io import read_imzml


def _write(path, spectra, coords, *, mode, pixel_size=None):
    with ImzMLWriter(str(path), mode=mode, mz_dtype=np.float64, intensity_dtype=np.float32) as w:
        for (mz, intensity), xy in zip(spectra, coords, strict=True):
            w.addSpectrum(mz, intensity, xy)
    if pixel_size is not None:
        # pyimzML writes no pixel size; add one to scanSettings as real writers do.
        text = path.read_text(encoding="iso-8859-1")
        param = (
            f'<cvParam cvRef="IMS" accession="IMS:1000046" name="pixel size x" value="{pixel_size}"'
            ' unitCvRef="UO" unitAccession="UO:0000017" unitName="micrometer"/>\n'
        )
        text = text.replace("</scanSettings>", param + "</scanSettings>", 1)
        path.write_text(text, encoding="iso-8859-1")
    return path


PEAKS = np.array([300.1, 450.25, 700.5])


@pytest.fixture
def processed(tmp_path):
    """3 × 2 pixels, offset grid, three real peaks jittered by < 1 ppm plus one rare noise peak."""
    rng = np.random.default_rng(7)
    coords = [(x, y) for y in (5, 6) for x in (11, 12, 13)]
    spectra, truth = [], []
    for i, _ in enumerate(coords):
        mz = PEAKS * (1 + rng.uniform(-1e-6, 1e-6, 3))
        intensity = (np.arange(3) + 1 + i).astype(np.float32)
        if i == 0:
            mz = np.append(mz, 900.0)
            intensity = np.append(intensity, np.float32(50))
        spectra.append((mz, intensity))
        truth.append(intensity[:3].astype(np.float64))
    path = _write(tmp_path / "p.imzML", spectra, coords, mode="processed", pixel_size=25)
    return path, coords, np.array(truth)


def test_layout_units_and_provenance(processed):
    path, coords, truth = processed
    adata = read_imzml(path, mz=PEAKS, ppm=5)
    assert adata.shape == (6, 3)
    assert adata.X.dtype == np.float32
    np.testing.assert_allclose(
        adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, truth, rtol=1e-6
    )
    assert list(adata.var_names) == ["mz-300.1000", "mz-450.2500", "mz-700.5000"]
    np.testing.assert_array_equal(adata.var["mz"], PEAKS)
    np.testing.assert_array_equal(adata.obs["imzml_x"], [c[0] for c in coords])
    np.testing.assert_array_equal(adata.obs["imzml_y"], [c[1] for c in coords])
    assert adata.obs_names[0] == "11_5"
    # Pixel (x, y) covers [(x-1)·s, x·s]: its centre is at (x - 0.5)·s.
    expected = np.array([[(x - 0.5) * 25, (y - 0.5) * 25] for x, y in coords])
    np.testing.assert_array_equal(adata.obsm["spatial"], expected)
    info = adata.uns["spatialfuse"]
    assert info["mode"] == "processed" and info["pixel_size_um"] == [25.0, 25.0]
    assert info["pixel_size_source"] == "file" and info["windows"]["ppm"] == 5.0
    assert info["mz_range"][0] == pytest.approx(300.1, abs=1e-3)
    np.testing.assert_allclose(adata.obs["tic"], truth.sum(axis=1) + np.r_[50, np.zeros(5)])


def test_tol_windows_and_pixel_size_argument(processed):
    path, _, truth = processed
    adata = read_imzml(path, mz=[300.1, 899.95], tol=0.1, pixel_size_um=(10, 20))
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    np.testing.assert_allclose(x[:, 0], truth[:, 0], rtol=1e-6)
    np.testing.assert_allclose(x[:, 1], [50, 0, 0, 0, 0, 0])
    assert adata.uns["spatialfuse"]["pixel_size_source"] == "argument"
    assert adata.obsm["spatial"][0].tolist() == [10.5 * 10, 4.5 * 20]


def test_common_axis_merges_peaks_within_ppm(processed):
    path, _, truth = processed
    adata = read_imzml(path, ppm=5, min_frequency=0.5)  # the noise peak is in 1 of 6 spectra
    assert adata.n_vars == 3
    np.testing.assert_allclose(adata.var["mz"], PEAKS, rtol=2e-6)
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    np.testing.assert_allclose(x, truth, rtol=1e-6)
    assert adata.uns["spatialfuse"]["windows"]["kind"] == "merged_peaks"
    everything = read_imzml(path, ppm=5, min_frequency=0.0)
    assert everything.n_vars == 4 and everything.var["mz"].iloc[-1] == pytest.approx(900.0)


def test_continuous_gives_the_shared_axis(tmp_path):
    mz = np.linspace(100, 200, 50)
    spectra = [(mz, np.full(50, i, dtype=np.float32)) for i in range(4)]
    path = _write(
        tmp_path / "c.imzML", spectra, [(1, 1), (2, 1), (1, 2), (2, 2)], mode="continuous"
    )
    adata = read_imzml(path, pixel_size_um=50)
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    assert adata.shape == (4, 50)
    np.testing.assert_array_equal(adata.var["mz"], mz)
    np.testing.assert_array_equal(x[:, 7], [0, 1, 2, 3])
    assert adata.uns["spatialfuse"]["windows"] == {"kind": "shared_axis"}


def test_missing_pixel_size_says_how_to_supply_it(tmp_path):
    spectra = [(np.array([100.0, 200.0]), np.ones(2, np.float32))]
    path = _write(tmp_path / "nopx.imzML", spectra, [(1, 1)], mode="processed")
    with pytest.raises(CalibrationError, match=r"nopx\.imzML.*pixel_size_um="):
        read_imzml(path)
    with pytest.raises(CalibrationError, match="positive"):
        read_imzml(path, pixel_size_um=-3)


def test_result_round_trips_through_h5ad(processed, tmp_path):
    import anndata as ad

    path, _, _ = processed
    adata = read_imzml(path, mz=PEAKS)
    adata.write_h5ad(tmp_path / "t.h5ad")
    back = ad.read_h5ad(tmp_path / "t.h5ad")
    assert back.uns["spatialfuse"]["uuid"] == adata.uns["spatialfuse"]["uuid"]
    np.testing.assert_array_equal(back.obsm["spatial"], adata.obsm["spatial"])
