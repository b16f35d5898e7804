"""``sf.pl``: plots."""

from spatialfuse.pl._registration import registration_qc

__all__ = ["registration_qc"]
