"""The same inputs and seed give identical transforms and tables, in one process and across runs.

In-process: read → register → map_to_spots → preprocess → joint_table → joint_cluster →
cross_modal_correlation, twice from the files, comparing the saved transform JSON byte for byte and
every array exactly (NaN where NaN). The ``.h5ad``/``.h5mu`` files are compared by content: HDF5
stores no timestamps in anndata's files (h5py leaves object times off), and the test also checks
that two writes of the same table are byte-identical files.

Across runs: ``spatialfuse run`` twice on one config into two output folders (``--no-cache``, two
processes), comparing ``transforms/*.json`` and ``correlation.csv`` byte for byte and the obs / X of
``joint.h5mu``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import spatialfuse as sf

#: Heavy (seconds to a minute each): left out of the quick subset, `pytest -m "not slow"`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    return sf.datasets.synthetic_trio(
        tmp_path_factory.mktemp("determinism") / "data",
        seed=4,
        tissue_size_um=(1600.0, 1300.0),
        he_pixel_size_um=4.0,
        n_ions=40,
        n_genes=60,
        serial_section=False,
    )


def _pipeline(trio, folder):
    """Every step from the files; what each step produced."""
    folder.mkdir()
    msi = sf.io.read_imzml(trio.msi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        visium = sf.io.read_visium(trio.visium)
        result = sf.reg.register(msi, visium, seed=3)
        transform_file = result.transform.save(folder / "msi_to_visium.json")
        spots = sf.tl.map_to_spots(msi, visium, transform=result.transform)
        rna = sf.pp.preprocess_rna(visium, n_top_genes=None, n_comps=8, copy=True)
        msi_spots = sf.pp.preprocess_msi(spots, n_comps=8, copy=True)
        mdata = sf.tl.joint_table(rna, msi_spots)
        sf.tl.joint_cluster(mdata, n_clusters=4, seed=1)
        table = sf.tl.cross_modal_correlation(mdata, n_top=15, seed=2)
    h5ad = sf.io.write_h5ad(msi_spots, folder / "msi_spots.h5ad")
    return {
        "transform": transform_file.read_bytes(),
        "metrics": {k: v for k, v in result.metrics.items() if k != "seconds"},
        "spots": spots,
        "msi_spots": msi_spots,
        "mdata": mdata,
        "table": table,
        "h5ad": h5ad,
    }


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix)


def _same_array(a, b) -> bool:
    a, b = _dense(a), _dense(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _same_anndata(a, b) -> None:
    assert _same_array(a.X, b.X)
    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True)
    pd.testing.assert_frame_equal(a.var, b.var, check_exact=True)
    assert sorted(a.obsm) == sorted(b.obsm)
    for key in a.obsm:
        assert _same_array(a.obsm[key], b.obsm[key]), key
    assert sorted(a.layers) == sorted(b.layers)
    for key in a.layers:
        assert _same_array(a.layers[key], b.layers[key]), key


@pytest.fixture(scope="module")
def two_runs(trio, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return _pipeline(trio, root / "a"), _pipeline(trio, root / "b")


def test_transform_json_is_byte_identical(two_runs):
    first, second = two_runs
    assert first["transform"] == second["transform"]
    assert first["metrics"] == second["metrics"]


def test_tables_and_clusters_are_identical(two_runs):
    first, second = two_runs
    _same_anndata(first["spots"], second["spots"])
    _same_anndata(first["msi_spots"], second["msi_spots"])
    pd.testing.assert_frame_equal(first["mdata"].obs, second["mdata"].obs, check_exact=True)
    for name in first["mdata"].mod:
        _same_anndata(first["mdata"].mod[name], second["mdata"].mod[name])
    for key in first["mdata"].obsm:
        assert _same_array(first["mdata"].obsm[key], second["mdata"].obsm[key]), key
    pd.testing.assert_frame_equal(first["table"], second["table"], check_exact=True)
    assert first["table"].to_csv().encode() == second["table"].to_csv().encode()
    # the clustering found structure (a constant labelling would be trivially reproducible)
    assert first["mdata"].obs["joint"].nunique() == 4


def test_h5ad_contents_and_bytes(two_runs):
    import anndata

    first, second = two_runs
    _same_anndata(anndata.read_h5ad(first["h5ad"]), anndata.read_h5ad(second["h5ad"]))
    # anndata + h5py write no timestamps: the two files are byte-identical too
    assert first["h5ad"].read_bytes() == second["h5ad"].read_bytes()


@pytest.mark.slow
def test_spatialfuse_run_twice_gives_identical_outputs(trio, tmp_path):
    import mudata

    from spatialfuse.workflow._demo import DEMO_CONFIG

    # The demo's config, beside the trio's "data" folder that its relative paths name.
    config = trio.folder.parent / "config.yaml"
    config.write_text(DEMO_CONFIG.format(seed=5), encoding="utf-8")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "SPATIALFUSE_CACHE_DIR": str(tmp_path / "c")}
    outputs = []
    for name in ("one", "two"):
        out = tmp_path / name
        command = [sys.executable, "-m", "spatialfuse", "run", str(config), "--output", str(out)]
        proc = subprocess.run(
            [*command, "--no-cache", "--quiet"],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(out)
    one, two = outputs
    transforms = sorted(p.name for p in (one / "transforms").glob("*.json"))
    assert transforms == ["he_msi_to_visium.json", "msi_to_he_msi.json", "msi_to_visium.json"]
    assert transforms == sorted(p.name for p in (two / "transforms").glob("*.json"))
    for name in transforms:
        assert (one / "transforms" / name).read_bytes() == (two / "transforms" / name).read_bytes()
    assert (one / "correlation.csv").read_bytes() == (two / "correlation.csv").read_bytes()
    assert len(pd.read_csv(one / "correlation.csv")) > 0
    a, b = mudata.read_h5mu(one / "joint.h5mu"), mudata.read_h5mu(two / "joint.h5mu")
    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True)
    for name in a.mod:
        _same_anndata(a.mod[name], b.mod[name])
