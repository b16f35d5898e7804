"""``spatialfuse run`` recalibrates a centroid imzML peak by peak (issue 16).

Known answer: a synthetic processed centroid file (the centroid recalibration tests' writer)
whose pixels drift by a known −20…+20 ppm by acquisition line (plus ±3 ppm per pixel). With
recalibration on, the run's table holds each of the 8 planted peaks as one feature within 1 ppm
of its true m/z, the report shows the error before > after, and the table goes on to the later
steps and the exports; with recalibration off the drift stays (each peak split over several
features).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import anndata
import numpy as np
import pytest
import yaml

import spatialfuse as sf
from spatialfuse.errors import ConfigError
from spatialfuse.workflow import _config, _steps, load_config, run_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pp"))
from centroid_data import PEAKS, line_drift, write_centroid

NX, NY = 8, 6


@pytest.fixture(scope="module")
def drifted(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("centroid_run") / "drifted.imzML"
    return write_centroid(path, nx=NX, ny=NY, drift_ppm=line_drift(NX, NY), jitter_ppm=0.2)


def _run(tmp_path: Path, path: Path, spectra: dict | None, *, msi: dict | None = None):
    data = {
        "modalities": {"msi": {"kind": "imzml", "path": str(path), **(msi or {})}},
        "output": str(tmp_path / "results"),
    }
    if spectra is not None:
        data["spectra"] = spectra
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return run_pipeline(load_config(config), show_progress=False)


def _common_features_near(table, mz, ppm=40.0):
    """The features within ± ppm of ``mz`` found in 3 pixels or more (noise peaks are in one)."""
    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    common = (x > 0).sum(axis=0) >= 3
    near = np.abs(table.var["mz"].to_numpy() - mz) <= mz * ppm * 1e-6
    return np.flatnonzero(near & common)


def test_the_run_recalibrates_a_centroid_file_peak_by_peak(tmp_path, drifted):
    spectra = {"recalibration": {"enabled": True, "n_references": 5}}
    result = _run(tmp_path, drifted, spectra)
    table = result.modalities["msi"]
    info = table.uns["recalibration"]
    assert info["spectrum_type"] == "centroid" and info["method"].startswith("peak m/z")
    assert info["median_abs_ppm_before"] > 8 and info["median_abs_ppm_after"] < 1
    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    for m in PEAKS:  # each planted peak one feature, at its m/z, holding it in every pixel
        (j,) = _common_features_near(table, m)
        assert abs(table.var["mz"].iloc[j] - m) / m * 1e6 < 1
        assert (x[:, j] >= 50).all()
    # binned onto a common axis as the reader bins the file (its default m/z options)
    assert table.uns["spatialfuse"]["windows"]["kind"] == "merged_peaks"
    assert table.uns["spatialfuse"]["windows"]["recalibrated"] is True
    # the exported table is the recalibrated one, and the report shows before > after
    written = anndata.read_h5ad(tmp_path / "results" / "msi_spectra.h5ad")
    np.testing.assert_allclose(written.var["mz"], table.var["mz"])
    report = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert "m/z error at each reference peak" in report
    row = re.search(r"before → after recalibration.*?([\d.]+) → ([\d.]+)", report, re.S)
    assert row is not None
    before, after = float(row[1]), float(row[2])
    assert before > 8 > 1 > after
    assert "peak by peak" in report  # how it was done: centroid spectra, each peak corrected
    # cached under the recalibration options: the same run reuses it, another setting does not
    assert "spectra" in _run(tmp_path, drifted, spectra).reused
    spectra["recalibration"]["n_references"] = 4
    assert "spectra" not in _run(tmp_path, drifted, spectra).reused


def test_other_m_z_options_are_not_reused(tmp_path, drifted):
    spectra = {"recalibration": {"enabled": True, "n_references": 5}}
    first = _run(tmp_path, drifted, spectra).modalities["msi"]
    again = _run(tmp_path, drifted, spectra, msi={"max_features": 5})
    assert "spectra" not in again.reused
    assert again.modalities["msi"].n_vars == 5 < first.n_vars


def test_without_recalibration_the_drift_stays(tmp_path, drifted):
    result = _run(tmp_path, drifted, {"isotopes": {"enabled": True}})
    table = result.modalities["msi"]
    assert "recalibration" not in table.uns
    split = [len(_common_features_near(table, m)) for m in PEAKS]
    assert min(split) >= 3, split  # each peak smeared over several 5-ppm features


def test_the_modality_m_z_options_make_the_recalibrated_features(tmp_path, drifted):
    """The modality's ``mz``/``ppm`` reach the binning: the reader's windows, drift removed."""
    modality = _config.Modality(kind="imzml", path=drifted, mz=PEAKS.tolist(), ppm=3.0)
    spectra = _config.Spectra(recalibration=_config.Recalibration(enabled=True, n_references=5))
    assert _steps.reads_spectra_from_file(modality, spectra)
    table = _steps.process_spectra(None, modality, spectra)
    read = sf.io.read_imzml(drifted, mz=PEAKS, ppm=3.0)
    for column in ("mz", "mz_lo", "mz_hi"):
        np.testing.assert_allclose(table.var[column], read.var[column])
    assert table.uns["spatialfuse"]["windows"]["kind"] == "ppm"
    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    assert (x >= 50).all()  # every peak inside its ± 3 ppm window in every pixel once corrected
    xr = read.X.toarray() if hasattr(read.X, "toarray") else np.asarray(read.X)
    assert (xr == 0).mean() > 0.5  # uncorrected, most pixels' peaks fall outside ± 3 ppm


def test_a_profile_file_is_not_read_peak_by_peak(tmp_path):
    from test_spectra_store import _write

    modality = _config.Modality(kind="imzml", path=_write(tmp_path / "p.imzML", "continuous"))
    on = _config.Spectra(recalibration=_config.Recalibration(enabled=True))
    assert not _steps.recalibrates_peaks(modality, on)
    assert not _steps.reads_spectra_from_file(modality, on)  # read as a table, as before
    insist = _config.Recalibration(enabled=True, spectrum_type="centroid")
    assert _steps.recalibrates_peaks(modality, _config.Spectra(recalibration=insist))


def test_a_store_of_centroid_spectra_cannot_be_recalibrated_and_says_so(tmp_path, drifted):
    """Its peaks were binned at conversion: the run refuses, naming the store and its imzML."""
    store = sf.io.convert_imzml(drifted, tmp_path / "drifted.zarr")
    data = {
        "modalities": {"msi": {"kind": "msi_zarr", "path": str(store)}},
        "spectra": {"recalibration": {"enabled": True}, "peaks": {"enabled": True}},
        "output": str(tmp_path / "results"),
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        run_pipeline(load_config(config), show_progress=False)
    message = str(error.value)
    assert "drifted.zarr" in message and "nothing was measured or corrected" in message
    assert "store of centroid spectra cannot be recalibrated" in message
    assert "drifted.imzML" in message and "kind imzml" in message
