"""Docstring texts shared by many functions (as scanpy's ``_docs``), put in by :func:`fill_doc`.

A docstring names a shared text on a line of its own, ``{name}``; :func:`fill_doc` replaces that
line with the text, every line of it indented as the placeholder is, so the rendered docstring
(``help()``, Sphinx, numpydoc) is the same as if it were written out.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def fill_doc(**texts: str) -> Callable[[F], F]:
    """Replace each line ``{name}`` of the decorated object's docstring with ``texts[name]``.

    Raises
    ------
    ValueError
        A text is given that the docstring does not name (a typo would drop it silently).
    """

    def decorate(obj: F) -> F:
        if obj.__doc__ is None or sys.flags.optimize >= 2:  # python -OO strips docstrings
            return obj
        lines, used = [], set()
        for line in obj.__doc__.split("\n"):
            name = line.strip()[1:-1] if line.strip().startswith("{") else None
            if name in texts and line.strip() == "{" + name + "}":
                indent = line[: len(line) - len(line.lstrip())]
                lines += [indent + part if part else "" for part in texts[name].split("\n")]
                used.add(name)
            else:
                lines.append(line)
        unused = sorted(set(texts) - used)
        if unused:
            raise ValueError(f"{obj.__qualname__}'s docstring has no line {{{unused[0]}}}")
        obj.__doc__ = "\n".join(lines)
        return obj

    return decorate


def copy_and_returns(data: str = "adata", returns: str = "anndata.AnnData") -> str:
    """``copy`` and the head of the Returns section of a function that writes into ``data``."""
    return f"""copy
    Return a modified copy instead of writing into ``{data}``.

Returns
-------
{returns} or None
    The copy when ``copy`` is true, else None. Slots written:"""


def object_and_path(data: str) -> str:
    """The first two parameters of a writer: ``data`` and the output ``path``."""
    return f"""{data}
    The object to write.
path
    Output file (its folder is created; an existing file is replaced)."""


#: The options of the PCA that ends ``preprocess_rna`` and ``preprocess_msi``.
PCA_OPTIONS = """scale
    Z-score the features (clipped at ``max_value``) before the PCA.
max_value
    Clip of the z-scores; None for no clip.
random_state
    Seed of the ARPACK start vector."""

#: The m/z column and output of the functions that flag or name m/z features.
MZ_KEY = """mz_key
    The ``var`` column holding each feature's m/z."""


def flagged_copy(what: str) -> str:
    """``copy`` and the head of the Returns section of a function that flags m/z features."""
    return f"""copy
    Return {what} copy instead of changing ``adata``.

Returns
-------
anndata.AnnData or None"""


#: The feature options of ``read_imzml``, ``convert_imzml`` and ``FeatureOptions``.
FEATURE_OPTIONS = """mz
    m/z values to extract; each feature sums the intensities within ``± ppm`` (or ``± tol``)
    of its value. An :class:`~spatialfuse.io.MzAxis` gives its own windows. Without ``mz``:
    continuous files give one feature per point of their shared m/z axis; processed files get a
    common axis built by merging peaks within ``ppm`` (:func:`~spatialfuse.io.imzml.build_mz_axis`).
ppm, tol
    Window half-width in parts per million or m/z units (at most one; default 10 ppm for
    ``mz=`` windows and 5 ppm for peak merging).
min_frequency, max_features
    For processed files without ``mz``, passed to the common-axis builder
    (:func:`~spatialfuse.io.imzml.build_mz_axis`): a feature needs a peak in at least
    ``min_frequency`` of the spectra and three times the fraction that the local noise
    density alone would give (so noise does not grow the axis); at most ``max_features``
    (default 10,000, the most intense; None: no cap) are kept."""


#: The last two parameters of a plot drawn on one axes.
AX_SAVE = """ax
    Draw on this axes (else a new figure).
save
    Also write the figure here (format from the extension; atomic)."""
