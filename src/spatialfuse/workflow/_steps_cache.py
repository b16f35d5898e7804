"""Reusing finished pipeline steps: each step's result is stored under a key of everything it used.

A key hashes the step's name, its settings, the identity of every file the step's readers open
(:func:`spatialfuse.io.input_files` lists them with the readers' own resolution, so an ``.IBD``
in upper case or the ``.imzML`` of a config that names the ``.ibd`` count;
:func:`spatialfuse._cache.file_fingerprint`: path, size, times, inode, edge hashes), the keys of
the steps it builds on and the spatialfuse version. Re-running with unchanged inputs and settings
finds the same key and loads the stored result; a changed input or setting changes the key of
that step and of everything downstream, so nothing stale is reused.

Entries are written atomically into ``<output>/.cache/``, each with a seal beside it
(``<entry>.sha256``: its size and SHA-256, written after the entry). An entry is used only when
its seal exists and matches its bytes and it loads; a missing seal (a kill between the two
writes), a truncated, garbled or swapped entry, or one that fails to load is a miss: it is
deleted and the step recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from spatialfuse._cache import cache_key, cached, file_fingerprint
from spatialfuse._io_utils import atomic_path
from spatialfuse._logging import logger
from spatialfuse._version import __version__

T = TypeVar("T")


def input_fingerprint(
    path: str | os.PathLike, kind: str | None = None, *, counts_file: str | None = None
) -> str:
    """Fingerprint of every file a reader opens for an input.

    Parameters
    ----------
    path
        The input as the config names it.
    kind
        The modality kind (``"imzml"``, ``"histology"``, ``"visium"``): the files are those
        :func:`spatialfuse.io.input_files` lists, found by the readers' own resolution (an
        ``.imzML`` named by its ``.ibd``, an ``.IBD`` in upper case, a Visium folder's images and
        matrix). None: the file itself, or every file inside a folder (landmarks).
    counts_file
        ``visium``: the count matrix the reader is given (None: its default).

    Returns
    -------
    str
        One :func:`spatialfuse._cache.file_fingerprint` per file, one per line.
    """
    if kind is not None:
        from spatialfuse.io import input_files

        files = input_files(path, kind, counts_file=counts_file)
        return "\n".join(file_fingerprint(p) for p in files)
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return "\n".join(file_fingerprint(p) for p in files)
    return file_fingerprint(path)


def step_key(step: str, settings: Any, *, inputs: Iterable[str] = (), upstream: Iterable[str] = ()):
    """The key of a step run with ``settings`` on ``inputs`` (fingerprints) after ``upstream``."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return cache_key(step, __version__, text, *inputs, "--upstream--", *upstream)


SEAL_SUFFIX = ".sha256"


class StepCache:
    """Stored step results under ``folder``, one file per step and key, each sealed by its hash.

    Parameters
    ----------
    folder
        Where entries live (the pipeline uses ``<output>/.cache``).
    enabled
        When false, nothing is looked up (every step recomputes) but results are still stored.
    """

    def __init__(self, folder: str | os.PathLike, *, enabled: bool = True):
        self.folder = Path(folder)
        self.enabled = enabled
        self.reused: list[str] = []
        self.computed: list[str] = []
        self.damaged: list[str] = []

    def path(self, step: str, key: str, suffix: str) -> Path:
        """Where the entry of ``step`` with ``key`` lives."""
        return self.folder / f"{step}-{key}{suffix}"

    @staticmethod
    def intact_file(path: Path) -> bool:
        """Whether the entry at ``path`` exists and matches its seal (size and SHA-256)."""
        seal = path.with_name(path.name + SEAL_SUFFIX)
        try:
            expected = seal.read_text(encoding="ascii").split()
            size, digest = int(expected[0]), expected[1]
            if path.stat().st_size != size:
                return False
            return _sha256(path) == digest
        except (OSError, ValueError, IndexError, UnicodeDecodeError):
            return False

    def load(self, step: str, key: str, suffix: str, loader: Callable[[Path], T]) -> T | None:
        """The stored result of ``step``, loaded by ``loader``; None on a miss.

        A missing entry is a miss; so is a damaged one (no seal, a seal that does not match, or
        ``loader`` raising): it is removed, recorded in :attr:`damaged` and logged, and the
        caller recomputes. Nothing is looked up when the cache is disabled.
        """
        if not self.enabled:
            return None
        path = self.path(step, key, suffix)
        if not os.path.lexists(path):
            return None
        problem = None
        if not self.intact_file(path):
            problem = "its content does not match the hash stored with it"
        else:
            try:
                value = loader(path)
            except Exception as exc:  # a damaged entry is a miss, never an error
                problem = f"it cannot be loaded ({type(exc).__name__}: {exc})"
        if problem is not None:
            logger.warning("cache entry %s is damaged (%s); recomputing %s", path, problem, step)
            self.damaged.append(step)
            self.discard(path)
            return None
        self.reused.append(step)
        return value

    def discard(self, path: Path) -> None:
        """Remove an entry and its seal (both are the cache's own; a folder there is left alone)."""
        for p in (path, path.with_name(path.name + SEAL_SUFFIX)):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                p.unlink()

    @contextlib.contextmanager
    def store(self, step: str, key: str, suffix: str) -> Iterator[Path]:
        """Write an entry: yields a temporary path to write; then moves it in place and seals it."""
        path = self.path(step, key, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        seal = path.with_name(path.name + SEAL_SUFFIX)
        if path.is_dir() or seal.is_dir():
            # Not a file the cache wrote: left alone, and this result is not cached.
            logger.warning("cache entry %s is blocked by a folder; %s is not cached", path, step)
            with tempfile.TemporaryDirectory() as scratch:
                yield Path(scratch) / path.name
            return
        self.discard(path)  # an old seal never vouches for a new entry
        with atomic_path(path) as tmp:
            yield tmp
        text = f"{path.stat().st_size} {_sha256(path)}\n"
        with atomic_path(seal) as tmp:
            tmp.write_text(text, encoding="ascii")

    def stored(self, step: str) -> None:
        """Record that ``step`` was computed (for the run summary)."""
        self.computed.append(step)

    def cached(
        self,
        step: str,
        key: str,
        suffix: str,
        *,
        compute: Callable[[], T],
        load: Callable[[Path], T],
        save: Callable[[T, Path], None],
    ) -> tuple[T, bool]:
        """The result of ``step``: the stored one where intact, else computed and stored.

        The one way a step uses the cache: :meth:`load` the entry (``load`` reads it from its
        path), and on a miss ``compute`` the result, write it with ``save(result, path)`` through
        :meth:`store` (atomic, then sealed) and record it with :meth:`stored`.

        Parameters
        ----------
        step, key, suffix
            The entry: the step's name, its :func:`step_key` and the file ending.
        compute
            Computes the result (called only on a miss).
        load
            Reads a stored entry; raising makes the entry a damaged miss.
        save
            Writes a computed result to the temporary path it is given.

        Returns
        -------
        tuple
            ``(result, reused)``: ``reused`` is True when it came from the cache.
        """

        def store(value: T) -> None:
            with self.store(step, key, suffix) as tmp:
                save(value, tmp)
            self.stored(step)

        return cached(lambda: self.load(step, key, suffix, load), compute, store)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
