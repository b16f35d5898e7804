"""One quality check of a registration result, as a row people read.

Every check ``register`` and ``assess`` run (``reg/_verdict.py``, ``reg/_checks.py``) becomes a
:class:`QualityCheck`: what it measures in words, the value, the threshold, pass or fail, the
failure in one sentence, and what to do next. The remedy is a kind (``REMEDIES``) so that each
interface says it in its own terms: the Python text here, the pipeline's config keys in the
report (``workflow/_report_content.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: What to do about a failure, by kind, for Python users.
REMEDIES = {
    "landmarks": (
        "check that both images show the same section; if they do, click a few corresponding "
        "points and register from them: sf.reg.register(moving, fixed, landmarks=...)"
    ),
    "pixel_size": (
        "give the right pixel size to the reader (pixel_size_um=...) or let registration "
        "estimate it: sf.reg.register(..., scale='estimate')"
    ),
    "whole_section": "register against an image of the whole section, not a crop",
    "nonrigid": ("use a coarser grid (bspline_grid_um=...) or stay affine (model='affine')"),
    "landmark_file": (
        "check the landmarks file: points in the same order on both sides, in the frames the "
        "readers define (µm)"
    ),
}


@dataclass(frozen=True)
class QualityCheck:
    """One check of a registration result.

    Attributes
    ----------
    name
        The check, in words (``"tissue overlap"``).
    measures
        What the value is (``"Dice of the two tissue masks"``).
    value
        The measured value (None where there is none, as for the optimiser).
    threshold
        The pass condition, in words (``"≥ 0.75"``).
    passed
        Whether the result passes it.
    failure
        The failure in one sentence (empty when passed).
    remedy
        A key of :data:`REMEDIES` (empty when there is nothing to do).
    """

    name: str
    measures: str
    value: float | None
    threshold: str
    passed: bool
    failure: str = ""
    remedy: str = ""

    @classmethod
    def judged(
        cls,
        name: str,
        measures: str,
        value: float | None,
        threshold: str,
        failure: str | None,
        remedy: str = "landmarks",
    ) -> QualityCheck:
        """A check from its failure sentence (None: passed)."""
        return cls(name, measures, value, threshold, failure is None, failure or "", remedy)

    def what_to_do(self) -> str:
        """The Python remedy in words (empty when passed or nothing applies)."""
        return "" if self.passed else REMEDIES.get(self.remedy, "")

    def as_dict(self) -> dict:
        """JSON-compatible row (``details["checks"]``), with the Python remedy spelled out."""
        return {**asdict(self), "what_to_do": self.what_to_do()}
