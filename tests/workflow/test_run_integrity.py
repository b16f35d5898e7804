"""Stale or wrong results never pass as fine: cache keys, damaged cache entries, stale outputs.

* The step cache's key covers every file a reader opens (an ``.IBD`` in upper case; the
  ``.imzML`` of a config that names the ``.ibd``; a Visium folder's images and matrix).
* A damaged cache entry of any kind the pipeline stores is a miss: recomputed, never used.
* Outputs an earlier run wrote and a failed run, or a run with them switched off, did not are
  removed (only those the journal lists).

One demo run (module fixture) provides inputs and a finished output folder; tests copy the
output folder (its cache stays valid: keys cover the inputs, not the output folder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from spatialfuse.cli.main import cli
from spatialfuse.errors import RegistrationFailedError
from spatialfuse.workflow._config import parse_config
from spatialfuse.workflow._pipeline import run_pipeline
from spatialfuse.workflow._steps_cache import StepCache, input_fingerprint, step_key

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def _demo_config(demo: Path, output: Path, **changes) -> dict:
    data = yaml.safe_load((demo / "config.yaml").read_text(encoding="utf-8"))
    for modality in data["modalities"].values():
        modality["path"] = str(demo / modality["path"])
    data["output"] = str(output)
    data.update(changes)
    return data


def _copy_results(demo: Path, tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(demo / "results", results)
    return results


def _run(data: dict, **kwargs):
    return run_pipeline(parse_config(data, base=Path.cwd()), show_progress=False, **kwargs)


def _rewrite(path: Path) -> None:
    """Write a file's own bytes back: its content is the same, its identity (times) is new."""
    path.write_bytes(path.read_bytes())


# -- 1. the key covers every file a reader opens -----------------------------------------------


def _msi_project(demo: Path, tmp_path: Path, ibd_name: str, config_names: str) -> dict:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(demo / "data" / "msi.imzML", project / "msi.imzML")
    shutil.copy(demo / "data" / "msi.ibd", project / ibd_name)
    return {
        "output": str(project / "results"),
        "modalities": {
            "msi": {"kind": "imzml", "path": str(project / config_names)},
            "he": {"kind": "histology", "path": str(demo / "data" / "he.ome.tif")},
        },
        "registrations": [{"moving": "msi", "fixed": "he", "model": "affine"}],
        "outputs": {"report": False},
    }


@pytest.mark.parametrize(
    ("ibd_name", "config_names", "edited"),
    [
        ("msi.IBD", "msi.imzML", "msi.IBD"),  # the binary in upper case, found by the reader
        ("msi.ibd", "msi.ibd", "msi.imzML"),  # the config names the .ibd; the XML is edited
    ],
)
def test_editing_any_file_the_reader_opens_recomputes_the_step(
    demo, tmp_path, ibd_name, config_names, edited
):
    data = _msi_project(demo, tmp_path, ibd_name, config_names)
    assert _run(data).reused == []
    assert _run(data).reused == ["register_msi_to_he"]
    _rewrite(tmp_path / "project" / edited)
    result = _run(data)
    assert result.reused == []
    summary = json.loads((tmp_path / "project" / "results" / "summary.json").read_text("utf-8"))
    assert summary["reused_steps"] == []


def test_imzml_fingerprint_is_the_pair_whichever_file_is_named(demo, tmp_path):
    data = _msi_project(demo, tmp_path, "msi.IBD", "msi.imzML")
    project = tmp_path / "project"
    by_xml = input_fingerprint(project / "msi.imzML", "imzml")
    by_ibd = input_fingerprint(project / "msi.IBD", "imzml")
    assert by_xml == by_ibd
    assert by_xml.count("\n") == 1 and str((project / "msi.IBD").resolve()) in by_xml
    assert data["modalities"]["msi"]["path"].endswith("msi.imzML")


def test_visium_fingerprint_covers_images_and_matrix_but_not_unread_files(demo, tmp_path):
    folder = tmp_path / "visium"
    shutil.copytree(demo / "data" / "visium", folder)
    before = input_fingerprint(folder, "visium")
    names = {Path(line.split("|")[0]).name for line in before.splitlines()}
    assert {"scalefactors_json.json", "tissue_hires_image.png", "tissue_lowres_image.png"} <= names
    assert any(n.startswith("tissue_positions") for n in names)
    assert any(n.endswith(".h5") for n in names)
    (folder / "notes.txt").write_text("not read by read_visium", encoding="utf-8")
    assert input_fingerprint(folder, "visium") == before
    _rewrite(next(folder.rglob("tissue_lowres_image.png")))
    assert input_fingerprint(folder, "visium") != before


# -- 2. a damaged cache entry is a miss ----------------------------------------------------------


def _entry(results: Path, prefix: str, suffix: str) -> Path:
    (found,) = [p for p in (results / ".cache").glob(f"{prefix}-*{suffix}")]
    return found


def test_damaged_entries_of_every_kind_are_recomputed_never_used(demo, tmp_path):
    results = _copy_results(demo, tmp_path)
    data = _demo_config(demo, results)
    original = pd.read_csv(results / "correlation.csv")
    # The case: a CSV cut to half its rows silently halved correlation.csv.
    csv = _entry(results, "correlate", ".csv")
    lines = csv.read_text(encoding="utf-8").splitlines(keepends=True)
    csv.write_text("".join(lines[: len(lines) // 2]), encoding="utf-8")
    # A garbled JSON crashed the run.
    _entry(results, "register_he_msi_to_visium", ".json").write_text("{not json", "utf-8")
    # A QC figure cut short; an AnnData truncated.
    png = _entry(results, "register_msi_to_he_msi", ".png")
    png.write_bytes(png.read_bytes()[:1000])
    h5ad = _entry(results, "map", ".h5ad")
    h5ad.write_bytes(h5ad.read_bytes()[: h5ad.stat().st_size // 2])

    result = _run(data, write_report=False)
    damaged = {"correlate", "register_he_msi_to_visium", "register_msi_to_he_msi", "map"}
    assert set(result.damaged_cache) == damaged
    assert set(result.reused) == {"joint"}
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["damaged_cache_entries_recomputed"]) == damaged
    assert summary["status"] == "ok"
    pd.testing.assert_frame_equal(pd.read_csv(results / "correlation.csv"), original)
    # Recomputed entries are sealed again: the next run reuses all five steps.
    again = _run(data, write_report=False)
    assert again.damaged_cache == [] and len(again.reused) == 5


def test_a_bit_flip_that_keeps_the_size_is_caught(demo, tmp_path):
    results = _copy_results(demo, tmp_path)
    data = _demo_config(demo, results)
    h5mu = _entry(results, "joint", ".h5mu")
    raw = bytearray(h5mu.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # deep inside a dataset: h5py may well read it without an error
    h5mu.write_bytes(bytes(raw))
    result = _run(data, write_report=False)
    assert result.damaged_cache == ["joint"]
    assert "joint" not in result.reused and "correlate" in result.reused


def test_an_entry_without_its_seal_is_a_miss(tmp_path):
    cache = StepCache(tmp_path / ".cache")
    key = step_key("demo", {"a": 1})
    with cache.store("demo", key, ".json") as tmp:
        tmp.write_text('{"value": 1}', encoding="utf-8")
    assert cache.load("demo", key, ".json", lambda p: json.loads(p.read_text())) == {"value": 1}
    seal = cache.path("demo", key, ".json.sha256")
    seal.unlink()  # a kill between the entry's rename and its seal
    assert cache.load("demo", key, ".json", lambda p: json.loads(p.read_text())) is None
    assert cache.damaged == ["demo"] and cache.reused == ["demo"]
    assert not cache.path("demo", key, ".json").exists()  # the damaged entry is gone


def test_an_entry_that_fails_to_load_is_a_miss(tmp_path):
    cache = StepCache(tmp_path / ".cache")
    with cache.store("demo", "k", ".csv") as tmp:
        tmp.write_text("a,b\n1,2\n", encoding="utf-8")

    def broken(path):
        raise KeyError("column missing")

    assert cache.load("demo", "k", ".csv", broken) is None
    assert cache.damaged == ["demo"] and cache.reused == []


# -- 3. stale outputs are removed ----------------------------------------------------------------


def test_outputs_switched_off_are_removed_and_listed(demo, tmp_path):
    results = _copy_results(demo, tmp_path)
    assert (results / "joint.h5ad").exists() and (results / "spatialdata.zarr").is_dir()
    # A file of the user's beside them (the run is forced): never touched.
    (results / "my_notes.txt").write_text("mine", encoding="utf-8")
    data = _demo_config(
        demo, results, outputs={"h5ad": False, "spatialdata": False, "report": True}
    )
    result = run_pipeline(parse_config(data, base=Path.cwd()), show_progress=False, force=True)
    assert result.stale_removed == ["joint.h5ad", "spatialdata.zarr"]
    assert not (results / "joint.h5ad").exists()
    assert not (results / "spatialdata.zarr").exists()
    assert (results / "my_notes.txt").read_text(encoding="utf-8") == "mine"
    for kept in ("joint.h5mu", "msi_spots.h5ad", "correlation.csv", "report.html"):
        assert (results / kept).exists(), kept
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert summary["stale_outputs_removed"] == ["joint.h5ad", "spatialdata.zarr"]
    report = (results / "report.html").read_text(encoding="utf-8")
    assert "stale outputs of an earlier run, removed" in report and "spatialdata.zarr" in report


def test_a_failed_rerun_leaves_no_result_of_the_earlier_run(demo, tmp_path):
    from PIL import Image

    results = _copy_results(demo, tmp_path)
    Image.new("RGB", (800, 600), (250, 250, 250)).save(tmp_path / "blank.png")
    data = _demo_config(demo, results)
    data["modalities"]["he_msi"] = {
        "kind": "histology",
        "path": str(tmp_path / "blank.png"),
        "pixel_size_um": 5,
    }
    with pytest.raises(RegistrationFailedError):
        _run(data)
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "registration_failed"
    stale = {
        "joint.h5ad",
        "joint.h5mu",
        "msi_spots.h5ad",
        "correlation.csv",
        "spatialdata.zarr",
        "transforms/he_msi_to_visium.json",
        "transforms/msi_to_visium.json",
        "qc/register_he_msi_to_visium.png",
    }
    assert stale <= set(summary["stale_outputs_removed"])
    for name in stale:
        assert not (results / name).exists(), name
    # What this run wrote stays: its transform, QC figure, summary and report.
    for name in ("transforms/msi_to_he_msi.json", "qc/register_msi_to_he_msi.png", "report.html"):
        assert (results / name).exists(), name
    assert np.isfinite(summary["registrations"][0]["metrics"].get("nmi_after", 0.0))


# -- 4. the Visium folder's cross-file checks reach the summary and the report -------------------


def test_visium_consistency_checks_are_in_the_summary_and_report(demo):
    summary = json.loads((demo / "results" / "summary.json").read_text(encoding="utf-8"))
    checks = summary["inputs"]["visium"]["consistency_checks"]
    assert {name: c["status"] for name, c in checks.items()} == {
        "grid_vs_pixels": "ok",
        "hexagonal_grid": "ok",
        "grid_axes": "ok",
        "barcodes_in_tissue": "ok",
        "image_scales": "ok",
        "spot_diameter": "ok",
        # the demo's positions hold only in-tissue spots: nothing to compare them with
        "spots_on_tissue": "skipped",
    }
    report = (demo / "results" / "report.html").read_text(encoding="utf-8")
    assert "Visium cross-file consistency checks" in report and "barcodes_in_tissue" in report
