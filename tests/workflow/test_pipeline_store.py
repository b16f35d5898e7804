"""The pipeline from a zarr store (issue 17): ``kind: msi_zarr`` gives the imzML's results.

The demo runs once from its imzML; its MSI is then converted with ``convert_imzml`` into a store
of many small chunks and the same config, with the MSI as ``kind: msi_zarr``, runs again in the
same folder (the H&E → Visium registration, which does not read the MSI, is reused). The steps
that stream the store (read, registration, mapping) are watched with a dask callback: none may
compute a piece of the table larger than the ``max_block_bytes`` limit the run is given, let
alone the whole table.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("zarr", minversion="3")
pytest.importorskip("dask")

import spatialfuse as sf
from spatialfuse.workflow import _steps
from spatialfuse.workflow._config import load_config
from spatialfuse.workflow._demo import evaluate_against_truth, run_demo
from spatialfuse.workflow._pipeline import run_pipeline

#: The limit the store run streams under: a tenth of the demo's table (3,710 × 80 float32).
BLOCK_BYTES = 120_000
#: Chunks of the test store: many, so that the limit splits the table.
CHUNKS = (256, 8)


class _Largest:
    """A dask callback recording, per step, the largest array any task returned."""

    def __init__(self):
        from dask.callbacks import Callback

        self.step = None
        self.largest: dict[str, tuple[int, tuple]] = {}
        self.callback = Callback(posttask=self._posttask)

    def _posttask(self, key, result, dsk, state, worker_id):
        if self.step is not None and hasattr(result, "nbytes") and hasattr(result, "shape"):
            size = int(result.nbytes)
            if size > self.largest.get(self.step, (-1, ()))[0]:
                self.largest[self.step] = (size, tuple(result.shape))

    def watch(self, name, function):
        def watched(*args, **kwargs):
            self.step = name
            try:
                with self.callback:
                    return function(*args, **kwargs)
            finally:
                self.step = None

        return watched


def _transforms(out):
    return {
        p.stem: np.asarray(json.loads(p.read_text(encoding="utf-8"))["matrix"], dtype=float)
        for p in sorted((out / "transforms").glob("*.json"))
    }


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    demo_dir = tmp_path_factory.mktemp("store_demo")
    demo = run_demo(demo_dir, show_progress=False)
    out = demo.run.output
    from_imzml = {
        "transforms": _transforms(out),
        "joint": demo.run.mdata.obs["joint"].copy(),
        "correlation": demo.run.correlation.copy(),
        "msi_spots": demo.run.msi_spots.copy(),
        "evaluation": demo.evaluation,
    }

    store = demo_dir / "data" / "msi.zarr"
    sf.io.convert_imzml(demo_dir / "data" / "msi.imzML", store, chunks=CHUNKS)
    data = yaml.safe_load((demo_dir / "config.yaml").read_text(encoding="utf-8"))
    data["modalities"]["msi"] = {"kind": "msi_zarr", "path": "data/msi.zarr"}
    data["limits"] = {"max_block_bytes": BLOCK_BYTES}
    config_file = demo_dir / "config_store.yaml"
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")

    watcher = _Largest()
    patch = pytest.MonkeyPatch()
    for name in ("read_modality", "register_pair", "map_spots"):
        patch.setattr(_steps, name, watcher.watch(name, getattr(_steps, name)))
    try:
        result = run_pipeline(
            load_config(config_file),
            show_progress=False,
            write_report=False,
            evaluate=lambda run: evaluate_against_truth(run, demo.trio),
        )
    finally:
        patch.undo()
    return from_imzml, result, watcher, store


@pytest.mark.slow
def test_the_store_run_reads_the_store_lazily(both_runs):
    _, result, _, store = both_runs
    msi = result.modalities["msi"]
    assert type(msi.X).__module__.startswith("dask")
    assert msi.X.chunks[0][0] == CHUNKS[0] and msi.X.chunks[1][0] == CHUNKS[1]
    assert result.summary["inputs"]["msi"]["kind"] == "msi_zarr"
    assert result.summary["inputs"]["msi"]["n_pixels"] == msi.n_obs
    # The H&E → Visium registration does not read the MSI: reused from the imzML run.
    assert "register_he_msi_to_visium" in result.reused
    assert str(store) in result.summary["config"]["modalities"]["msi"]["path"]


@pytest.mark.slow
def test_the_store_gives_the_imzml_results(both_runs):
    imzml, result, _, _ = both_runs
    transforms = _transforms(result.output)
    assert set(transforms) == set(imzml["transforms"])
    for name, matrix in transforms.items():
        np.testing.assert_allclose(matrix, imzml["transforms"][name], rtol=0, atol=1e-6)
    # the mapped table: the same numbers up to float32 rounding of sums taken in another order
    a, b = imzml["msi_spots"], result.msi_spots
    assert (a.obs_names == b.obs_names).all() and (a.var_names == b.var_names).all()
    np.testing.assert_array_equal(a.obs["has_msi"], b.obs["has_msi"])
    np.testing.assert_allclose(np.asarray(b.X), np.asarray(a.X), rtol=1e-5, atol=0)
    # the same clusters and the same top pairs, in the same order
    from sklearn.metrics import adjusted_rand_score

    joint = result.mdata.obs["joint"]
    assert (joint.index == imzml["joint"].index).all()
    assert adjusted_rand_score(imzml["joint"].astype(str), joint.astype(str)) == 1.0
    top = 20
    pairs = imzml["correlation"].head(top)[["gene", "ion"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        result.correlation.head(top)[["gene", "ion"]].reset_index(drop=True), pairs
    )
    np.testing.assert_allclose(
        result.correlation.head(top)["r"], imzml["correlation"].head(top)["r"], atol=1e-6
    )
    ev_a, ev_b = imzml["evaluation"], result.evaluation
    assert ev_b["clustering"]["adjusted_rand_index"] == ev_a["clustering"]["adjusted_rand_index"]
    assert ev_b["msi_to_visium_tre"]["median_um"] == pytest.approx(
        ev_a["msi_to_visium_tre"]["median_um"], abs=1e-4
    )
    assert (result.output / "spatialdata.zarr").is_dir()


@pytest.mark.slow
def test_streaming_steps_never_hold_more_than_the_limit(both_runs):
    _, result, watcher, _ = both_runs
    table = result.modalities["msi"].X
    full = table.nbytes
    assert full > 5 * BLOCK_BYTES  # the limit splits the table
    # read computes nothing; registration and mapping compute pieces within the limit
    assert "read_modality" not in watcher.largest
    for step in ("register_pair", "map_spots"):
        size, shape = watcher.largest[step]
        assert shape != table.shape, step
        assert CHUNKS[0] * CHUNKS[1] * 4 <= size <= BLOCK_BYTES, (step, size, shape)


def test_streamed_product_equals_the_dense_one_under_any_limit():
    import dask.array as da
    from scipy import sparse

    from spatialfuse.tl._mapping_common import _streamed_product

    rng = np.random.default_rng(0)
    x = rng.random((1000, 70)).astype(np.float32)
    weights = sparse.random(40, 1000, density=0.01, random_state=1, format="csc")
    weights.data[
        (weights.indices >= 0)
        & np.repeat(  # no spot uses rows 300-599 of x
            (np.arange(1000) >= 300) & (np.arange(1000) < 600), np.diff(weights.indptr)
        )
    ] = 0
    weights.eliminate_zeros()
    weights = weights.tocsr()
    expected = weights @ x.astype(np.float64)
    lazy = da.from_array(x, chunks=(100, 16))
    for max_bytes in (1, 5_000, 40_000, 1 << 30):
        np.testing.assert_allclose(_streamed_product(weights, lazy, max_bytes), expected, 1e-12)


def test_msi_zarr_modality_config(tmp_path):
    from spatialfuse.errors import ConfigError
    from spatialfuse.workflow._config import parse_config
    from spatialfuse.workflow._steps_cache import input_fingerprint

    data = {
        "modalities": {
            "msi": {"kind": "msi_zarr", "path": "msi.zarr"},
            "visium": {"kind": "visium", "path": "visium"},
        }
    }
    config = parse_config(data, base=tmp_path)
    assert config.msi_name == "msi" and config.modalities["msi"].path == tmp_path / "msi.zarr"
    data["modalities"]["msi"]["pixel_size_um"] = 10.0
    with pytest.raises(ConfigError, match="fixed at conversion"):
        parse_config(data, base=tmp_path)
    data["modalities"]["msi"] = {"kind": "msi_zarr", "path": "msi.zarr", "mz": [760.5]}
    with pytest.raises(ConfigError, match="mz"):
        parse_config(data, base=tmp_path)
    # the spectra steps stream a store into a peaks table: refused without peak picking
    # (tests/workflow/test_spectra_store.py runs them)
    spectra = {**data, "modalities": {"msi": {"kind": "msi_zarr", "path": "msi.zarr"}}}
    with pytest.raises(ConfigError, match="msi_zarr store 'msi' need peaks"):
        parse_config({**spectra, "spectra": {"recalibration": {"enabled": True}}}, base=tmp_path)
    peaks = parse_config({**spectra, "spectra": {"peaks": {"enabled": True}}}, base=tmp_path)
    assert peaks.spectra_msi_name == "msi"
    data["modalities"]["msi2"] = {"kind": "imzml", "path": "a.imzML"}
    data["modalities"]["msi"] = {"kind": "msi_zarr", "path": "msi.zarr"}
    with pytest.raises(ConfigError, match="several imzml/msi_zarr modalities"):
        parse_config(data, base=tmp_path)

    # the cache fingerprints a store by its metadata files: a new store at the path changes it
    store = tmp_path / "msi.zarr"
    with pytest.raises(sf.errors.MissingFileError):
        input_fingerprint(store, "msi_zarr")
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    _tiny_store(store, x)
    before = input_fingerprint(store, "msi_zarr")
    assert before == input_fingerprint(store, "msi_zarr")
    import shutil

    shutil.rmtree(store)
    _tiny_store(store, x + 1)
    assert input_fingerprint(store, "msi_zarr") != before


def _tiny_store(path, x):
    import zarr

    root = zarr.open_group(path, mode="w", zarr_format=3)
    root.create_array("X", shape=x.shape, dtype=x.dtype, chunks=(3, 2))[:] = x
