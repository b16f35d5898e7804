"""The pipeline end to end: demo, outputs, step reuse, invalidation and failed registrations.

One demo run (module fixture) is scored against the synthetic truth and then re-run, edited and
broken in turn.
"""

from __future__ import annotations

import json
import shutil

import anndata
import mudata
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import spatialfuse as sf
from spatialfuse.cli.main import cli
from spatialfuse.errors import OutputLockedError, RegistrationFailedError
from spatialfuse.workflow._config import load_config
from spatialfuse.workflow._journal import JOURNAL_NAME
from spatialfuse.workflow._lock import output_lock
from spatialfuse.workflow._pipeline import run_pipeline

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


def _summary(out):
    return json.loads((out / "results" / "summary.json").read_text(encoding="utf-8"))


def test_demo_recovers_the_truth_and_says_so(demo):
    out, text = demo
    summary = _summary(out)
    evaluation = summary["evaluation"]
    composed = evaluation["msi_to_visium_tre"]
    # One MSI pixel is the success threshold of the registration issue; the demo's chain of two
    # affine registrations lands well inside it.
    assert composed["median_msi_px"] < 0.5
    assert evaluation["clustering"]["adjusted_rand_index"] > 0.5
    assert summary["status"] == "ok"
    assert all(r["ok"] for r in summary["registrations"])
    assert "median TRE" in text and "ARI" in text and "report.html" in text


def test_demo_writes_every_output(demo):
    out, _ = demo
    results = out / "results"
    for name in (
        "report.html",
        "summary.json",
        "joint.h5mu",
        "joint.h5ad",
        "msi_spots.h5ad",
        "correlation.csv",
        "transforms/msi_to_he_msi.json",
        "transforms/he_msi_to_visium.json",
        "transforms/msi_to_visium.json",
        "qc/register_msi_to_he_msi.png",
    ):
        assert (results / name).exists(), name
    assert (results / "spatialdata.zarr").is_dir()
    leftovers = [p.name for p in results.rglob(".*") if p.name not in (".cache", JOURNAL_NAME)]
    assert leftovers == [], f"temporary files left behind: {leftovers}"

    mdata = mudata.read_h5mu(results / "joint.h5mu")
    assert set(mdata.mod) == {"rna", "msi"}
    assert mdata["msi"].n_obs == mdata["rna"].n_obs
    joint = anndata.read_h5ad(results / "joint.h5ad")
    assert set(joint.var["feature_types"]) == {"Gene Expression", "Metabolite"}

    # The composed transform on disk is the composition of the two registrations on disk.
    t1 = sf.reg.Transform.load(results / "transforms/msi_to_he_msi.json")
    t2 = sf.reg.Transform.load(results / "transforms/he_msi_to_visium.json")
    composed = sf.reg.Transform.load(results / "transforms/msi_to_visium.json")
    points = np.array([[0.0, 0.0], [1000.0, 500.0], [2500.0, 2000.0]])
    np.testing.assert_allclose(composed.apply(points), t2.apply(t1.apply(points)), atol=1e-9)


def test_demo_spatialdata_store_is_one_picture(demo):
    """The run's store: every element in ``global``, the MSI as image + labels, the joint
    clusters in a table annotating the spots; images stored once in joint.h5mu, no repeated
    obs columns in joint.h5ad."""
    import warnings

    import spatialdata as sd
    from spatialdata.transformations import get_transformation

    out, _ = demo
    results = out / "results"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = sd.read_zarr(results / "spatialdata.zarr")
    assert set(sdata.images) == {"he", "visium_he", "msi_image"}
    assert set(sdata.labels) == {"msi_pixels"} and set(sdata.shapes) == {"visium_spots"}
    for name in ("he", "visium_he", "msi_image", "msi_pixels", "visium_spots"):
        assert "global" in get_transformation(sdata[name], get_all=True), name
    # pyramids halve down to below 1,024 px: the 2,000 px Visium H&E has levels, the demo's
    # H&E at 4 µm (890 px) is one
    assert list(sdata["visium_he"].children) == ["scale0", "scale1"]
    assert sdata["msi_image"].c.values[0] == "TIC" and len(sdata["msi_image"].c) == 21
    joint = sdata.tables["joint"]
    assert joint.uns["spatialdata_attrs"]["region"] == "visium_spots"
    assert [t for t in sdata.tables if "joint" in sdata.tables[t].obs] == ["joint"]
    mdata = mudata.read_h5mu(results / "joint.h5mu")
    np.testing.assert_array_equal(
        joint.obs["joint"].astype(str).to_numpy(),
        mdata.obs.loc[joint.obs_names, "joint"].astype(str).to_numpy(),
    )
    holders = [m for m in mdata.mod if "spatial" in mdata[m].uns] + (
        ["global"] if "spatial" in mdata.uns else []
    )
    assert holders == ["rna"]
    columns = list(anndata.read_h5ad(results / "joint.h5ad").obs.columns)
    assert "in_tissue" in columns and "rna:in_tissue" not in columns
    assert "msi:in_tissue" not in columns and "joint" in columns


def test_rerun_reuses_every_step_and_gives_identical_outputs(demo):
    out, _ = demo
    results = out / "results"
    before = (results / "transforms/msi_to_visium.json").read_bytes()
    labels_before = mudata.read_h5mu(results / "joint.h5mu").obs["joint"].astype(str)
    config = load_config(out / "config.yaml")
    result = run_pipeline(config, show_progress=False, write_report=False)
    assert sorted(set(result.reused)) == sorted(
        ["register_msi_to_he_msi", "register_he_msi_to_visium", "map", "joint", "correlate"]
    )
    assert (results / "transforms/msi_to_visium.json").read_bytes() == before
    labels_after = result.mdata.obs["joint"].astype(str)
    assert (labels_after.to_numpy() == labels_before.to_numpy()).all()


def test_changed_setting_recomputes_only_what_depends_on_it(demo, tmp_path):
    out, _ = demo
    data = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    data["clustering"]["resolution"] = 0.5
    edited = out / "config_resolution.yaml"
    edited.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run_pipeline(load_config(edited), show_progress=False, write_report=False)
    assert "map" in result.reused and "register_msi_to_he_msi" in result.reused
    assert "joint" not in result.reused and "correlate" not in result.reused


def test_changed_input_invalidates_what_read_it(demo, tmp_path):
    out, _ = demo
    project = tmp_path / "project"
    shutil.copytree(out / "data", project / "data")
    shutil.copytree(out / "results" / ".cache", project / "results" / ".cache")
    shutil.copy(out / "config.yaml", project / "config.yaml")
    config = load_config(project / "config.yaml")
    # Copies are new files (path, inode, times): nothing from the copied cache may be reused.
    assert run_pipeline(config, show_progress=False, write_report=False).reused == []
    assert len(run_pipeline(config, show_progress=False, write_report=False).reused) == 5
    # Rewrite one Visium file with the same bytes: only the steps that read Visium recompute.
    scalefactors = next((project / "data" / "visium").rglob("scalefactors_json.json"))
    scalefactors.write_bytes(scalefactors.read_bytes())
    result = run_pipeline(config, show_progress=False, write_report=False)
    assert result.reused == ["register_msi_to_he_msi"]


def test_concurrent_run_is_refused(demo):
    out, _ = demo
    config = load_config(out / "config.yaml")
    with output_lock(config.output):
        with pytest.raises(OutputLockedError):
            run_pipeline(config, show_progress=False)


def _blank_project(demo, tmp_path):
    """The demo's MSI registered onto an image with no tissue: must fail, never pass as ok."""
    from PIL import Image

    out, _ = demo
    Image.new("RGB", (800, 600), (250, 250, 250)).save(tmp_path / "blank.png")
    data = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    data["modalities"] = {
        "msi": {"kind": "imzml", "path": str(out / "data" / "msi.imzML")},
        "blank": {"kind": "histology", "path": str(tmp_path / "blank.png"), "pixel_size_um": 5},
    }
    data["registrations"] = [{"moving": "msi", "fixed": "blank", "model": "affine"}]
    data["output"] = str(tmp_path / "results")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_failed_registration_stops_the_run_with_exit_3(demo, tmp_path):
    config = _blank_project(demo, tmp_path)
    result = CliRunner().invoke(cli, ["run", str(config), "--quiet"])
    assert result.exit_code == 3, result.output
    assert "msi → blank failed its quality checks" in result.output
    summary = json.loads((tmp_path / "results" / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "registration_failed"
    assert summary["registrations"][0]["failures"]
    report = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert "could not register" in report and "no tissue to register" in report
    assert "skipped: map, cluster, correlate (the config has no MSI → Visium path" in report
    assert "3 sections failed" in report
    with pytest.raises(RegistrationFailedError, match="msi → blank"):
        run_pipeline(load_config(config), show_progress=False, write_report=False)


def test_failed_registration_can_be_accepted(demo, tmp_path):
    config = _blank_project(demo, tmp_path)
    result = CliRunner().invoke(cli, ["run", str(config), "--quiet", "--accept-failed"])
    assert result.exit_code == 0, result.output
    assert "FAILED (accepted)" in result.output


def test_init_config_writes_a_valid_file_and_keeps_existing_ones(tmp_path):
    path = tmp_path / "config.yaml"
    runner = CliRunner()
    assert runner.invoke(cli, ["init-config", str(path)]).exit_code == 0
    assert load_config(path).mapping.method == "area"
    again = runner.invoke(cli, ["init-config", str(path)])
    assert again.exit_code == 1 and "--force" in again.output


def test_subcommands_share_the_pipeline_steps(demo, tmp_path):
    out, _ = demo
    data = out / "data"
    runner = CliRunner()
    transform = tmp_path / "t.json"
    reg = runner.invoke(
        cli,
        ["register", str(data / "msi.imzML"), str(data / "he.ome.tif"), "--out", str(transform)],
    )
    assert reg.exit_code == 0, reg.output
    pipeline_t = sf.reg.Transform.load(out / "results/transforms/msi_to_he_msi.json")
    points = np.array([[100.0, 100.0], [2000.0, 1500.0]])
    np.testing.assert_allclose(
        sf.reg.Transform.load(transform).apply(points), pipeline_t.apply(points), atol=1e-6
    )
    spots = tmp_path / "spots.h5ad"
    mapped = runner.invoke(
        cli,
        [
            "map",
            str(data / "msi.imzML"),
            str(data / "visium"),
            "--transform",
            str(out / "results/transforms/msi_to_visium.json"),
            "--out",
            str(spots),
        ],
    )
    assert mapped.exit_code == 0, mapped.output
    ours = anndata.read_h5ad(spots)
    theirs = anndata.read_h5ad(out / "results" / "msi_spots.h5ad")
    np.testing.assert_array_equal(np.asarray(ours.X), np.asarray(theirs.X))


def test_demo_report_renders_in_a_browser_with_every_section(demo, chromium):
    out, _ = demo
    # Other tests re-run into this folder without a report, which removes the earlier one as
    # stale: the demo writes it again (every step is reused).
    again = CliRunner().invoke(cli, ["demo", "--out", str(out), "--quiet"])
    assert again.exit_code == 0, again.output
    report = out / "results" / "report.html"
    url = report.resolve().as_uri()
    page, tab = chromium.load(url, width=1280, height=900)
    assert page.errors == []
    assert [u for u in page.requests if not u.startswith("data:")] == [url]
    # two registration QC figures, the composed overlay, coverage, clusters, the heat map and
    # three gene–ion maps
    assert len(page.images) == 9
    for image in page.images:
        assert image["complete"] and image["naturalWidth"] > 0, image
    headings = chromium.evaluate(
        "Array.from(document.querySelectorAll('h2')).map(h => h.textContent)", tab
    )
    text = " ".join(headings)
    for title in (
        "Overview",
        "Inputs",
        "Registrations",
        "Spot coverage",
        "Joint clusters",
        "Cross-modality pairs",
    ):
        assert title in text, (title, headings)
    body = chromium.evaluate("document.body.innerText", tab)
    assert "Against truth" in body and "TRE MSI → Visium (composed)" in body
    # each registration's checks in words, with their pass condition and result
    assert body.count("Quality checks") == 2 and "alignment pinned down" in body
    assert "pass when" in body and "≤ 0.9" in body


def test_nonrigid_he_to_visium_makes_the_he_frame_global(demo, tmp_path):
    """SpatialData cannot warp an image: with a B-spline H&E → Visium the store's global system
    is the H&E frame, the spots warped and the Visium H&E resampled into it (the export used to
    stop with 'the H&E's transform is nonrigid')."""
    import warnings

    import spatialdata as sd

    out, _ = demo
    data = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    data["registrations"][1]["model"] = "bspline"
    data["outputs"] = {"report": False, "h5ad": False, "h5mu": False}
    data["output"] = str(tmp_path / "results")
    for modality in data["modalities"].values():
        modality["path"] = str(out / modality["path"])
    shutil.copytree(out / "results" / ".cache", tmp_path / "results" / ".cache")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run_pipeline(load_config(config), show_progress=False, write_report=False)
    assert not result.msi_to_visium.is_linear
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdata = sd.read_zarr(result.files["spatialdata"])
    info = sdata.attrs["spatialfuse"]
    assert info["reference"] == "he" and info["warped_elements"] == ["visium_spots"]
    # MSI → H&E stays affine: the MSI raster keeps its own frame, only the Visium H&E is resampled
    assert info["resampled_elements"] == ["visium_he"]
    he_to_visium = sf.reg.Transform.from_dict(info["transforms"]["visium"]).inverse()
    spots = sdata.tables["visium"].obsm["spatial_global"]
    visium = result.modalities["visium"]
    np.testing.assert_allclose(he_to_visium.apply(spots), visium.obsm["spatial_um"], atol=1e-3)


def test_warped_histology_overlays_the_visium_image(demo, tmp_path):
    from skimage.transform import resize

    out, _ = demo
    data = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    data["outputs"] = {"warped_images": True, "spatialdata": False, "report": False}
    data["output"] = str(tmp_path / "results")
    for modality in data["modalities"].values():
        modality["path"] = str(out / modality["path"])
    shutil.copytree(out / "results" / ".cache", tmp_path / "results" / ".cache")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run_pipeline(load_config(config), show_progress=False)
    assert "register_he_msi_to_visium" in result.reused
    warped = sf.io.read_histology(result.files["warped he_msi"])
    visium = result.modalities["visium"]
    assert warped.pixel_size_um == pytest.approx((visium.uns["spatialfuse"]["um_per_px"],) * 2)
    library = next(iter(visium.uns["spatial"]))
    hires = np.asarray(visium.uns["spatial"][library]["images"]["hires"], dtype=float)
    hires = hires / 255.0 if hires.max() > 1.5 else hires
    scale = visium.uns["spatial"][library]["scalefactors"]["tissue_hires_scalef"]
    small = warped.downsampled(factor=max(1, round(1 / scale)))[0].astype(float) / 255.0
    target = (round(warped.shape[0] * scale), round(warped.shape[1] * scale))
    small = resize(small, target, order=1)  # the hires image's grid
    rows, cols = min(small.shape[0], hires.shape[0]), min(small.shape[1], hires.shape[1])
    tissue_warped = small[:rows, :cols].mean(axis=2) < 0.85
    tissue_visium = hires[:rows, :cols, :3].mean(axis=2) < 0.85
    dice = 2 * (tissue_warped & tissue_visium).sum() / (tissue_warped.sum() + tissue_visium.sum())
    assert dice > 0.9, dice


def test_demo_rerun_into_its_folder_keeps_its_files_and_reuses_every_step(demo):
    out, _ = demo
    unrelated = out / "config_resolution.yaml"  # written by a test above: not the demo's
    unrelated.write_text("mine\n", encoding="utf-8")
    files = [out / "config.yaml", *(p for p in (out / "data").rglob("*") if p.is_file())]
    identity = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == identity
    assert unrelated.read_text(encoding="utf-8") == "mine\n"
    assert sorted(set(_summary(out)["reused_steps"])) == sorted(
        ["register_msi_to_he_msi", "register_he_msi_to_visium", "map", "joint", "correlate"]
    )
