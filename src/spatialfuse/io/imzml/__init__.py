"""imzML reading: :class:`ImzMLReader` for spectra and ion images; :func:`read_imzml` for tables."""

from spatialfuse.io.imzml._axis import MzAxis, build_mz_axis
from spatialfuse.io.imzml._describe import describe_imzml
from spatialfuse.io.imzml._features import FeatureOptions
from spatialfuse.io.imzml._kernels import bin_peaks
from spatialfuse.io.imzml._read import read_imzml
from spatialfuse.io.imzml._reader import ImzMLReader, resolve_pair

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
