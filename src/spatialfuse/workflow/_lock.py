"""One run per output folder: an exclusive lock file that a crashed run does not leave stuck."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from spatialfuse.errors import OutputLockedError

LOCK_NAME = ".spatialfuse.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock for the duration of the block.

    The lock file is created with ``O_EXCL``, so two runs cannot both take it. A lock left by a
    process that no longer exists on this host (a killed run) is taken over; a live holder makes
    this raise :class:`~spatialfuse.errors.OutputLockedError` at once (no waiting).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            stale = (
                holder is not None
                and holder.get("host") == me["host"]
                and isinstance(holder.get("pid"), int)
                and not _alive(holder["pid"])
            )
            if not stale:
                who = f"process {holder['pid']} on {holder['host']}" if holder else "another run"
                raise OutputLockedError(
                    f"{folder}: {who} is writing to this output folder; wait for it to finish, "
                    f"choose another output folder, or delete {lock} if no run is active"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(me, handle)
        break
    else:  # pragma: no cover - another process raced us twice for a stale lock
        raise OutputLockedError(f"{folder}: could not take the output folder's lock")
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
