"""``sf.datasets``: synthetic data with known ground truth.

:func:`synthetic_trio` writes MSI (imzML), H&E (OME-TIFF) and Visium (Space Ranger folder) files
of one synthetic tissue and returns a :class:`SyntheticTrio` with the exact transforms between
their frames, region labels, the signal design and landmarks.
"""

from spatialfuse.datasets._synthetic import SyntheticTrio, synthetic_trio

__all__ = ["SyntheticTrio", "synthetic_trio"]
