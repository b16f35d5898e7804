"""Turning results (numpy values, paths, nested mappings) into plain JSON values."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from spatialfuse._text import printable


def jsonable(value: Any) -> Any:
    """``value`` as JSON-compatible Python: mappings, lists, str, int, float, bool or None.

    numpy arrays and scalars become lists and numbers, non-finite floats become None (JSON has no
    NaN), and anything else (paths, enums) its ``str``. Strings holding bytes that are not UTF-8
    (file names) show them as hex escapes (:func:`spatialfuse._text.printable`).
    """
    if isinstance(value, Mapping):
        return {printable(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return jsonable(tolist())
    return printable(str(value))
