"""The hidden ``.<store>.partial-<hex>`` folder a conversion writes into, and its leftovers.

A conversion builds its store in a hidden folder (the store itself is its ``store`` subfolder) and
renames the store into place when complete. A
conversion that is killed (``SIGKILL``, out of memory, a reboot) cannot remove that folder, which
can hold gigabytes. Each partial folder therefore holds a marker file, :data:`MARKER`, naming the
conversion, and its writer holds an ``flock`` on the marker for as long as it runs; the operating
system releases the lock when the writer exits, however it exits. A later conversion into the same
folder removes every partial folder that is provably a conversion's and provably abandoned: the
name pattern, a real folder (not a link), the marker with the expected content, and a lock that
can be taken. Anything else is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import uuid
from pathlib import Path

from spatialfuse._logging import logger

#: The marker file in a partial folder, beside the store being written.
MARKER = ".spatialfuse-convert-partial"

_FORMAT = "spatialfuse-convert-partial"
_NAME = re.compile(r"^\..+\.partial-[0-9a-f]{8}$")


def create_partial(output: Path) -> tuple[Path, int]:
    """Create the partial folder of ``output`` with its marker, locked; return it and the lock.

    Returns
    -------
    tuple of (Path, int)
        The new folder and the open, locked descriptor of its marker (pass it to
        :func:`seal_partial` once the store is published or abandoned).
    """
    for _ in range(100):
        tmp = output.parent / f".{output.name}.partial-{uuid.uuid4().hex[:8]}"
        try:
            os.mkdir(tmp)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(f"{output.parent}: no free name for a partial store")
    fd = os.open(tmp / MARKER, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps({"format": _FORMAT, "output": output.name}).encode("utf-8"))
    return tmp, fd


def seal_partial(tmp: Path, fd: int) -> None:
    """Remove the marker of a partial folder and release its lock (the folder is then removed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp / MARKER)
    os.close(fd)


def _abandoned(folder: Path) -> bool:
    """Whether ``folder`` is a partial folder of a conversion that no longer runs."""
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            return False
        fd = os.open(folder / MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            content = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        except (ValueError, OSError):
            return False
        if not isinstance(content, dict) or content.get("format") != _FORMAT:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live conversion holds it
        return True
    finally:
        os.close(fd)


def remove_abandoned_partials(parent: Path) -> list[Path]:
    """Remove the partial folders in ``parent`` that killed conversions left; return them."""
    removed: list[Path] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if _NAME.match(name) and _abandoned(parent / name):
            shutil.rmtree(parent / name, ignore_errors=True)
            logger.info("removed %s, left by a conversion that was killed", parent / name)
            removed.append(parent / name)
    return removed
