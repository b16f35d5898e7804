"""spatialfuse: MSI, histology and spatial transcriptomics in one frame, in micrometres.

Subpackages load on first access so that ``import spatialfuse`` stays fast:

- :mod:`spatialfuse.io` — readers (imzML, Visium, histology)
- :mod:`spatialfuse.pp` — preprocessing
- :mod:`spatialfuse.reg` — registration and transforms
- :mod:`spatialfuse.tl` — integration tools
- :mod:`spatialfuse.pl` — plotting
- :mod:`spatialfuse.datasets` — synthetic and example data
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from spatialfuse._version import __version__

if TYPE_CHECKING:
    from spatialfuse import datasets, errors, io, pl, pp, reg, tl

_SUBMODULES = frozenset({"io", "pp", "reg", "tl", "pl", "datasets", "errors"})

__all__ = ["__version__", "datasets", "errors", "io", "pl", "pp", "reg", "tl"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"spatialfuse.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'spatialfuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
