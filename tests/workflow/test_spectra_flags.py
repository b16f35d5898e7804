"""The spectra step's matrix and isotope flags and spatial filters: from the config, cached,
dropped on request, said in the report and kept in the export."""

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
from spectra_data import profile_axis, profile_table

PROTON = 1.007276
C13 = 1.003355
#: Two analytes (A with its M+1), a DHB cluster ([3DHB-3H2O+Na]+) and a peak scattered like noise.
ANALYTE_A, ANALYTE_B = 401.0552, 502.3336
ISOTOPE_A = ANALYTE_A + C13
MATRIX = 431.0381
NOISE = 455.9013
PLANTED = np.array([ANALYTE_A, ISOTOPE_A, MATRIX, NOISE, ANALYTE_B])
NX, NY = 12, 10


@pytest.fixture(scope="module")
def flagged_file(tmp_path_factory) -> Path:
    """A 12 × 10 continuous profile imzML: A on the left half (with its M+1 at 20 %), B on the
    top rows, the DHB ion everywhere, the noise peak in a random 30 % of the pixels."""
    x, y = np.meshgrid(np.arange(NX), np.arange(NY))
    x, y = x.ravel(), y.ravel()
    rng = np.random.default_rng(5)
    n = x.size
    presence = np.ones((n, PLANTED.size), bool)
    presence[:, 0] = presence[:, 1] = x < NX // 2
    presence[:, 3] = rng.random(n) < 0.3
    presence[:, 4] = y < 4
    abundance = np.ones((n, PLANTED.size))
    abundance[:, 0] = abundance[:, 1] = 0.5 + (x + 1) / NX  # the isotope follows its parent
    table = profile_table(
        peaks=PLANTED,
        heights=np.array([400.0, 80.0, 300.0, 300.0, 250.0]),
        n_pixels=n,
        presence=presence,
        abundance=abundance,
        mz=profile_axis(lo=390.0, hi=520.0),
        seed=7,
    )
    path = tmp_path_factory.mktemp("flags") / "flags.imzML"
    write_imzml(
        path,
        np.column_stack([x + 1, y + 1]),
        table.var["mz"].to_numpy(),
        np.asarray(table.X),
        mode="continuous",
        pixel_size_um=(20.0, 20.0),
        uuid_bytes=bytes(range(16)),
        version="1.1.0",
    )
    return path


def _config(tmp_path: Path, imzml: Path, spectra: dict) -> Path:
    pd.DataFrame(
        {"name": ["analyte A", "analyte B"], "mass": [ANALYTE_A - PROTON, ANALYTE_B - PROTON]}
    ).to_csv(tmp_path / "db.csv", index=False)
    data = {
        "modalities": {"msi": {"kind": "imzml", "path": str(imzml)}},
        "spectra": spectra,
        "output": str(tmp_path / "results"),
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


FLAGS = {
    "peaks": {"enabled": True},
    "matrix": {"enabled": True, "polarity": "positive", "drop": True},
    "isotopes": {"enabled": True, "drop": True},
    "spatial_chaos": {"enabled": True, "drop": True},
    "spatial_moran": {"enabled": True},
    "annotation": {"database": "db.csv", "adducts": ["[M+H]+"], "polarity": "positive"},
}


def _nearest(mz: np.ndarray, target: float) -> int:
    i = int(np.abs(mz - target).argmin())
    assert abs(mz[i] - target) / target * 1e6 < 3, (mz[i], target)
    return i


def test_matrix_isotopes_and_noise_are_flagged_dropped_reported_and_exported(
    tmp_path, flagged_file
):
    config = load_config(_config(tmp_path, flagged_file, FLAGS))
    result = run_pipeline(config, show_progress=False)
    table = result.modalities["msi"]
    flags = table.uns["spectra_flags"]
    assert flags["n_features"] == 5, flags
    features = flags["features"]
    mz = features["mz"].to_numpy()
    reasons = {target: features["reason"].iloc[_nearest(mz, target)] for target in PLANTED[1:4]}
    assert reasons[MATRIX].startswith("matrix ion [3DHB-3H2O+Na]+"), reasons
    assert "M+1 isotope of" in reasons[ISOTOPE_A], reasons
    assert "spatial chaos score" in reasons[NOISE] and "Moran's I" in reasons[NOISE], reasons
    # the analytes are structured: neither flagged nor dropped, and they keep their names
    for target in (ANALYTE_A, ANALYTE_B):
        assert np.abs(mz - target).min() / target * 1e6 > 3, features
    kept = table.var["mz"].to_numpy()
    assert table.n_vars == 2 and flags["n_dropped"] == 3
    assert sorted(table.var["annotation_name"]) == ["analyte A", "analyte B"]
    assert np.abs(kept - [ANALYTE_A, ANALYTE_B]).max() < 1e-3
    assert set(flags["steps"]) == {"matrix", "isotopes", "spatial_chaos", "spatial_moran"}
    assert flags["steps"]["spatial_moran"]["dropped"] is False
    # exported: the kept features, and every flagged one with its reason
    written = anndata.read_h5ad(tmp_path / "results" / "msi_spectra.h5ad")
    assert written.n_vars == 2
    pd.testing.assert_frame_equal(written.uns["spectra_flags"]["features"], features)
    # the report says it in words
    report = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert "Flagged features" in report
    assert "DHB matrix ions and clusters (within 5 ppm)" in report
    assert "3 of the 5 features were dropped" in report
    assert "[3DHB-3H2O+Na]+" in report
    # cached with the rest of the spectra step; a changed flag option recomputes it
    again = run_pipeline(config, show_progress=False)
    assert "spectra" in again.reused
    assert again.modalities["msi"].uns["spectra_flags"]["n_dropped"] == 3
    isotopes = config.spectra.isotopes.model_copy(update={"drop": False})
    changed = config.model_copy(
        update={"spectra": config.spectra.model_copy(update={"isotopes": isotopes})}
    )
    third = run_pipeline(changed, show_progress=False)
    assert "spectra" not in third.reused
    assert third.modalities["msi"].n_vars == 3  # the M+1 peak stays, flagged in var
    assert third.modalities["msi"].var["isotope"].sum() == 1


def test_flags_without_drop_keep_every_feature(tmp_path, flagged_file):
    spectra = {
        "peaks": {"enabled": True},
        "matrix": {"enabled": True, "polarity": "positive"},
        "isotopes": {"enabled": True},
    }
    result = run_pipeline(
        load_config(_config(tmp_path, flagged_file, spectra)), show_progress=False
    )
    table = result.modalities["msi"]
    assert table.n_vars == 5 and table.uns["spectra_flags"]["n_dropped"] == 0
    assert int(table.var["matrix"].sum()) == 1 and int(table.var["isotope"].sum()) == 1
    report = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert "No feature was dropped" in report


def test_dropping_every_feature_is_a_config_error_naming_the_file(tmp_path, flagged_file):
    spectra = {"peaks": {"enabled": True}, "spatial_chaos": {"min_score": 1.0, "enabled": True}}
    spectra["spatial_chaos"]["drop"] = True
    with pytest.raises(ConfigError, match=r"flags\.imzML.*would drop all 5 features"):
        run_pipeline(load_config(_config(tmp_path, flagged_file, spectra)), show_progress=False)


def test_an_unknown_matrix_is_a_config_error_naming_the_file(tmp_path, flagged_file):
    spectra = {"peaks": {"enabled": True}, "matrix": {"enabled": True, "matrix": "NOPE"}}
    with pytest.raises(ConfigError, match=r"flags\.imzML.*spectra section.*'NOPE'"):
        run_pipeline(load_config(_config(tmp_path, flagged_file, spectra)), show_progress=False)


def test_flags_alone_make_the_spectra_step_active(tmp_path, flagged_file):
    config = load_config(_config(tmp_path, flagged_file, {"isotopes": {"enabled": True}}))
    assert config.spectra.active and config.spectra_msi_name == "msi"
    with pytest.raises(ConfigError, match=r"spectra\.isotopes\.charge"):
        load_config(_config(tmp_path, flagged_file, {"isotopes": {"charge": 0}}))
