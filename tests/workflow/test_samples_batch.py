"""Batch correction between sections in the combined table: a known answer on synthetic sections.

Three synthetic sections of one tissue design (``synthetic_trio``'s seed draws the ions' m/z and
the regions' profiles, so the sections share one seed and differ in their tissue outline,
spots, MSI pixels and noise: each section has its own size and MSI rotation). The MSI of one
section (``s1``) is shifted as a whole, as another matrix coating or ionisation yield would:
each ion scaled by its own factor (lognormal, σ 1) and an offset of the mean intensity added.
Without correction that section forms clusters of its own; with ComBat the same regions get
the same cluster in every section.
"""

from __future__ import annotations

import sys

import anndata as ad
import mudata
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

import spatialfuse as sf
from spatialfuse.errors import ConfigError, MissingDependencyError
from spatialfuse.workflow._config import Clustering, Mapping, Preprocessing
from spatialfuse.workflow._samples import combined_table
from spatialfuse.workflow._samples_batch import METHODS, correct_batches
from spatialfuse.workflow._samples_config import Combined, parse_samples_config
from spatialfuse.workflow._steps import map_spots

#: name → (tissue size µm, MSI rotation °) of each section.
SECTIONS = {
    "s0": ((1200.0, 1000.0), 0.0),
    "s1": ((1100.0, 1000.0), 40.0),
    "s2": ((1200.0, 900.0), 200.0),
}
SHIFTED = "s1"
#: Regions that RNA and MSI tell apart (vascular and adipose differ in the H&E only).
SEPARABLE = {"vascular": "vasc", "adipose": "vasc"}


def _shift(spots: ad.AnnData, seed: int = 0) -> ad.AnnData:
    """The section's MSI shifted as a whole: each ion scaled (lognormal σ 1), an offset added."""
    rng = np.random.default_rng(seed)
    x = np.asarray(spots.X, dtype=np.float64)
    factors = np.exp(rng.normal(0.0, 1.0, size=x.shape[1]))
    out = spots.copy()
    out.X = (x * factors + np.nanmean(x)).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def sections(tmp_path_factory):
    """Each section's (Visium table, MSI on its spots) and every spot's true region."""
    root = tmp_path_factory.mktemp("batch")
    parts, truth = {}, {}
    for name, (size, rotation) in SECTIONS.items():
        trio = sf.datasets.synthetic_trio(
            root / name,
            seed=1,
            rotation_deg=rotation,
            tissue_size_um=size,
            he_pixel_size_um=4.0,
            n_ions=40,
            n_genes=40,
            write_he_serial=False,
        )
        visium = sf.io.read_visium(trio.visium)
        spots = map_spots(sf.io.read_imzml(trio.msi), visium, trio.msi_to_visium, Mapping())
        parts[name] = (visium, _shift(spots) if name == SHIFTED else spots)
        regions = [trio.region_names[i] if i >= 0 else "background" for i in trio.spot_labels]
        for barcode, region in zip(visium.obs_names, regions, strict=True):
            truth[f"{barcode}-{name}"] = SEPARABLE.get(region, region)
    return parts, truth


def _scores(mdata: mudata.MuData, truth: dict[str, str]) -> dict[str, float]:
    """ARI of the clusters with the true regions and with the sections."""
    labels = mdata.obs["joint"].astype(str).to_numpy()
    samples = mdata.obs["sample"].astype(str).to_numpy()
    regions = np.array([truth[name] for name in mdata.obs_names])
    # each cluster's majority section: clusters of the shifted section's own mark it out
    table = pd.crosstab(labels, samples)
    majority = table.idxmax(axis=1).reindex(labels).to_numpy()
    return {
        "regions": adjusted_rand_score(regions, labels),
        "sample": adjusted_rand_score(samples, labels),
        "shifted_apart": adjusted_rand_score(samples == SHIFTED, majority == SHIFTED),
    }


def _combined(parts, method: str) -> mudata.MuData:
    return combined_table(
        parts,
        preprocessing=Preprocessing(),
        clustering=Clustering(),
        batch_correction=method,
    )


@pytest.mark.slow
def test_combat_gives_the_same_regions_the_same_cluster_across_sections(sections):
    parts, truth = sections
    before = _scores(_combined(parts, "none"), truth)
    corrected = _combined(parts, "combat")
    after = _scores(corrected, truth)
    # Without correction the shifted section has clusters of its own (measured: every one of
    # its spots is in a cluster of its own; ARI with the regions 0.47, with the sections 0.19:
    # the other two sections share five clusters, so the sections cannot explain all of them).
    assert before["shifted_apart"] >= 0.9, before
    assert before["sample"] >= 0.1, before
    assert before["regions"] <= 0.6, before
    # With ComBat the regions come back across sections (measured 0.95) and no cluster is a
    # section's own (ARI with the sections −0.01).
    assert after["regions"] >= 0.85, after
    assert after["regions"] - before["regions"] >= 0.3
    assert after["shifted_apart"] <= 0.1, after
    assert after["sample"] <= 0.05, after
    done = corrected.uns["spatialfuse"]["samples"]["batch_correction"]
    assert done["method"] == "combat" and done["representation"] == "X_pca"
    assert sorted(done["modalities"]) == ["msi", "rna"]
    for name in ("rna", "msi"):
        mod = corrected[name]
        assert mod.obsm["X_pca_uncorrected"].shape == mod.obsm["X_pca"].shape
        assert not np.allclose(mod.obsm["X_pca_uncorrected"], mod.obsm["X_pca"])


@pytest.mark.slow
def test_harmony_corrects_the_components_where_harmonypy_is_installed(sections):
    pytest.importorskip("harmonypy")
    parts, _ = sections
    mdata = _combined(parts, "harmony")
    done = mdata.uns["spatialfuse"]["samples"]["batch_correction"]
    assert done["method"] == "harmony" and sorted(done["modalities"]) == ["msi", "rna"]
    assert not np.allclose(mdata["msi"].obsm["X_pca_uncorrected"], mdata["msi"].obsm["X_pca"])
    assert mdata.obs["joint"].notna().all()


def _tiny(n_per: tuple[int, ...] = (20, 20, 20), *, nan_rows: int = 0) -> mudata.MuData:
    rng = np.random.default_rng(0)
    tables = {}
    samples = np.repeat([f"s{i}" for i in range(len(n_per))], n_per)
    for name in ("rna", "msi"):
        n = len(samples)
        table = ad.AnnData(
            X=np.zeros((n, 2), dtype=np.float32),
            obs=pd.DataFrame({"sample": samples}, index=[f"c{i}" for i in range(n)]),
            var=pd.DataFrame(index=[f"{name}{j}" for j in range(2)]),
        )
        pcs = rng.normal(size=(n, 5))
        pcs[samples == "s1"] += 4.0
        if name == "msi" and nan_rows:
            pcs[:nan_rows] = np.nan
        table.obsm["X_pca"] = pcs
        tables[name] = table
    return mudata.MuData(tables)


def test_combat_removes_a_section_offset_and_leaves_spots_without_data_alone():
    mdata = _tiny(nan_rows=3)
    before = mdata["rna"].obsm["X_pca"].copy()
    done = correct_batches(mdata, method="combat")
    assert sorted(done["modalities"]) == ["msi", "rna"]
    pcs = mdata["msi"].obsm["X_pca"]
    assert np.isnan(pcs[:3]).all() and np.isfinite(pcs[3:]).all()
    samples = mdata["rna"].obs["sample"].to_numpy()
    means = [mdata["rna"].obsm["X_pca"][samples == s].mean(axis=0) for s in ("s0", "s1")]
    assert np.abs(means[0] - means[1]).max() < 0.5  # was 4
    np.testing.assert_array_equal(mdata["rna"].obsm["X_pca_uncorrected"], before)


def test_none_changes_nothing_and_one_section_is_not_corrected():
    mdata = _tiny()
    before = mdata["rna"].obsm["X_pca"].copy()
    assert correct_batches(mdata, method="none") == {"method": "none", "representation": "X_pca"}
    np.testing.assert_array_equal(mdata["rna"].obsm["X_pca"], before)
    alone = _tiny((30,))
    done = correct_batches(alone, method="combat")
    assert done["modalities"] == {} and set(done["skipped"]) == {"rna", "msi"}


def test_a_section_with_too_few_spots_is_named():
    with pytest.raises(ValueError, match=r"s1 \(2\)"):
        correct_batches(_tiny((20, 2, 20)), method="combat")
    with pytest.raises(ValueError, match="method must be one of"):
        correct_batches(_tiny(), method="scanorama")


def test_harmony_without_harmonypy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "harmonypy", None)  # an import of it fails
    with pytest.raises(MissingDependencyError, match=r"spatialfuse\[harmony\]"):
        correct_batches(_tiny(), method="harmony")


def test_a_harmony_run_without_harmonypy_stops_before_any_sample_runs(monkeypatch, tmp_path):
    from spatialfuse.workflow import run_samples

    monkeypatch.setitem(sys.modules, "harmonypy", None)
    config = _config(tmp_path, {"batch_correction": "harmony"})
    with pytest.raises(MissingDependencyError, match=r"pip install 'spatialfuse\[harmony\]'"):
        run_samples(config, show_progress=False)
    assert not (tmp_path / "results").exists()


def _config(tmp_path, combined: dict, clustering: dict | None = None):
    data = {
        "output": "results",
        "modalities": {"visium": {"kind": "visium", "path": "v"}},
        "samples": [{"name": "a"}, {"name": "b"}],
        "combined": combined,
    }
    if clustering is not None:
        data["clustering"] = clustering
    return parse_samples_config(data, base=tmp_path, source="samples.yaml")


def test_the_config_key_defaults_to_combat_and_refuses_what_it_cannot_do(tmp_path):
    assert _config(tmp_path, {}).combined.batch_correction == "combat"
    assert _config(tmp_path, {"batch_correction": "none"}).combined.batch_correction == "none"
    with pytest.raises(ConfigError, match=r"combined\.batch_correction"):
        _config(tmp_path, {"batch_correction": "scanorama"})
    with pytest.raises(ConfigError, match=r"combined\.batch_correction: combat .*mofa"):
        _config(tmp_path, {}, clustering={"method": "mofa"})
    assert _config(tmp_path, {"batch_correction": "none"}, {"method": "mofa"})


def test_the_config_offers_exactly_the_library_methods():
    annotation = Combined.model_fields["batch_correction"].annotation
    assert set(annotation.__args__) == set(METHODS)
