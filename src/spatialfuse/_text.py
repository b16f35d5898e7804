r"""Paths and names as text that can always be written: UTF-8 files, HDF5 strings, terminals.

On POSIX a file name is bytes. Python decodes the bytes that are not UTF-8 into lone surrogates
(``surrogateescape``), which open files fine but cannot be encoded again: writing such a name into
an HTML report, a JSON file, an HDF5 string or a terminal raised ``UnicodeEncodeError``. Names that
are *recorded* (provenance, summaries, messages) go through :func:`printable`, which shows each
undecodable byte as ``\xNN``; the paths that are *opened* stay as they are.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def printable(text: str | os.PathLike) -> str:
    r"""``text`` (a string or path) with every undecodable byte written as ``\xNN``.

    Parameters
    ----------
    text
        A string or path, possibly holding lone surrogates from ``surrogateescape`` decoding.

    Returns
    -------
    str
        The same text where it is valid Unicode; otherwise the bytes that are not UTF-8 written
        as ``\xNN`` (so ``b"a\xff.png"`` reads ``a\xff.png``). Always encodable as UTF-8.
    """
    text = os.fspath(text)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _only_escapes(text) else None
        if raw is not None:
            return raw.decode("utf-8", "backslashreplace")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _only_escapes(text: str) -> bool:
    """Whether every lone surrogate in ``text`` is one ``surrogateescape`` made (U+DC80-U+DCFF)."""
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


@contextlib.contextmanager
def literal_text() -> Iterator[None]:
    """Within the block, matplotlib shows text literally: ``$`` never starts mathtext.

    Gene, ion and modality names come from input files and configs; a name such as ``$x^{$``
    made matplotlib's mathtext parser raise while drawing. Text objects keep the setting they
    were created with, so figures made inside the block can be saved after it.
    """
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield


def literal_text_figures(function: Callable[P, R]) -> Callable[P, R]:
    """Make every text a plotting function draws literal (:func:`literal_text`)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with literal_text():
            return function(*args, **kwargs)

    return wrapper
