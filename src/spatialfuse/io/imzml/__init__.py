"""imzML reading: :class:`ImzMLReader` for spectra and ion images, :func:`read_imzml` for AnnData."""

from spatialfuse.io.imzml._reader import ImzMLReader

__all__ = ["ImzMLReader"]
