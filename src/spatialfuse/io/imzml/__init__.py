"""imzML reading: :class:`ImzMLReader` for spectra and ion images; :func:`read_imzml` for tables.

The names load on first access, so that ``from spatialfuse.io.imzml import ImzMLReader`` in a
fresh process imports the reader alone, not the m/z axis, the table reader or ``describe``
(issue 17: the import is part of a cold open).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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


def __getattr__(name: str):
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module 'spatialfuse.io.imzml' has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
