"""The combined table of a samples: run is a cached step: reused when nothing changed.

Two small synthetic sections through the whole pipeline on an in-process cluster, three times:
the second, identical run reuses every sample's steps and the combined table; the third, with
another batch correction, reuses the samples' steps and recomputes the combined table.
"""

from __future__ import annotations

import json

import mudata
import numpy as np
import pytest
import yaml

import spatialfuse as sf
from spatialfuse.workflow import run_samples
from spatialfuse.workflow._samples import COMBINED_STEP, combined_key, sample_digest
from spatialfuse.workflow._samples_config import Combined

#: Three pipeline runs of two sections (the last two from the samples' caches).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scheduler():
    """A scheduler with one in-process worker (no worker processes to start)."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, processes=False, threads_per_worker=2, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def _config(root, trios, batch_correction: str):
    data = {
        "output": str(root / "out"),
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
        "combined": {"batch_correction": batch_correction},
        "samples": [
            {
                "name": name,
                "modalities": {
                    "msi": {"path": str(trio.msi)},
                    "he_msi": {"path": str(trio.he)},
                    "visium": {"path": str(trio.visium)},
                },
            }
            for name, trio in trios.items()
        ],
    }
    path = root / f"samples_{batch_correction}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_an_unchanged_run_reuses_the_combined_table_and_a_new_correction_recomputes_it(
    tmp_path, scheduler
):
    trios = {
        name: sf.datasets.synthetic_trio(
            tmp_path / name,
            seed=1,
            rotation_deg=rotation,
            tissue_size_um=(1200.0, 1000.0),
            he_pixel_size_um=4.0,
            n_ions=40,
            n_genes=40,
            write_he_serial=False,
        )
        for name, rotation in (("s0", None), ("s1", 40.0))
    }
    combat = _config(tmp_path, trios, "combat")
    first = run_samples(combat, scheduler=scheduler, show_progress=False)
    assert first.ok and first.combined is not None
    assert first.reused == [] and first.summary["reused_steps"] == []
    entries = sorted(p.name for p in (tmp_path / "out" / ".cache").glob(f"{COMBINED_STEP}-*"))
    assert len(entries) == 2  # the table and its seal

    second = run_samples(combat, scheduler=scheduler, show_progress=False)
    assert second.reused == [COMBINED_STEP]
    assert second.summary["reused_steps"] == [COMBINED_STEP]
    for name in trios:  # each sample's own steps came from its cache too
        assert "joint" in second.summary["samples"][name]["reused_steps"]
    np.testing.assert_array_equal(
        second.combined.obs["joint"].astype(str), first.combined.obs["joint"].astype(str)
    )
    written = mudata.read_h5mu(tmp_path / "out" / "combined.h5mu")
    assert list(written.obs_names) == list(first.combined.obs_names)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["reused_steps"] == [COMBINED_STEP]
    assert summary["combined"]["batch_correction"]["method"] == "combat"

    third = run_samples(_config(tmp_path, trios, "none"), scheduler=scheduler, show_progress=False)
    assert third.reused == []
    for name in trios:
        assert "joint" in third.summary["samples"][name]["reused_steps"]
    assert third.combined.uns["spatialfuse"]["samples"]["batch_correction"]["method"] == "none"
    assert "X_pca_uncorrected" not in third.combined["msi"].obsm
    assert third.summary["combined"]["batch_correction"] == {
        "method": "none",
        "representation": "X_pca",
    }


def test_the_key_follows_every_sample_and_every_combined_setting():
    import anndata as ad

    rng = np.random.default_rng(0)
    table = ad.AnnData(rng.normal(size=(6, 3)).astype(np.float32))
    table.obsm["spatial_um"] = rng.normal(size=(6, 2))
    parts = {"a": (table, table), "b": (table, table.copy())}
    key = combined_key(parts, Combined())
    assert key == combined_key(
        {k: (v[0].copy(), v[1].copy()) for k, v in parts.items()}, Combined()
    )
    assert key != combined_key(parts, Combined(batch_correction="none"))
    assert key != combined_key(parts, Combined(ppm=5.0))
    assert key == combined_key(parts, Combined(h5ad=False))  # which files are written: not
    assert key != combined_key({"b": parts["b"], "a": parts["a"]}, Combined())  # the order
    changed = table.copy()
    changed.X[0, 0] += 1.0
    assert sample_digest(changed) != sample_digest(table)
    moved = table.copy()
    moved.obsm["spatial_um"][0, 0] += 1.0
    assert sample_digest(moved) != sample_digest(table)
