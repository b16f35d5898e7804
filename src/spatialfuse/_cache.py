"""An on-disk cache for derived data (such as imzML offset tables), keyed on the inputs' identity.

Entries live under ``$SPATIALFUSE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/spatialfuse`` or
``~/.cache/spatialfuse``), never next to the inputs, which are never modified. A key covers each
input's absolute path, size, modification and status-change times, inode and a hash of its first
and last 64 KiB, so an edited file is never served a stale entry. Writes are atomic; a cache that
cannot be written is skipped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from spatialfuse._limits import require_regular_file
from spatialfuse._logging import logger

_EDGE = 1 << 16

T = TypeVar("T")


def cached(
    lookup: Callable[[], T | None], compute: Callable[[], T], store: Callable[[T], None]
) -> tuple[T, bool]:
    """The one way spatialfuse uses a cache: look up, else compute and store.

    ``lookup`` returns the stored value or None (a miss, also for a damaged entry); on a miss
    ``compute`` makes the value and ``store`` keeps it. Used for the imzML offset tables here and
    for the pipeline's steps (``workflow/_steps_cache.py``).

    Returns
    -------
    tuple
        ``(value, reused)``: ``reused`` is True when the value came from the cache.
    """
    value = lookup()
    if value is not None:
        return value, True
    value = compute()
    store(value)
    return value, False


def cache_dir() -> Path:
    """The root folder of spatialfuse's caches."""
    env = os.environ.get("SPATIALFUSE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spatialfuse"


def file_fingerprint(path: Path) -> str:
    """A string that changes whenever ``path``'s content plausibly changes.

    Raises
    ------
    FileFormatError
        ``path`` is a FIFO, device or folder (opening a FIFO would wait forever for a writer):
        cache keys are computed before any reader refuses such a path.
    """
    require_regular_file(path, "input file")
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_EDGE))
        if stat.st_size > _EDGE:
            handle.seek(max(_EDGE, stat.st_size - _EDGE))
            digest.update(handle.read(_EDGE))
    # The inode and ctime catch an edit in the middle of a large file whose size and mtime were
    # restored (os.utime can set mtime, never ctime); the edges' hash catches copies over it.
    return (
        f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|{stat.st_ctime_ns}|"
        f"{digest.hexdigest()}"
    )


def cache_key(*parts: str) -> str:
    """Hash ``parts`` into a file-name-safe key.

    Paths whose names are not UTF-8 (decoded by Python with surrogate escapes) hash by their bytes.
    """
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:40]


def load_npz(namespace: str, key: str) -> dict | None:
    """Return the arrays stored under ``key``, or None."""
    import numpy as np

    path = cache_dir() / namespace / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        # Our own handle: np.load leaks its file when the archive is damaged.
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except Exception as exc:  # a damaged entry is a miss, never an error
        logger.debug("ignoring unreadable cache entry %s: %s", path, exc)
        return None


def save_npz(namespace: str, key: str, arrays: dict) -> None:
    """Store ``arrays`` under ``key`` atomically; failures are logged and ignored."""
    import numpy as np

    from spatialfuse._io_utils import atomic_path

    folder = cache_dir() / namespace
    try:
        with atomic_path(folder / f"{key}.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    except OSError as exc:
        logger.debug("could not write cache entry in %s: %s", folder, exc)
