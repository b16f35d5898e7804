"""``sf.tl.joint_cluster``'s options before the graph: ``detrend`` and ``feature_smoothing``.

Known answers on a hexagonal Visium-like grid (pitch 100 µm): :func:`robust_trend` recovers the
slope of a linear gradient under a step between two halves of the section, where a least-squares
fit (:func:`spatial_trend`) takes the step for a slope; :func:`neighbour_average` with share 0.5
leaves independent noise about 0.29 of its variance; and on a small version of the benchmark's
``noisy_msi`` case (the MSI alone tells the two halves apart, and carries a slanted gradient)
``detrend=True, feature_smoothing=0.5`` give the gradient (near) no weight and recover the regions,
where the defaults (both off) follow the gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from test_cluster_weights import _grid, _mdata  # tests/tl/test_cluster_weights.py

import spatialfuse as sf
from spatialfuse.tl._cluster import (
    _adjacent_pairs,
    neighbour_average,
    robust_trend,
    spatial_trend,
)


def _slope(trend: np.ndarray, positions: np.ndarray) -> float:
    """Least-squares slope of a trend column along x, per 100 µm."""
    x = positions[:, 0] / 100.0
    return float(np.polyfit(x, trend, 1)[0])


def test_robust_trend_keeps_a_step_out_of_the_slope():
    positions = _grid(40, 30)
    rng = np.random.default_rng(0)
    n = len(positions)
    half = (positions[:, 0] > positions[:, 0].mean()).astype(float)
    slope = 0.05  # per pitch: 2 over the 40 columns
    gradient = slope * positions[:, 0] / 100.0
    columns = np.column_stack(
        [
            6.0 * half + gradient + rng.normal(size=n),  # a step and a gradient
            6.0 * half + rng.normal(size=n),  # a step alone
            rng.normal(size=n),  # noise
        ]
    )
    robust = robust_trend(columns, positions)
    fitted = spatial_trend(columns, positions, _adjacent_pairs(positions, 6), degree=1)
    # measured 0.076 / 0.020 / -0.014: the neighbourhoods that straddle the step (a band 7
    # pitches wide, 17 % of the spots) still move the median by 0.02-0.03 per pitch, whatever the
    # step's size; least squares on adjacent differences takes the step for 6 / 40 per pitch more
    assert _slope(robust[:, 0], positions) == pytest.approx(slope, abs=0.035)
    assert abs(_slope(robust[:, 1], positions)) < 0.04
    assert abs(_slope(robust[:, 2], positions)) < 0.03
    assert _slope(fitted[:, 0], positions) > slope + 0.12
    assert _slope(fitted[:, 1], positions) > 0.12
    assert np.allclose(robust.mean(axis=0), 0.0)


def test_binned_trend_needs_the_slopes_alike_across_the_section():
    positions = _grid(40, 30)
    rng = np.random.default_rng(0)
    n = len(positions)
    half = (positions[:, 0] > positions[:, 0].mean()).astype(float)
    slope = 0.05
    gradient = slope * positions[:, 0] / 100.0
    columns = np.column_stack(
        [
            6.0 * half + gradient + rng.normal(size=n),  # a step and a gradient
            6.0 * half + rng.normal(size=n),  # a step alone
            rng.normal(size=n),  # noise
            gradient + rng.normal(size=n),  # a gradient alone
        ]
    )
    plain = robust_trend(columns, positions)
    binned = robust_trend(columns, positions, bins=5)
    # measured 0.073 / 0 / 0 / 0.055 (the plain median: 0.076 / 0.020 / -0.014 / 0.054): the
    # step's neighbourhoods lie in the middle bin, the other four see no slope or the gradient
    assert _slope(binned[:, 0], positions) == pytest.approx(slope, abs=0.035)
    assert np.array_equal(binned[:, 1], np.zeros(n))  # the step alone: no trend at all
    assert np.array_equal(binned[:, 2], np.zeros(n))  # noise: the bins disagree in sign
    assert _slope(binned[:, 3], positions) == pytest.approx(slope, abs=0.015)
    assert _slope(plain[:, 1], positions) > 0.01
    with pytest.raises(ValueError, match="bins must be an integer >= 2"):
        robust_trend(columns, positions, bins=1)


def test_binned_detrending_keeps_a_weak_straight_border():
    """The two halves and a disc of ``tests/tl/test_domains.py`` (mean shifts below the noise):
    ``detrend=True`` takes the halves' border for a trend, ``detrend="binned"`` does not."""
    from test_domains import _domains  # tests/tl/test_domains.py

    positions, truth, x = _domains(seed=1)
    mdata = _mdata(x[:, :4], x[:, 4:], positions=positions)
    ari = {}
    for detrend in (True, "binned"):
        sf.tl.joint_cluster(mdata, n_clusters=3, detrend=detrend, key_added="j")
        params = mdata.uns["j"]["params"]
        assert params["detrend"] == detrend
        out = sf.tl.spatial_domains(mdata, use_rep="X_j", clusters_key="j", copy=True)
        ari[detrend] = adjusted_rand_score(truth, np.asarray(out.obs["domains"]).astype(str))
        if detrend == "binned":
            assert max(max(v) for v in params["trend_share"].values()) < 0.01
    # measured 0.36 and 0.85 (0.85 without detrending)
    assert ari["binned"] > 0.8 > 0.5 > ari[True], ari
    with pytest.raises(ValueError, match="detrend must be True, False or 'binned'"):
        sf.tl.joint_cluster(mdata, detrend="yes")


def test_neighbour_average_known_answers():
    positions = _grid(40, 30)
    noise = np.random.default_rng(1).normal(size=(len(positions), 3))
    averaged = neighbour_average(noise, positions, share=0.5)
    # 0.25 + 0.25 / 6 for a spot with 6 neighbours (more at the border of the grid)
    assert np.var(averaged, axis=0) == pytest.approx([0.29] * 3, abs=0.04)
    assert np.array_equal(neighbour_average(noise, positions, share=0.0), noise)
    constant = np.ones((len(positions), 2))
    assert np.allclose(neighbour_average(constant, positions, share=0.5), 1.0)


def _noisy_msi_like(seed: int = 0):
    """Halves A / B of a 40 × 30 grid and a disc C. The RNA sees C only (A and B merged); the
    MSI sees A, B and C and carries a strong gradient, slanted to the axis of the halves."""
    positions = _grid(40, 30)
    rng = np.random.default_rng(seed)
    n = len(positions)
    truth = (positions[:, 0] > positions[:, 0].mean()).astype(int)
    centre = np.array([1000.0, 1300.0])
    truth[np.linalg.norm(positions - centre, axis=1) < 450.0] = 2
    rna = rng.normal(size=(n, 8))
    rna[:, 0] += 3.0 * (truth == 2)
    msi = rng.normal(size=(n, 8))
    msi[:, 0] += 3.0 * (truth == 1) - 2.0 * (truth == 2)
    msi[:, 1] += 3.0 * (truth == 2)
    p = (positions - positions.mean(axis=0)) / positions.std(axis=0)
    slant = np.cos(0.6) * p[:, 0] + np.sin(0.6) * p[:, 1]  # 34 degrees off the axis of the halves
    msi[:, :3] += np.outer(slant, [3.0, 2.0, 3.0])  # the matrix-effect gradient on three PCs
    return positions, truth, rna - rna.mean(axis=0), msi - msi.mean(axis=0)


def test_detrending_takes_a_gradient_out_and_keeps_the_halves():
    positions, truth, rna, msi = _noisy_msi_like()
    mdata = _mdata(rna, msi, positions=positions)
    sf.tl.joint_cluster(mdata, detrend=True, feature_smoothing=0.5, key_added="j")
    sf.tl.joint_cluster(mdata, key_added="old")  # the defaults: neither
    params = mdata.uns["j"]["params"]
    old = mdata.uns["old"]["params"]
    assert params["detrend"] is True and params["feature_smoothing"] == 0.5
    assert old["detrend"] is False and old["feature_smoothing"] == 0.0
    # the gradient-only PC 2 of the MSI: most of its variance is the trend, taken out
    assert params["trend_share"]["msi"][2] > 0.7
    assert max(params["trend_share"]["rna"]) < 0.05
    assert params["signal_share"]["msi"][2] < 0.1 < old["signal_share"]["msi"][2]
    # the MSI's weight falls from about 0.8 (the gradient counted as signal) to about 0.35
    assert params["weights"][1] < 0.5 * old["weights"][1]
    joint = adjusted_rand_score(truth, np.asarray(mdata.obs["j"]).astype(str))
    before = adjusted_rand_score(truth, np.asarray(mdata.obs["old"]).astype(str))
    # measured 0.96 and 0.41 (seed 1: 0.93 and 0.38)
    assert joint >= 0.9
    assert before < 0.6


def test_options_off_by_default_and_checked():
    positions, _, rna, msi = _noisy_msi_like(seed=1)
    mdata = _mdata(rna, msi, positions=positions)
    sf.tl.joint_cluster(mdata, key_added="plain")
    params = mdata.uns["plain"]["params"]
    assert params["detrend"] is False and params["feature_smoothing"] == 0.0
    assert "trend_share" not in params
    # the options apply without spatial smoothing of the graph too
    sf.tl.joint_cluster(
        mdata, spatial_smoothing=0.0, detrend=True, feature_smoothing=0.5, key_added="flat"
    )
    flat = mdata.uns["flat"]["params"]
    assert flat["detrend"] is True and flat["feature_smoothing"] == 0.5
    bare = _mdata(rna, msi)
    with pytest.raises(ValueError, match="feature_smoothing must lie in"):
        sf.tl.joint_cluster(mdata, feature_smoothing=1.5)
    with pytest.raises(ValueError, match="needs spot positions"):
        sf.tl.joint_cluster(bare, detrend=True)
    with pytest.raises(ValueError, match="needs spot positions"):
        sf.tl.joint_cluster(bare, feature_smoothing=0.5)
    # method="wnn" and "mofa" do not use them
    sf.tl.joint_cluster(mdata, method="wnn", detrend=True, key_added="w")
    assert "detrend" not in mdata.uns["w"]["params"]
