"""The spectra step streamed: recalibration and peaks straight from a continuous imzML (no table
read first), from a processed one (read as a table inside the step), and from a converted zarr
store (``kind: msi_zarr``), all giving the same peaks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import spatialfuse as sf
from spatialfuse.datasets._writers import write_imzml
from spatialfuse.errors import ConfigError
from spatialfuse.workflow import _steps, load_config, run_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pp"))
from spectra_data import PEAKS, profile_table

DRIFT_PPM = np.linspace(-12.0, 12.0, 24)
SPECTRA = {"recalibration": {"enabled": True, "n_references": 6}, "peaks": {"enabled": True}}


def _write(path: Path, mode: str) -> Path:
    table = profile_table(n_pixels=24, drift_ppm=DRIFT_PPM, seed=3)
    coords = np.array([(x + 1, y + 1) for y in range(4) for x in range(6)])
    mz, x = table.var["mz"].to_numpy(), np.asarray(table.X)
    if mode == "processed":
        mz, x = [mz] * len(x), list(x)
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
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spectra_store")
    continuous = _write(folder / "profile.imzML", "continuous")
    processed = _write(folder / "processed.imzML", "processed")
    store = sf.io.convert_imzml(
        continuous, folder / "profile.zarr", max_features=None, chunks=(8, 16384)
    )
    return {"imzml": continuous, "processed": processed, "msi_zarr": store}


def _run(tmp_path: Path, kind: str, path: Path, spectra: dict, monkeypatch=None):
    data = {
        "modalities": {"msi": {"kind": kind, "path": str(path)}},
        "spectra": spectra,
        "output": str(tmp_path / f"results_{path.stem}"),
    }
    config = tmp_path / f"config_{path.stem}.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return run_pipeline(load_config(config), show_progress=False)


def _check_peaks(table):
    found = table.var["mz"].to_numpy()
    error = np.abs(found[:, None] - PEAKS[None, :]).min(axis=0) / PEAKS * 1e6
    assert len(found) == len(PEAKS) and error.max() < 1, error
    info = table.uns["recalibration"]
    assert info["median_abs_ppm_before"] > 5 and info["median_abs_ppm_after"] < 1
    return found


def test_recalibration_streams_a_continuous_file(tmp_path, inputs, monkeypatch):
    read = []
    original = _steps.read_modality
    monkeypatch.setattr(_steps, "read_modality", lambda m: read.append(m.kind) or original(m))
    result = _run(tmp_path, "imzml", inputs["imzml"], SPECTRA)
    assert read == []  # the profile table is never read as a whole
    _check_peaks(result.modalities["msi"])


def test_a_processed_file_is_read_inside_the_step(tmp_path, inputs):
    result = _run(tmp_path, "imzml", inputs["processed"], SPECTRA)
    _check_peaks(result.modalities["msi"])


def test_a_store_gives_the_peaks_of_its_imzml(tmp_path, inputs):
    annotation = {"database": "db.csv", "adducts": ["[M+H]+"], "polarity": "positive"}
    (tmp_path / "db.csv").write_text(f"name,mass\nlipid one,{PEAKS[0] - 1.007276}\n")
    spectra = {**SPECTRA, "annotation": annotation, "isotopes": {"enabled": True}}
    store = _run(tmp_path, "msi_zarr", inputs["msi_zarr"], spectra)
    imzml = _run(tmp_path, "imzml", inputs["imzml"], spectra)
    from_store = _check_peaks(store.modalities["msi"])
    np.testing.assert_allclose(from_store, imzml.modalities["msi"].var["mz"], rtol=1e-8)
    np.testing.assert_allclose(
        np.asarray(store.modalities["msi"].X), np.asarray(imzml.modalities["msi"].X), rtol=1e-4
    )
    names = store.modalities["msi"].var["annotation_name"]
    assert sorted(n for n in names if n) == ["lipid one"]
    again = _run(tmp_path, "msi_zarr", inputs["msi_zarr"], spectra)
    assert "spectra" in again.reused


def test_a_store_needs_peaks(tmp_path, inputs):
    with pytest.raises(ConfigError, match=r"msi_zarr store 'msi' need peaks"):
        _run(tmp_path, "msi_zarr", inputs["msi_zarr"], {"recalibration": {"enabled": True}})
