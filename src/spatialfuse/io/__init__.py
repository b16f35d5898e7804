"""``sf.io``: readers that turn MSI, histology and Visium files into Python objects in micrometres.

See ``docs/coordinates.md`` for how pixels, spectra and spots map to micrometres.
"""

__all__: list[str] = []
