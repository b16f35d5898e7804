"""Public names of a package that load on first access (PEP 562), as ``lazy_loader.attach`` does."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_attributes(
    package: str, sources: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` whose names come from ``sources``.

    ``sources`` maps each public name to the module that defines it; that module is imported
    the first time the name is read, and the value is kept in the package so that later reads do
    not come here. ``__dir__`` lists the package's globals and its ``__all__``. Use::

        __getattr__, __dir__ = lazy_attributes(__name__, _SOURCES)
    """

    def __getattr__(name: str):
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        module = sys.modules[package]
        return sorted({*vars(module), *module.__all__})

    return __getattr__, __dir__
