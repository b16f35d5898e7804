"""FeatureOptions: one object for the feature options of read_imzml and convert_imzml."""

from __future__ import annotations

import numpy as np
import pytest
from imzml_factory import grid_coords, write_simple
from scipy import sparse

from spatialfuse.io import FeatureOptions, read_imzml


def _dense(x):
    return x.toarray() if sparse.issparse(x) else np.asarray(x)


@pytest.fixture
def processed(tmp_path):
    return write_simple(
        tmp_path, "proc", coords=grid_coords(5, 4), mode="processed", n_peaks=(20, 60), seed=5
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"ppm": 20.0, "min_frequency": 0.2, "max_features": 15},
        {"mz": [150.5, 300.0, 555.5], "tol": 3.0},
    ],
    ids=["defaults", "merged-peaks", "mz-windows"],
)
def test_features_object_reads_what_the_keywords_read(processed, options):
    by_keywords = read_imzml(processed.imzml, **options)
    by_object = read_imzml(processed.imzml, features=FeatureOptions(**options))
    np.testing.assert_array_equal(_dense(by_object.X), _dense(by_keywords.X))
    assert list(by_object.var_names) == list(by_keywords.var_names)
    assert by_object.uns["spatialfuse"]["windows"] == by_keywords.uns["spatialfuse"]["windows"]


def test_features_and_feature_keywords_together_are_refused(processed):
    with pytest.raises(ValueError, match="not both"):
        read_imzml(processed.imzml, features=FeatureOptions(ppm=3.0), max_features=5)
    with pytest.raises(ValueError, match="ppm= or tol="):
        FeatureOptions(ppm=3.0, tol=0.1)


def test_convert_imzml_takes_the_same_object(processed, tmp_path):
    pytest.importorskip("zarr", minversion="3")
    from spatialfuse.io import convert_imzml, read_msi_zarr

    options = FeatureOptions(mz=[150.5, 300.0, 555.5], tol=3.0)
    store = read_msi_zarr(convert_imzml(processed.imzml, tmp_path / "o.zarr", features=options))
    table = read_imzml(processed.imzml, features=options)
    np.testing.assert_array_equal(_dense(store.X.compute()), _dense(table.X))
    assert list(store.var_names) == list(table.var_names)
