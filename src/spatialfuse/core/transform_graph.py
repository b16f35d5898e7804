"""Coordinate frames joined by transforms, and the transform between any two of them.

Like spatialdata's ``get_transformation_between_coordinate_systems``, but the edges keep our
nonrigid kinds: a path is composed exactly (:func:`compose`), and an edge walked backwards uses
the transform's own inverse (numeric for nonrigid kinds, exact for affine ones). Of several paths
the one with the fewest registrations is taken (fewest steps, fewest errors added).
"""

from __future__ import annotations

from collections import deque

from spatialfuse.core.transforms import AffineTransform, Transform, compose
from spatialfuse.errors import NoTransformPathError


class TransformGraph:
    """Frames (names) joined by ``moving → reference`` transforms.

    Examples
    --------
    >>> graph = TransformGraph()
    >>> graph.add("msi", "he", msi_to_he)  # doctest: +SKIP
    >>> graph.add("visium", "he", visium_to_he)  # doctest: +SKIP
    >>> graph.path("msi", "visium")  # msi → he, then he → visium (inverted)  # doctest: +SKIP
    """

    def __init__(self, edges: dict[tuple[str, str], Transform] | None = None):
        self._edges: dict[tuple[str, str], Transform] = {}
        for (moving, reference), transform in (edges or {}).items():
            self.add(moving, reference, transform)

    def add(self, moving: str, reference: str, transform: Transform) -> None:
        """Join frame ``moving`` to ``reference`` by ``transform`` (moving µm → reference µm)."""
        if not isinstance(transform, Transform):
            raise TypeError(f"not a Transform: {transform!r}")
        self._edges[(moving, reference)] = transform

    @property
    def frames(self) -> list[str]:
        """Every frame named by an edge, in the order first added."""
        return list(dict.fromkeys(name for edge in self._edges for name in edge))

    def path(self, start: str, end: str) -> Transform:
        """The transform from frame ``start`` to frame ``end`` along the fewest edges.

        Raises
        ------
        NoTransformPathError
            No chain of edges connects the two frames (the message names both).
        """
        if start == end:
            return AffineTransform.identity()
        neighbours: dict[str, list[tuple[str, tuple[str, str], bool]]] = {}
        for edge in self._edges:
            a, b = edge
            neighbours.setdefault(a, []).append((b, edge, False))
            neighbours.setdefault(b, []).append((a, edge, True))
        previous: dict[str, tuple[str, tuple[str, str], bool] | None] = {start: None}
        queue = deque([start])
        while queue and end not in previous:
            node = queue.popleft()
            for other, edge, backwards in neighbours.get(node, []):
                if other not in previous:
                    previous[other] = (node, edge, backwards)
                    queue.append(other)
        if end not in previous:
            raise NoTransformPathError(
                f"no chain of transforms leads from {start!r} to {end!r} "
                f"(frames joined: {self.frames})"
            )
        steps = []
        node = end
        while node != start:
            node, edge, backwards = previous[node]
            transform = self._edges[edge]
            steps.append(transform.inverse() if backwards else transform)
        return compose(*steps) if len(steps) > 1 else steps[0]
