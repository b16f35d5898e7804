"""``sf.tl.joint_cluster(weights="detrended")``: a smooth spatial trend gives a modality no weight.

Known answers on the hexagonal grid of ``test_cluster_weights.py`` (24 × 16 spots, 100 µm): a
modality whose only spatial structure is a smooth gradient across the section (a matrix effect)
plus noise has a large signal share under ``weights="auto"`` (adjacent spots share the gradient)
and (near) none under ``weights="detrended"``; a modality whose signal is regions (patches of the
section, not a low-order function of position) keeps its weight.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from test_cluster_weights import _grid, _mdata  # tests/tl/test_cluster_weights.py

import spatialfuse as sf
from spatialfuse.tl import _cluster
from spatialfuse.tl._cluster import signal_share


def _patches(positions: np.ndarray) -> np.ndarray:
    """Two classes in a 4 × 3 checkerboard of patches (regions no polynomial trend follows)."""
    col = np.digitize(positions[:, 0], [600.0, 1200.0, 1800.0])
    row = np.digitize(positions[:, 1], [460.0, 920.0])
    return (col + row) % 2


def _gradient(positions: np.ndarray, angle: float = 0.6) -> np.ndarray:
    """A smooth (linear plus a little curvature) gradient of unit variance across the grid."""
    p = (positions - positions.mean(axis=0)) / positions.std(axis=0)
    g = np.cos(angle) * p[:, 0] + np.sin(angle) * p[:, 1] + 0.2 * p[:, 0] ** 2
    return (g - g.mean()) / g.std()


def test_signal_share_without_the_trend():
    positions = _grid()
    rng = np.random.default_rng(4)
    n = len(positions)
    region = 3.0 * _patches(positions)  # 12 patches of 2 classes
    columns = np.column_stack(
        [
            2.0 * _gradient(positions) + rng.normal(size=n),  # auto: 4 / 5 of the variance
            region + rng.normal(size=n),
            rng.normal(size=n),
        ]
    )
    auto = signal_share(columns, positions)
    detrended = signal_share(columns, positions, trend_degree=2)
    assert auto[0] == pytest.approx(0.8, abs=0.05)
    assert detrended[0] == 0.0  # below the no-signal floor
    # (less than var(region) / (var(region) + 1) = 0.69: many adjacent pairs cross a border)
    assert auto[1] > 0.5
    # patches this large correlate a little with a quadratic trend: most of the share is kept
    assert 0.8 * auto[1] <= detrended[1] <= auto[1]
    assert auto[2] == detrended[2] == 0.0


def test_a_gradient_modality_gets_no_weight_and_the_regions_keep_theirs():
    positions = _grid()
    group = _patches(positions)
    rng = np.random.default_rng(5)
    n = len(positions)
    rna = rng.normal(size=(n, 6))
    rna[:, 0] += 4.0 * group  # regions on one PC, noise on five
    msi = rng.normal(size=(n, 8))
    msi[:, :3] += np.outer(_gradient(positions), [3.0, -2.0, 1.5])  # a trend on three PCs
    mdata = _mdata(rna - rna.mean(axis=0), msi - msi.mean(axis=0), positions=positions)
    # the weightings alone (detrend and feature_smoothing are off by default; said outright)
    plain = {"detrend": False, "feature_smoothing": 0.0}
    sf.tl.joint_cluster(mdata, key_added="auto", **plain)
    sf.tl.joint_cluster(mdata, weights="detrended", key_added="det", **plain)
    auto = mdata.uns["auto"]["params"]
    det = mdata.uns["det"]["params"]
    assert det["weights_rule"] == "signal"
    assert auto["weights"][1] > 0.5  # the old weighting counts the gradient as signal
    assert det["weights"][1] < 0.02  # the trend is taken out: (near) no weight
    assert 0.8 * auto["weights"][0] <= det["weights"][0] <= auto["weights"][0]
    truth = group.astype(str)
    joint = adjusted_rand_score(truth, np.asarray(mdata.obs["det"]).astype(str))
    assert joint >= 0.9


def test_weights_rule_names():
    assert _cluster.WEIGHTS_RULES == ("auto", "detrended")
    positions = _grid()
    x = np.random.default_rng(0).normal(size=(len(positions), 2))
    with pytest.raises(ValueError, match="weights must be 'auto', 'detrended'"):
        sf.tl.joint_cluster(_mdata(x, x, positions=positions), weights="trend")
