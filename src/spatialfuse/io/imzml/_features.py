"""Which m/z features an MSI table has: one set of options for ``read_imzml`` and ``convert_imzml``.

A feature is a closed m/z window ``[lo, hi]`` whose intensities are summed per spectrum: the
points of a continuous file's shared axis (one feature each), windows of ``± ppm`` or ``± tol``
around given m/z values, or the windows of a common axis built by merging the peaks of a
processed file (:func:`~spatialfuse.io.imzml.build_mz_axis`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialfuse._docs import FEATURE_OPTIONS, fill_doc
from spatialfuse.core.mz import DEFAULT_PPM, mz_windows
from spatialfuse.io.imzml._axis import DEFAULT_MAX_FEATURES

#: Half-width of the windows peaks are merged in, for processed files without ``mz`` (ppm).
MERGE_PPM = 5.0


@fill_doc(feature_options=FEATURE_OPTIONS)
@dataclass(frozen=True, eq=False)
class FeatureOptions:
    """The m/z features of an MSI table: the options ``read_imzml`` and ``convert_imzml`` share.

    :func:`~spatialfuse.io.read_imzml` and :func:`~spatialfuse.io.convert_imzml` build the same
    features from it. Pass one as ``features=`` to either, or give the same options as keyword
    arguments there (``read_imzml(path, ppm=3)`` is
    ``read_imzml(path, features=FeatureOptions(ppm=3))``).

    Parameters
    ----------
    {feature_options}

    Raises
    ------
    ValueError
        Both ``ppm`` and ``tol`` are given.
    """

    mz: Any = None
    ppm: float | None = None
    tol: float | None = None
    min_frequency: float = 0.01
    max_features: int | None = DEFAULT_MAX_FEATURES

    def __post_init__(self) -> None:
        if self.ppm is not None and self.tol is not None:
            raise ValueError("give either ppm= or tol=, not both")

    @classmethod
    def resolve(cls, features: FeatureOptions | None, **keywords: Any) -> FeatureOptions:
        """``features`` where given (the feature keywords then keep their defaults), else these.

        Raises
        ------
        ValueError
            ``features`` and a feature keyword other than its default are both given, or both
            ``ppm`` and ``tol``.
        """
        if features is None:
            return cls(**keywords)
        if not isinstance(features, FeatureOptions):
            raise TypeError(f"features must be a FeatureOptions, got {type(features).__name__}")
        defaults = cls()
        changed = [
            name
            for name, value in keywords.items()
            if (
                value is not None
                if getattr(defaults, name) is None
                else value != getattr(defaults, name)
            )
        ]
        if changed:
            raise ValueError(
                "give the feature options in features= or as keywords, not both "
                f"({', '.join(changed)} given too)"
            )
        return features

    def choose(self, reader, *, show_progress: bool = False, map_blocks=None):
        """The features of ``reader``'s table: ``(kind, centres, lo, hi, window_rule)``.

        ``kind`` is ``"identity"`` (the shared m/z axis itself, one feature per point),
        ``"shared_windows"`` (windows on a shared axis) or ``"peaks"`` (windows over
        per-spectrum peaks). ``map_blocks`` goes to :func:`build_mz_axis` where a common axis
        is built (None: every block here).
        """
        from spatialfuse.io.imzml._axis import NOISE_FACTOR, MzAxis, build_mz_axis

        mz, ppm, tol = self.mz, self.ppm, self.tol
        shared_axis = reader.shared_mz_axis()
        shared = shared_axis is not None
        if isinstance(mz, MzAxis):
            if ppm is not None or tol is not None:
                raise ValueError("an MzAxis carries its own windows: give no ppm= or tol= with it")
            centres, lo, hi = (np.asarray(a, dtype=np.float64) for a in (mz.mz, mz.lo, mz.hi))
            rule: dict[str, Any] = {"kind": "axis"}
            kind = "shared_windows" if shared else "peaks"
        elif mz is not None:
            centres, lo, hi = mz_windows(mz, tol=tol, ppm=ppm)
            rule = (
                {"kind": "tol", "tol": float(tol)}
                if tol is not None
                else {"kind": "ppm", "ppm": float(ppm if ppm is not None else DEFAULT_PPM)}
            )
            kind = "shared_windows" if shared else "peaks"
        elif shared:
            centres = shared_axis
            lo = hi = centres
            rule = {"kind": "shared_axis"}
            kind = "identity"
        else:
            merge_ppm = MERGE_PPM if ppm is None else float(ppm)
            axis = build_mz_axis(
                reader,
                ppm=merge_ppm,
                min_frequency=self.min_frequency,
                max_features=self.max_features,
                show_progress=show_progress,
                map_blocks=map_blocks,
            )
            centres, lo, hi = axis.mz, axis.lo, axis.hi
            rule = {
                "kind": "merged_peaks",
                "ppm": merge_ppm,
                "min_frequency": float(self.min_frequency),
                "noise_factor": NOISE_FACTOR,
                **(
                    {"max_features": int(self.max_features)}
                    if self.max_features is not None
                    else {}
                ),
            }
            kind = "peaks"
        return kind, np.asarray(centres), np.asarray(lo), np.asarray(hi), rule
