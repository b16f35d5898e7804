"""Three synthetic sections through ``spatialfuse run`` on a LocalCluster, against each run alone.

The same section gives the same transforms, joint clusters and summary numbers whether it runs
as one sample of several on a cluster or alone; the combined table holds every sample's spots
under its name, and a re-run of the unchanged config takes it from the run's step cache (another
batch correction recomputes it). The batch correction's known answer is in
``test_samples_batch.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mudata
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import spatialfuse as sf
from spatialfuse.cli.main import cli
from spatialfuse.workflow import run

#: Three pipeline runs on a cluster and three alone: about a minute and a half on 2 cores.
pytestmark = pytest.mark.slow

ROTATIONS = {"s0": None, "s1": 40.0, "s2": 200.0}
SHARED = {
    "modalities": {
        "msi": {"kind": "imzml"},
        "he_msi": {"kind": "histology"},
        "visium": {"kind": "visium"},
    },
    "registrations": [
        {"moving": "msi", "fixed": "he_msi", "seed": 1},
        {"moving": "he_msi", "fixed": "visium", "seed": 1},
    ],
    "outputs": {"spatialdata": False, "report": False},
}


def _own(name: str, trio) -> dict:
    own = {
        "modalities": {
            "msi": {"path": str(trio.msi)},
            "he_msi": {"path": str(trio.he)},
            "visium": {"path": str(trio.visium)},
        }
    }
    if name == "s0":
        own["outputs"] = {"report": True}  # an override: this sample's report
    return own


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    root = tmp_path_factory.mktemp("sections")
    trios = {
        name: sf.datasets.synthetic_trio(
            root / name,
            seed=1,
            rotation_deg=rotation,
            tissue_size_um=(1200.0, 1000.0),
            he_pixel_size_um=4.0,
            n_ions=40,
            n_genes=40,
            write_he_serial=False,
        )
        for name, rotation in ROTATIONS.items()
    }
    config = {
        "output": str(root / "together"),
        **SHARED,
        "samples": [{"name": n, **_own(n, t)} for n, t in trios.items()],
    }
    path = root / "samples.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = CliRunner().invoke(cli, ["run", str(path), "--workers", "2", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    alone = {}
    for name, trio in trios.items():
        own = _own(name, trio)
        single = {
            "output": str(root / "alone" / name),
            **SHARED,
            "modalities": {
                m: {**SHARED["modalities"][m], **own["modalities"][m]} for m in own["modalities"]
            },
            "outputs": {**SHARED["outputs"], **own.get("outputs", {})},
        }
        file = root / f"{name}.yaml"
        file.write_text(yaml.safe_dump(single, sort_keys=False), encoding="utf-8")
        alone[name] = run(file, show_progress=False)
    return root, result.output, alone


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", list(ROTATIONS))
def test_each_sample_matches_its_run_alone(sections, name):
    root, _, alone = sections
    here, there = root / "together" / name, root / "alone" / name
    for file in sorted((there / "transforms").glob("*.json")):
        a = sf.reg.Transform.load(here / "transforms" / file.name)
        b = sf.reg.Transform.load(file)
        points = np.array([[0.0, 0.0], [600.0, 500.0], [1200.0, 1000.0]])
        np.testing.assert_allclose(a.apply(points), b.apply(points), atol=1e-6)
    together = mudata.read_h5mu(here / "joint.h5mu")
    by_itself = alone[name].mdata
    assert list(together.obs_names) == list(by_itself.obs_names)
    np.testing.assert_array_equal(
        together.obs["joint"].astype(str).to_numpy(), by_itself.obs["joint"].astype(str).to_numpy()
    )
    a, b = _json(here / "summary.json"), _json(there / "summary.json")
    assert a["status"] == b["status"] == "ok"
    assert a["mapping"] == b["mapping"] and a["clustering"] == b["clustering"]
    for ra, rb in zip(a["registrations"], b["registrations"], strict=True):
        assert ra["ok"] == rb["ok"] and ra["failures"] == rb["failures"]
        for key, value in rb["metrics"].items():
            if isinstance(value, float) and key != "seconds":
                assert ra["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    pairs = [(p["gene"], p["ion"]) for p in a["correlation"]["top_pairs"]]
    assert pairs == [(p["gene"], p["ion"]) for p in b["correlation"]["top_pairs"]]
    assert (here / "report.html").is_file() == (name == "s0")


def test_the_combined_table_holds_every_sample_and_is_clustered_across_them(sections):
    root, text, alone = sections
    out = root / "together"
    combined = mudata.read_h5mu(out / "combined.h5mu")
    assert combined.obs_names.is_unique
    counts = combined.obs["sample"].value_counts().to_dict()
    assert counts == {name: alone[name].mdata.n_obs for name in ROTATIONS}
    for name, result in alone.items():
        expected = {f"{barcode}-{name}" for barcode in result.mdata.obs_names}
        assert expected == set(combined.obs_names[combined.obs["sample"] == name])
    labels = combined.obs["joint"]
    assert labels.notna().all() and labels.nunique() >= 2
    # the same tissue in three sections: every cluster is found in every section
    table = combined.obs.groupby(["sample", "joint"], observed=True).size().unstack()
    assert table.notna().all().all()
    assert {"sample"} <= set(combined["rna"].obs.columns)
    assert combined.uns["spatialfuse"]["samples"]["n_ions"] > 20  # ions matched across sections
    summary = _json(out / "summary.json")
    assert summary["status"] == "ok" and summary["n_failed"] == 0
    assert summary["combined"]["n_spots"] == combined.n_obs
    assert (out / "combined.h5ad").is_file()
    assert "combined table" in text and "s2: ok" in text


def test_an_unchanged_rerun_reuses_the_combined_table_and_another_correction_recomputes_it(
    sections,
):
    from spatialfuse.workflow import load_samples_config, run_samples

    root, _, _ = sections
    out = root / "together"
    first = _json(out / "summary.json")
    assert first["reused_steps"] == []
    assert first["combined"]["batch_correction"]["method"] == "combat"  # the default
    clusters = mudata.read_h5mu(out / "combined.h5mu").obs["joint"].astype(str).to_numpy()

    again = run_samples(root / "samples.yaml", n_workers=2, show_progress=False)
    assert again.reused == ["combined"]
    assert _json(out / "summary.json")["reused_steps"] == ["combined"]
    for name in ROTATIONS:  # each sample's own steps came from its cache too
        assert "joint" in again.summary["samples"][name]["reused_steps"]
    np.testing.assert_array_equal(again.combined.obs["joint"].astype(str).to_numpy(), clusters)
    written = mudata.read_h5mu(out / "combined.h5mu")
    np.testing.assert_array_equal(written.obs["joint"].astype(str).to_numpy(), clusters)

    config = load_samples_config(root / "samples.yaml")
    combined = config.combined.model_copy(update={"batch_correction": "none"})
    other = run_samples(
        config.model_copy(update={"combined": combined}), n_workers=2, show_progress=False
    )
    assert other.reused == []
    for name in ROTATIONS:
        assert "joint" in other.summary["samples"][name]["reused_steps"]
    assert other.combined.uns["spatialfuse"]["samples"]["batch_correction"]["method"] == "none"
    assert "X_pca_uncorrected" not in other.combined["msi"].obsm
    assert other.summary["combined"]["batch_correction"]["method"] == "none"
