"""The run's spectra step: recalibration, peak picking and annotation from the config, cached,
in the report and the exports, with names reaching the correlation table."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import yaml

from spatialfuse.datasets._writers import write_imzml
from spatialfuse.errors import ConfigError
from spatialfuse.workflow import load_config, run_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pp"))
from spectra_data import PEAKS, profile_table

PROTON = 1.007276
DRIFT_PPM = np.linspace(-12.0, 12.0, 24)


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory) -> Path:
    """A 6 × 4 continuous profile imzML: 8 planted peaks, each pixel drifted by up to ±12 ppm."""
    table = profile_table(n_pixels=24, drift_ppm=DRIFT_PPM, seed=3)
    path = tmp_path_factory.mktemp("profile") / "profile.imzML"
    coords = np.array([(x + 1, y + 1) for y in range(4) for x in range(6)])
    write_imzml(
        path,
        coords,
        table.var["mz"].to_numpy(),
        np.asarray(table.X),
        mode="continuous",
        pixel_size_um=(20.0, 20.0),
        uuid_bytes=bytes(range(16)),
        version="1.1.0",
    )
    return path


def _config(tmp_path: Path, profile_file: Path, spectra: dict) -> Path:
    database = tmp_path / "db.csv"
    pd.DataFrame(
        {"name": ["lipid one", "lipid four"], "mass": [PEAKS[0] - PROTON, PEAKS[3] - PROTON]}
    ).to_csv(database, index=False)
    data = {
        "modalities": {"msi": {"kind": "imzml", "path": str(profile_file)}},
        "spectra": spectra,
        "output": str(tmp_path / "results"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


SPECTRA = {
    "recalibration": {"enabled": True, "n_references": 6},
    "peaks": {"enabled": True},
    "annotation": {"database": "db.csv", "adducts": ["[M+H]+"], "polarity": "positive"},
}


def test_recalibrated_peaks_are_picked_named_cached_reported_and_exported(tmp_path, profile_file):
    config = load_config(_config(tmp_path, profile_file, SPECTRA))
    # the database is found beside the config, as every path of a config is
    assert config.spectra.annotation.database == tmp_path / "db.csv"
    result = run_pipeline(config, show_progress=False)
    table = result.modalities["msi"]
    # the 8 planted peaks, found within 1 ppm once the ±12 ppm drift is removed
    found = table.var["mz"].to_numpy()
    error_ppm = np.abs(found[:, None] - PEAKS[None, :]).min(axis=0) / PEAKS * 1e6
    assert len(found) == len(PEAKS) and error_ppm.max() < 1.0, error_ppm
    recalibration = table.uns["recalibration"]
    assert recalibration["median_abs_ppm_before"] > 5
    assert recalibration["median_abs_ppm_after"] < 1
    names = table.var.set_index("mz")["annotation_name"]
    assert sorted(n for n in names if n) == ["lipid four", "lipid one"]
    # exported with its names, and shown in the report with both figures
    written = anndata.read_h5ad(tmp_path / "results" / "msi_spectra.h5ad")
    assert list(written.var["annotation_name"]) == list(table.var["annotation_name"])
    report = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert "Spectra" in report and "2 of 8 within 5 ppm" in report
    assert "Reference spectrum and picked peaks" in report
    assert "m/z error at each reference peak" in report
    # a second run reuses the step
    again = run_pipeline(config, show_progress=False)
    assert "spectra" in again.reused


def test_peaks_straight_from_the_file_need_no_table_first(tmp_path, profile_file):
    spectra = {"peaks": {"enabled": True}}
    result = run_pipeline(
        load_config(_config(tmp_path, profile_file, spectra)), show_progress=False
    )
    table = result.modalities["msi"]
    assert table.n_vars == len(PEAKS) and "recalibration" not in table.uns
    # the drift is still there: the peaks are the mean of drifted spectra, a few ppm wide
    assert np.abs(table.var["mz"].to_numpy() - PEAKS).max() / PEAKS.min() * 1e6 < 3


def test_an_adduct_of_the_other_polarity_is_a_config_error_naming_the_file(tmp_path, profile_file):
    spectra = {"annotation": {"database": "db.csv", "adducts": ["[M-H]-"], "polarity": "positive"}}
    config = load_config(_config(tmp_path, profile_file, spectra))
    with pytest.raises(ConfigError, match=r"profile\.imzML.*spectra section.*polarity"):
        run_pipeline(config, show_progress=False)


def test_spectra_need_one_imzml_modality(tmp_path, profile_file):
    path = _config(tmp_path, profile_file, {"peaks": {"enabled": True}})
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["modalities"]["other"] = dict(data["modalities"]["msi"])
    data["mapping"] = {"msi": "msi"}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"spectra steps need one imzml .*several \(msi, other\)"):
        load_config(path)
    data["spectra"]["msi"] = "nowhere"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"spectra\.msi is 'nowhere'"):
        load_config(path)
    data["spectra"]["msi"] = "other"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_config(path).spectra_msi_name == "other"
