"""Mutual information of the registration checks against numpy's own histograms."""

from __future__ import annotations

import numpy as np
import pytest

from spatialfuse.reg._similarity import _bin_indices, normalized_mutual_information


def _nmi_by_histogram2d(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    joint, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins)
    joint /= joint.sum()

    def entropy(p):
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    h = entropy(joint)
    return 1.0 if h == 0 else (entropy(joint.sum(axis=1)) + entropy(joint.sum(axis=0))) / h


def _cases():
    rng = np.random.default_rng(0)
    a = rng.normal(size=3000)
    yield "float64", a, 0.5 * a + rng.normal(size=3000)
    yield "float32", a.astype(np.float32), (a + rng.normal(size=3000)).astype(np.float32)
    yield "on the bin edges", np.linspace(0.0, 1.0, 3201), np.linspace(1.0, 0.0, 3201) ** 2
    yield "rounded (ties)", np.round(a, 1), np.round(a**2, 1)
    yield "one constant", a, np.full(3000, 3.0)
    yield "two values", np.array([0.0, 1.0]), np.array([5.0, 5.0])


@pytest.mark.parametrize(("name", "a", "b"), list(_cases()), ids=[c[0] for c in _cases()])
def test_nmi_equals_the_histogram2d_definition(name, a, b):
    assert normalized_mutual_information(a, b) == _nmi_by_histogram2d(a, b)
    for values in (a, b):
        expected, _ = np.histogram(values, bins=32)
        np.testing.assert_array_equal(np.bincount(_bin_indices(values, 32), minlength=32), expected)


def test_nmi_bounds():
    rng = np.random.default_rng(1)
    a = rng.normal(size=5000)
    assert normalized_mutual_information(a, a) == pytest.approx(2.0)
    assert normalized_mutual_information(a, rng.normal(size=5000)) < 1.05
