"""One run per output folder: an exclusive lock that a killed run can never leave stuck.

The lock is an advisory ``flock`` on ``.spatialfuse.lock`` in the output folder. The operating
system releases it when its holder exits, however it exits (``SIGKILL``, a crash, a full disk), so
there is no stale lock to detect or take over, and an empty or damaged lock file (a run killed
between creating and writing it) blocks nothing. The file's content (process id and host) only
names the holder in the error message.

The holder removes the file while still holding the lock. A process that opened the old file just
before that then holds a lock on a file that no longer has a name; it notices (the path no longer
leads to the inode it locked) and tries again, so two processes never hold the folder's lock at
once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from spatialfuse.errors import OutputFolderError, OutputLockedError

LOCK_NAME = ".spatialfuse.lock"

#: How often a lock file replaced under us (a holder releasing at that moment) is retried.
_ATTEMPTS = 20


def _holder(fd: int) -> dict | None:
    """The holder named in the open lock file, or None where it names none (empty, damaged)."""
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _same_file(fd: int, lock: Path) -> bool:
    """Whether ``lock`` still names the file open as ``fd``."""
    try:
        named = os.stat(lock, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def _acquire(lock: Path, folder: Path) -> int:
    """Open and lock ``lock``; return its descriptor or raise :class:`OutputLockedError`."""
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OutputLockedError(
                f"{folder}: cannot open the output folder's lock {lock}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            who = "another run"
            if holder and "pid" in holder:
                who = f"process {holder['pid']} on {holder.get('host', 'an unknown host')}"
            raise OutputLockedError(
                f"{folder}: {who} is writing to this output folder; wait for it to finish or "
                "choose another output folder"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise OutputLockedError(
                f"{folder}: cannot lock {lock} ({exc.strerror}); the file system may not support "
                "locks: choose an output folder on a local disk"
            ) from None
        if _same_file(fd, lock):
            return fd
        os.close(fd)  # the holder removed the file between our open and our lock: again
    raise OutputLockedError(f"{folder}: could not take the output folder's lock {lock}")


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock for the duration of the block.

    A folder locked by a live run makes this raise :class:`~spatialfuse.errors.OutputLockedError`
    at once (no waiting). A lock file left by a run that no longer exists, empty or not, is
    simply locked again.

    Parameters
    ----------
    folder
        The output folder (created if missing).

    Yields
    ------
    Path
        The lock file.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputFolderError(
            folder, "is a file, or lies under one, not a folder; choose a folder for the outputs"
        ) from None
    lock = folder / LOCK_NAME
    fd = _acquire(lock, folder)
    try:
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode("utf-8")
        with contextlib.suppress(OSError):  # the name is for messages only: a full disk is fine
            os.ftruncate(fd, 0)
            os.pwrite(fd, me, 0)
        yield lock
    finally:
        # Remove the name while still holding the lock (see the module docstring), then release.
        with contextlib.suppress(OSError):
            if _same_file(fd, lock):
                lock.unlink()
        os.close(fd)
