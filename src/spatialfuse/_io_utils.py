"""Writing outputs atomically: a temporary file in the destination folder, then a rename.

While a journal is active (:func:`journaling`, set by the pipeline for its output folder), every
temporary is reported to it *before* it is created, and every output once it is complete, just
before the rename that puts it in place (so a kill between the two cannot leave an output the
journal does not know). A later run can then delete exactly what a killed run left behind and
nothing else (:mod:`spatialfuse.workflow._journal`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

#: Called with ``("tmp", path)`` before a temporary is created and ``("out", path)`` when the
#: output is complete, before it is renamed into place; None when no journal is active.
_JOURNAL: contextvars.ContextVar[Callable[[str, Path], None] | None] = contextvars.ContextVar(
    "spatialfuse_journal", default=None
)

#: Tries at a fresh random name before giving up (a collision of 64 random bits is not expected).
_NAME_TRIES = 100

#: Longest file name (bytes) that ext4, XFS, APFS and NTFS accept.
_NAME_MAX = 255


@contextlib.contextmanager
def journaling(record: Callable[[str, Path], None]) -> Iterator[None]:
    """Report every atomic write of this context (thread or task) to ``record`` within the block."""
    token = _JOURNAL.set(record)
    try:
        yield
    finally:
        _JOURNAL.reset(token)


def _report(kind: str, path: Path) -> None:
    record = _JOURNAL.get()
    if record is not None:
        record(kind, path)


def _new_temporary(parent: Path, name: str, suffix: str, create: Callable[[Path], None]) -> Path:
    """Create ``parent/.<name>.<random><suffix>`` with ``create`` (which must fail if it exists).

    ``name`` is shortened where needed so that the temporary's name fits the 255 bytes most file
    systems allow: an output whose own name is long must not fail on its temporary's.
    """
    room = _NAME_MAX - len(os.fsencode(suffix)) - 18  # the dots and 16 random hex digits
    raw = os.fsencode(name)
    if len(raw) > room:
        name = os.fsdecode(raw[: max(room, 1)])
    for _ in range(_NAME_TRIES):
        tmp = parent / f".{name}.{secrets.token_hex(8)}{suffix}"
        _report("tmp", tmp)
        try:
            create(tmp)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{parent}: no free temporary name for {name}")  # pragma: no cover


def _create_file(path: Path) -> None:
    # Mode 0666 before the umask: the permissions of a normal new file.
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


def _create_dir(path: Path) -> None:
    os.mkdir(path, 0o700)


@contextlib.contextmanager
def temporary_dir(parent: str | os.PathLike, name: str) -> Iterator[Path]:
    """A private hidden folder ``.<name>.<random>`` in ``parent`` for the block, then deleted.

    Like the temporaries of the atomic writers, it is reported to the active journal first.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path = _new_temporary(parent, name, "", _create_dir)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, else it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path.parent, path.name, path.suffix, _create_file)
    try:
        yield tmp
        _report("out", path)
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
    workdir = _new_temporary(path.parent, path.name, "", _create_dir)
    try:
        target = workdir / path.name
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written at {target}")
        _report("out", path)
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{path} appeared while it was being written")
            aside = workdir / f"{path.name}.old"
            os.replace(path, aside)
        os.replace(target, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def encodable_path(path: str | os.PathLike) -> Iterator[Path]:
    """``path`` (a new entry to create), or a UTF-8 alias of it where its name is not UTF-8.

    Some libraries (pyarrow, used by SpatialData's writer) encode a path as UTF-8 and fail on a
    file name that is not. The alias is a symbolic link to ``path``'s (existing) folder, in a
    private temporary folder removed after the block; what the block creates through it lands
    beside ``path`` and is renamed to ``path`` when the block ends without an error.
    """
    path = Path(path)
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield path
        return
    import tempfile

    inner = f".utf8-{secrets.token_hex(8)}"
    try:
        with tempfile.TemporaryDirectory(prefix="spatialfuse-alias-") as alias_dir:
            alias = Path(alias_dir) / "folder"
            os.symlink(os.path.abspath(path.parent), alias)
            yield alias / inner
        os.replace(path.parent / inner, path)
    finally:
        if (path.parent / inner).exists():
            shutil.rmtree(path.parent / inner, ignore_errors=True)
