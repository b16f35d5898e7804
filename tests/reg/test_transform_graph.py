"""sf.reg.TransformGraph: the transform between two frames along the fewest registrations."""

from __future__ import annotations

import numpy as np
import pytest

import spatialfuse as sf
from spatialfuse.errors import NoTransformPathError

POINTS = np.random.default_rng(3).uniform(0, 2000, (50, 2))


def _affine(seed):
    rng = np.random.default_rng(seed)
    return sf.reg.AffineTransform.from_params(
        rotation_deg=rng.uniform(0, 360),
        scale=rng.uniform(0.9, 1.1),
        translation=rng.uniform(-500, 500, 2),
    )


def test_paths_compose_forwards_and_backwards():
    msi_to_he, serial_to_he, serial_to_visium = _affine(1), _affine(2), _affine(3)
    graph = sf.reg.TransformGraph()
    graph.add("msi", "he", msi_to_he)
    graph.add("he_serial", "he", serial_to_he)
    graph.add("he_serial", "visium", serial_to_visium)
    # msi → he → he_serial (edge walked backwards) → visium
    expected = serial_to_visium.apply(serial_to_he.inverse().apply(msi_to_he.apply(POINTS)))
    np.testing.assert_allclose(graph.path("msi", "visium").apply(POINTS), expected, atol=1e-6)
    np.testing.assert_allclose(graph.path("visium", "msi").apply(expected), POINTS, atol=1e-6)
    np.testing.assert_allclose(graph.path("he", "he").apply(POINTS), POINTS)
    assert graph.frames == ["msi", "he", "he_serial", "visium"]


def test_the_shortest_path_is_taken_and_nonrigid_edges_kept():
    field = sf.reg.DisplacementField(
        np.full((4, 4, 2), 7.0), origin_um=(-1000, -1000), spacing_um=(2000, 2000)
    )
    direct = _affine(4)
    graph = sf.reg.TransformGraph(
        {("a", "b"): _affine(5), ("b", "c"): _affine(6), ("a", "c"): direct}
    )
    np.testing.assert_allclose(graph.path("a", "c").apply(POINTS), direct.apply(POINTS))
    graph.add("c", "d", field)
    chained = graph.path("a", "d")
    assert not chained.is_linear
    np.testing.assert_allclose(chained.apply(POINTS), field.apply(direct.apply(POINTS)))


def test_unconnected_frames_are_named():
    graph = sf.reg.TransformGraph({("msi", "he"): _affine(1), ("visium", "hd"): _affine(2)})
    with pytest.raises(NoTransformPathError, match="from 'msi' to 'visium'"):
        graph.path("msi", "visium")
    with pytest.raises(TypeError, match="not a Transform"):
        graph.add("x", "y", np.eye(3))
