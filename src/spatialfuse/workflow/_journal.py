"""What spatialfuse wrote in a folder, so that it deletes and overwrites only its own files.

``<folder>/.spatialfuse-journal`` is append-only, one JSON object per line:

* ``{"tmp": "<path relative to the folder>"}``, written *before* an atomic write creates its
  temporary (:func:`spatialfuse._io_utils.atomic_path`, ``atomic_dir``);
* ``{"out": "<relative path>"}``, written once an output is complete, just before the rename
  that puts it in place (a kill between the two leaves the old file or none, never an output
  the journal does not list).

A run holding the folder's lock deletes exactly the temporaries listed that still exist (what a
killed run left behind) and nothing else, then compacts the journal to its outputs. Anything in
the folder that is not a listed output, the lock, the journal or the step cache (``.cache/``) is
the user's: a run refuses such a folder unless forced, and never deletes those files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from spatialfuse._io_utils import _create_file, _new_temporary, journaling
from spatialfuse._logging import logger
from spatialfuse.errors import FileFormatError, OutputFolderError

JOURNAL_NAME = ".spatialfuse-journal"
CACHE_NAME = ".cache"

#: How many offending paths an error names.
SHOWN = 3


class Journal:
    """The journal of ``folder`` (which need not exist yet)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / JOURNAL_NAME
        #: Outputs completed while this object recorded (relative paths): this run's own.
        self.written: set[str] = set()

    # -- reading ---------------------------------------------------------------------------------

    def entries(self) -> tuple[list[str], list[str]]:
        """The temporaries and the outputs listed, in order (unreadable lines are skipped)."""
        tmps: list[str] = []
        outs: list[str] = []
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return tmps, outs
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            if not isinstance(entry, dict):
                continue
            for kind, found in (("tmp", tmps), ("out", outs)):
                value = entry.get(kind)
                if isinstance(value, str) and _safe(value):
                    found.append(value)
        return tmps, outs

    def outputs(self) -> set[str]:
        """Relative paths of the outputs listed (files or folders)."""
        return set(self.entries()[1])

    # -- writing ---------------------------------------------------------------------------------

    def record(self, kind: str, path: Path) -> None:
        """Append ``{kind: path}`` for a path inside the folder (others are not ours to track)."""
        relative = self.relative(path)
        if relative is None or relative == JOURNAL_NAME:
            return
        if kind == "out" and relative.split("/", 1)[0] == CACHE_NAME:
            return  # the step cache is the tool's as a whole
        self._append({kind: relative})
        if kind == "out":
            self.written.add(relative)

    def relative(self, path: str | os.PathLike) -> str | None:
        """``path`` relative to the folder (POSIX separators), or None when it lies outside."""
        try:
            relative = Path(path).resolve().relative_to(self.folder.resolve())
        except ValueError:
            return None
        text = relative.as_posix()
        return None if text in ("", ".") else text

    def _append(self, entry: dict) -> None:
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode("ascii")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def active(self) -> Iterator[Journal]:
        """Report every atomic write of this block to the journal."""
        with journaling(self.record):
            yield self

    # -- cleaning --------------------------------------------------------------------------------

    def remove_temporaries(self) -> list[Path]:
        """Delete the listed temporaries that still exist, then keep only existing outputs.

        Call only while holding the folder's lock (no live writer owns them). Returns what was
        deleted.
        """
        tmps, outs = self.entries()
        removed = []
        for relative in dict.fromkeys(tmps):
            path = self.folder / relative
            if not os.path.lexists(path):
                continue
            logger.info("removing %s, left by an interrupted run", path)
            _remove(path)
            removed.append(path)
        self._compact([o for o in dict.fromkeys(outs) if os.path.lexists(self.folder / o)])
        return removed

    def _compact(self, outs: list[str]) -> None:
        """Replace the journal atomically by one line per output in ``outs`` (none: delete it)."""
        if not outs:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        text = "".join(json.dumps({"out": o}, ensure_ascii=True) + "\n" for o in outs)
        # Listed in the old journal first: a kill before the rename leaves a removable file.
        with journaling(self.record):
            tmp = _new_temporary(self.folder, JOURNAL_NAME.lstrip("."), "", _create_file)
        try:
            with open(tmp, "w", encoding="ascii") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def remove_stale(self, keep: Iterable[str] = ()) -> list[str]:
        """Delete the outputs an earlier run wrote that this run did not: they are stale.

        A run that stops at a failed registration, or has an output switched off, does not
        rewrite ``joint.h5ad``, ``spatialdata.zarr``, transforms, ...; left beside the new
        ``summary.json`` they would pass for its results (a script reading ``joint.h5ad`` cannot
        tell). Marking them stale only in the summary leaves that trap, so they are removed
        instead. Only paths the journal lists as outputs are candidates (never the user's files,
        the cache, the lock or the journal); those in :attr:`written`, in ``keep`` (what the run
        is still going to write), or lying inside or around one of them stay. Empty folders are
        left. Call only while holding the folder's lock, at the end of a run.

        Returns
        -------
        list of str
            The relative paths removed, sorted.
        """
        from spatialfuse.workflow._lock import LOCK_NAME

        current = set(self.written) | set(keep)
        removed = []
        for relative in sorted(set(self.entries()[1])):
            if relative in current or relative in (LOCK_NAME, JOURNAL_NAME):
                continue
            if relative.split("/", 1)[0] == CACHE_NAME:
                continue
            if any(_nested(relative, c) for c in current):
                continue
            path = self.folder / relative
            if not os.path.lexists(path):
                continue
            logger.info(
                "removing %s, an output of an earlier run that this run did not write", path
            )
            _remove(path)
            removed.append(relative)
        return removed

    # -- checking --------------------------------------------------------------------------------

    def foreign(self, limit: int = SHOWN + 1) -> list[str]:
        """Up to ``limit`` relative paths in the folder that spatialfuse did not write.

        Everything but the listed outputs (and what lies inside listed folders), the lock, the
        journal and ``.cache/`` counts; empty folders do not. Symbolic links are not followed.
        """
        from spatialfuse.workflow._lock import LOCK_NAME

        if not self.folder.is_dir():
            return []
        tmps, outs = self.entries()
        own = set(outs) | set(tmps) | {LOCK_NAME, JOURNAL_NAME, CACHE_NAME}
        found: list[str] = []
        for here, dirs, files in os.walk(self.folder):
            base = Path(here).relative_to(self.folder)
            descend = []
            for name in sorted(dirs):
                relative = (base / name).as_posix()
                if relative in own:
                    continue
                if os.path.islink(os.path.join(here, name)):
                    found.append(relative)
                else:
                    descend.append(name)
            dirs[:] = descend
            found += [r for r in ((base / n).as_posix() for n in sorted(files)) if r not in own]
            if len(found) >= limit:
                break
        return found[:limit]


def _safe(relative: str) -> bool:
    """A journal entry that names something strictly inside the folder."""
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts


def _nested(a: str, b: str) -> bool:
    """Whether one relative path lies inside the other."""
    return a.startswith(b + "/") or b.startswith(a + "/")


def _names(paths: Iterable[str | os.PathLike]) -> str:
    shown = [os.fspath(p) for p in paths]
    more = ", …" if len(shown) > SHOWN else ""
    return ", ".join(shown[:SHOWN]) + more


def _resolved(path: Path, what: str) -> Path:
    """``path.resolve()``; a symbolic link loop is a :class:`FileFormatError` naming it."""
    try:
        return path.resolve()
    except RuntimeError:  # Python < 3.13 raises RuntimeError on a loop
        raise FileFormatError(path, f"the {what} is a symbolic link loop") from None
    except OSError as exc:  # Python ≥ 3.13 raises OSError (ELOOP)
        raise FileFormatError(path, f"the {what} cannot be resolved ({exc})") from None


def check_output_folder(
    folder: str | os.PathLike,
    inputs: dict[str, Path],
    *,
    force: bool = False,
) -> None:
    """Refuse an output folder that overlaps an input (before anything is created there).

    ``inputs`` maps a description (``modality 'msi'``) to an input path. An output folder that is
    an input, or lies inside an input folder, is refused always: inputs are never written to. One
    that contains an input is refused unless ``force``.

    Raises
    ------
    OutputFolderError
        The folder overlaps an input.
    """
    out = _resolved(Path(folder), "output folder")
    inside, containing = [], []
    for what, path in inputs.items():
        source = _resolved(Path(path), f"input ({what})")
        if out == source or source in out.parents:
            inside.append(f"{source} ({what})")
        elif out in source.parents:
            containing.append(f"{source} ({what})")
    if inside:
        raise OutputFolderError(
            folder,
            f"the output folder is, or lies inside, an input: {_names(inside)}. spatialfuse "
            "never writes into its inputs; choose another output folder",
            inside[:SHOWN],
        )
    if containing and not force:
        raise OutputFolderError(
            folder,
            f"the output folder contains inputs: {_names(containing)}. Choose another output "
            "folder, or pass --force (force=True) to write there anyway (spatialfuse never "
            "deletes files it did not write)",
            containing[:SHOWN],
        )


def check_foreign(journal: Journal, *, force: bool = False) -> None:
    """Refuse an output folder that holds files spatialfuse did not write, unless ``force``.

    Raises
    ------
    OutputFolderError
        The folder holds such files (up to three are named).
    """
    if force:
        return
    found = journal.foreign()
    if found:
        raise OutputFolderError(
            journal.folder,
            f"the output folder holds files spatialfuse did not write: {_names(found)}. Choose "
            "another (new or empty) output folder, or pass --force (force=True) to write there "
            "anyway: those files are kept, but any at a path the run writes is replaced",
            found[:SHOWN],
        )


def _remove(path: Path) -> None:
    """Delete a file, a link (never what it points to) or a folder tree; gone already is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
