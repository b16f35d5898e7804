"""The package logger and the progress-bar helper shared by every long-running function."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

logger = logging.getLogger("spatialfuse")

T = TypeVar("T")


def progress(
    iterable: Iterable[T], *, show: bool, total: int | None = None, desc: str | None = None
) -> Iterator[T] | Iterable[T]:
    """Wrap ``iterable`` in a ``tqdm.auto`` bar when ``show`` is true, else return it unchanged."""
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)
