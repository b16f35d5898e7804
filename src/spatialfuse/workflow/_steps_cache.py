"""Reusing finished pipeline steps: each step's result is stored under a key of everything it used.

A key hashes the step's name, its settings, the identity of the input files it read
(:func:`spatialfuse._cache.file_fingerprint`: path, size, times, inode, edge hashes), the keys of
the steps it builds on and the spatialfuse version. Re-running with unchanged inputs and settings
finds the same key and loads the stored result; a changed input or setting changes the key of
that step and of everything downstream, so nothing stale is reused. Entries are written
atomically into ``<output>/.cache/``; a half-written entry never exists under its final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spatialfuse._cache import cache_key, file_fingerprint
from spatialfuse._version import __version__


def input_fingerprint(path: str | os.PathLike) -> str:
    """Fingerprint of an input file, or of every file inside an input folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return "\n".join(file_fingerprint(p) for p in files)
    if path.suffix.lower() == ".imzml":
        ibd = path.with_suffix(".ibd")
        parts = [file_fingerprint(path)]
        if ibd.is_file():
            parts.append(file_fingerprint(ibd))
        return "\n".join(parts)
    return file_fingerprint(path)


def step_key(step: str, settings: Any, *, inputs: Iterable[str] = (), upstream: Iterable[str] = ()):
    """The key of a step run with ``settings`` on ``inputs`` (fingerprints) after ``upstream``."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return cache_key(step, __version__, text, *inputs, "--upstream--", *upstream)


class StepCache:
    """Stored step results under ``folder``, one file (or folder) per step and key.

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

    def path(self, step: str, key: str, suffix: str) -> Path:
        """Where the entry of ``step`` with ``key`` lives."""
        return self.folder / f"{step}-{key}{suffix}"

    def lookup(self, step: str, key: str, suffix: str) -> Path | None:
        """The stored entry, or None when there is none (or the cache is disabled)."""
        path = self.path(step, key, suffix)
        if self.enabled and path.exists():
            self.reused.append(step)
            return path
        return None

    def stored(self, step: str) -> None:
        """Record that ``step`` was computed (for the run summary)."""
        self.computed.append(step)
