"""imzML reading: :class:`ImzMLReader` for spectra and ion images; :func:`read_imzml` for tables.

The names load on first access, so that ``from spatialfuse.io.imzml import ImzMLReader`` in a
fresh process imports the reader alone, not the m/z axis, the table reader or ``describe``
(issue 17: the import is part of a cold open).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spatialfuse._lazy import lazy_attributes

if TYPE_CHECKING:
    from spatialfuse.io.imzml._axis import MzAxis, build_mz_axis
    from spatialfuse.io.imzml._describe import describe_imzml
    from spatialfuse.io.imzml._features import FeatureOptions
    from spatialfuse.io.imzml._kernels import bin_peaks
    from spatialfuse.io.imzml._read import read_imzml
    from spatialfuse.io.imzml._reader import ImzMLReader, resolve_pair

#: Public name → the module that defines it.
_SOURCES = {
    "MzAxis": "spatialfuse.io.imzml._axis",
    "build_mz_axis": "spatialfuse.io.imzml._axis",
    "describe_imzml": "spatialfuse.io.imzml._describe",
    "FeatureOptions": "spatialfuse.io.imzml._features",
    "bin_peaks": "spatialfuse.io.imzml._kernels",
    "read_imzml": "spatialfuse.io.imzml._read",
    "ImzMLReader": "spatialfuse.io.imzml._reader",
    "resolve_pair": "spatialfuse.io.imzml._reader",
}

__all__ = [
    "FeatureOptions",
    "ImzMLReader",
    "MzAxis",
    "bin_peaks",
    "build_mz_axis",
    "describe_imzml",
    "read_imzml",
    "resolve_pair",
]

__getattr__, __dir__ = lazy_attributes(__name__, _SOURCES)
