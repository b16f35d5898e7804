"""Writing outputs atomically: a temporary file in the destination folder, then a rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    # mkstemp creates the file private (0600); outputs get the permissions of a normal new file.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """``fig.savefig`` through :func:`atomic_path` (format from the extension)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh path to build a folder at; on success it becomes ``path``, else it vanishes.

    For folders and zarr stores what :func:`atomic_path` is for files. The yielded path does not
    exist yet (writers such as ``SpatialData.write`` insist on that); it lies in a private
    temporary folder ``.<name>.<random>`` in the destination's parent, on the same file system,
    so the final rename is atomic. Nothing appears under ``path`` before the folder is complete:
    an interrupted write never leaves a half-written folder under the final name (only the hidden
    temporary folder, removed on any Python exception).

    An existing ``path`` raises :class:`FileExistsError` before anything is written, unless
    ``overwrite``: then the old entry is renamed aside once the new folder is complete, the new
    one renamed into place and the old one deleted. Between those two renames (microseconds)
    ``path`` does not exist; it never holds a mixture of the two.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        target = workdir / path.name
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written at {target}")
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{path} appeared while it was being written")
            aside = workdir / f"{path.name}.old"
            os.replace(path, aside)
        os.replace(target, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
